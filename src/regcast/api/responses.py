"""Seed-style JSON bodies: ``json.dumps`` defaults (``", "`` and ``": "``), as the seed's were."""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException


class SeedJSON(JSONResponse):
    def render(self, content: Any) -> bytes:
        return json.dumps(content).encode()


def error(status: int, msg: str) -> SeedJSON:
    """The seed's error body: ``{"status": "error", "msg": ...}``."""
    return SeedJSON({"status": "error", "msg": msg}, status_code=status)


async def _framework_error(_req: Request, exc: Exception) -> SeedJSON:
    """An unknown route or method is answered seed-style too (FastAPI's own body is ``{"detail": ...}``,
    which scripts and ``regcast status``, reading ``msg``, do not expect)."""
    assert isinstance(exc, HTTPException)
    response = error(exc.status_code, str(exc.detail))
    response.headers.update(exc.headers or {})
    return response


def seed_errors(app: FastAPI) -> None:
    """Framework errors (unknown route, method) answered seed-style, on ``serve`` and ``worker`` alike."""
    app.add_exception_handler(HTTPException, _framework_error)
