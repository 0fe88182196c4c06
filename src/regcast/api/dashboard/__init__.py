"""The dashboard at ``/``: one server-rendered page plus a little vanilla JavaScript, every asset served here.

The page and its assets hold no data, so they are open; the script reads everything through the
JSON API with the bearer token the user typed (kept in the tab's ``sessionStorage``). No CDN, no
build step: the page works offline and behind the same token rules as the API.
"""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape

from regcast import __version__

DASHBOARD_PAGES = frozenset({"/"})
DASHBOARD_ASSETS = "/ui/"
ASSET_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}


router = APIRouter(include_in_schema=False)
_env = Environment(loader=PackageLoader("regcast.api.dashboard", "templates"), autoescape=select_autoescape())
_PAGE = _env.get_template("index.html")
_ASSETS = {
    p.name: p.read_bytes()
    for p in (resources.files("regcast.api.dashboard") / "static").iterdir()
    if p.is_file() and p.name[p.name.rfind(".") :] in ASSET_TYPES
}
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@router.get("/", response_class=HTMLResponse)
async def index(request: Request) -> HTMLResponse:
    service = request.app.state.service
    html = _PAGE.render(auth=bool(service.settings.api_tokens or service.settings.api_tokens_file), version=__version__)
    return HTMLResponse(html, headers=HEADERS)


@router.get(DASHBOARD_ASSETS + "{name}")
async def asset(name: str) -> Response:
    body = _ASSETS.get(name)
    if body is None:
        return Response("not found", status_code=404, media_type="text/plain")
    return Response(body, media_type=ASSET_TYPES[_suffix(name)], headers=HEADERS)


def _suffix(name: str) -> str:
    return name[name.rfind(".") :]
