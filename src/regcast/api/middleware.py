"""ASGI middleware: HEAD and trailing slashes as the seed answered them, the body size cap, bearer-token
authentication and the browser guard (all answer seed-style)."""

from __future__ import annotations

import hmac
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from regcast.api.dashboard import DASHBOARD_ASSETS, DASHBOARD_PAGES
from regcast.api.responses import error
from regcast.registry.reference import is_loopback

API_PREFIX = "/api/"
EVENTS_PREFIX = "/api/events/"  # registries' push notifications: signed with their own secret instead


class SeedPaths:
    """Answer as the seed's Flask did, not with FastAPI's defaults.

    HEAD is a GET without its body (Flask adds HEAD to every GET route; FastAPI answers 405), so
    ``curl -I`` and health probes work. Under ``/api/`` a trailing slash names the same route: FastAPI
    would answer a 307 to an absolute URL built from the Host, which a POST behind a proxy does not
    survive. The scope is copied, never changed: the server still knows the request was a HEAD.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        if path.startswith(API_PREFIX) and path.endswith("/"):
            raw = scope.get("raw_path") or path.encode()
            scope = {**scope, "path": path.rstrip("/"), "raw_path": raw.rstrip(b"/")}
        if scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headers_only(message: Any) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, headers_only)


class BodyLimit:
    """Refuse request bodies over the cap before reading them (413, seed-style body)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await error(413, f"Failed to parse data: body over {self.limit} bytes")(scope, receive, send)
            return
        seen = 0

        async def limited() -> Any:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _TooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await error(413, f"Failed to parse data: body over {self.limit} bytes")(scope, receive, send)


class _TooLarge(Exception):
    pass


class BearerAuth:
    """Every route but /healthz, /readyz, the dashboard's page and assets (which hold no data) and
    /api/events/ (signed with an events secret instead, ``triggers/signature.py``) needs
    ``Authorization: Bearer <one of the tokens>``; /metrics too unless REGCAST_METRICS_PUBLIC."""

    OPEN = frozenset({"/healthz", "/readyz", *DASHBOARD_PAGES})

    def __init__(self, app: ASGIApp, tokens: tuple[str, ...], open_paths: frozenset[str] = frozenset()) -> None:
        self.app = app
        self.tokens = tuple(t.encode() for t in tokens)
        self.open = self.OPEN | open_paths

    def allowed(self, header: bytes) -> bool:
        scheme, _, given = header.partition(b" ")
        if scheme.lower() != b"bearer" or not given:
            return False
        ok = False
        for token in self.tokens:  # no early exit: every token is compared, in constant time
            ok |= hmac.compare_digest(token, given.strip())
        return ok

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path in self.open or path.startswith((DASHBOARD_ASSETS, EVENTS_PREFIX)):
            await self.app(scope, receive, send)
            return
        header = dict(scope.get("headers") or []).get(b"authorization", b"")
        if not self.allowed(header):
            response = error(401, "unauthorized: send Authorization: Bearer <token>")
            response.headers["WWW-Authenticate"] = 'Bearer realm="regcast"'
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


class BrowserGuard:
    """CSRF and DNS-rebinding defence for a service browsers can reach.

    A request carrying an ``Origin`` (browsers send it on every cross-site POST, whatever the
    Content-Type) must come from the service's own origin or ``REGCAST_ALLOWED_ORIGINS``. Without
    API tokens, the ``Host`` must be a loopback name or address, the listening address, or one of
    ``REGCAST_ALLOWED_HOSTS`` (a rebinding page reaches us under its own name). ``curl`` sends no
    Origin and an IP Host, so it keeps working.
    """

    def __init__(self, app: ASGIApp, allowed_origins: tuple[str, ...], allowed_hosts: tuple[str, ...] | None) -> None:
        self.app = app
        self.origins = frozenset(o.rstrip("/").lower() for o in allowed_origins)
        self.hosts = None if allowed_hosts is None else frozenset(h.lower() for h in allowed_hosts)

    def _host_ok(self, host: str) -> bool:
        if self.hosts is None or not host:
            return True
        if host in self.hosts or is_loopback(host):
            return True
        bare = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return bare in self.hosts

    def refusal(self, headers: dict[bytes, bytes]) -> str | None:
        host = headers.get(b"host", b"").decode("latin-1").strip().lower()
        if not self._host_ok(host):
            return "forbidden: Host not allowed (a loopback name, or one listed in REGCAST_ALLOWED_HOSTS)"
        origin = headers.get(b"origin")
        if origin is None:
            return None
        value = origin.decode("latin-1").strip().rstrip("/").lower()
        if value in self.origins or (host and value in (f"http://{host}", f"https://{host}")):
            return None
        return "forbidden: cross-origin request (the Origin is not this service; see REGCAST_ALLOWED_ORIGINS)"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            why = self.refusal(dict(scope.get("headers") or []))
            if why:
                await error(403, why)(scope, receive, send)
                return
        await self.app(scope, receive, send)
