"""Seed-style JSON bodies, in the two layouts the seed's Flask 1.1.2 service produced.

Its routes returned a dict for every answer but the job status, which Flask turns into
``jsonify``'s layout: compact separators, keys sorted, a newline at the end
(``{"msg":"Image not found","status":"error"}\n``): ``FlaskJSON``, for the 201 of a submit and
every error. The job status was ``json.dumps(job)`` returned as text: default separators, the
status's own key order, no newline: ``SeedJSON``, for the status and regcast's own answers.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute, Match, Route


class SeedJSON(JSONResponse):
    def render(self, content: Any) -> bytes:
        return json.dumps(content).encode()


class FlaskJSON(SeedJSON):
    """The body of a dict the seed's routes returned (Flask 1.1 ``jsonify``, not in debug mode); a ``SeedJSON``
    wherever a route may answer either."""

    def render(self, content: Any) -> bytes:
        return (json.dumps(content, separators=(",", ":"), sort_keys=True) + "\n").encode()


def error(status: int, msg: str) -> FlaskJSON:
    """The seed's error body, byte for byte: ``{"msg":...,"status":"error"}`` and a newline."""
    return FlaskJSON({"status": "error", "msg": msg}, status_code=status)


def _routes(routes: Iterable[BaseRoute]) -> Iterator[Route]:
    """Every route, those of included routers too (FastAPI keeps them behind one entry per router;
    regcast includes its routers without a prefix, so their paths are the app's)."""
    for route in routes:
        if isinstance(route, Route):
            yield route
        yield from _routes(getattr(getattr(route, "original_router", None), "routes", ()))


def _allowed(req: Request) -> str:
    """Every method of every route at this path (Starlette's ``Allow`` names the first route's only),
    with HEAD beside GET and OPTIONS, as Flask listed them."""
    methods = {"OPTIONS"}
    for route in _routes(req.app.router.routes):
        if route.methods and route.matches(req.scope)[0] is not Match.NONE:
            methods |= route.methods | ({"HEAD"} if "GET" in route.methods else set())
    return ", ".join(sorted(methods))


async def _framework_error(req: Request, exc: Exception) -> Response:
    """An unknown route or method is answered seed-style too (FastAPI's own body is ``{"detail": ...}``,
    which scripts and ``regcast status``, reading ``msg``, do not expect). OPTIONS is answered as the
    seed's Flask did on every route: 200, no body, the methods in ``Allow`` (FastAPI: 405)."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        allow = _allowed(req)
        if req.method == "OPTIONS":
            return Response(status_code=200, headers={"Allow": allow})
        response = error(405, str(exc.detail))
        response.headers.update({**(exc.headers or {}), "Allow": allow})
        return response
    response = error(exc.status_code, str(exc.detail))
    response.headers.update(exc.headers or {})
    return response


def seed_errors(app: FastAPI) -> None:
    """Framework errors (unknown route, method) answered seed-style, on ``serve`` and ``worker`` alike."""
    app.add_exception_handler(HTTPException, _framework_error)
