"""Liveness and readiness (open even when the API needs a token); see ``api/probe.py``."""

from __future__ import annotations

from typing import cast

from fastapi import APIRouter, Request

from regcast.api.probe import Probe
from regcast.api.responses import SeedJSON, error
from regcast.api.schemas import Ok

router = APIRouter()


def _probe(request: Request) -> Probe:
    return cast(Probe, request.app.state.probe)


@router.get("/healthz", responses={200: {"model": Ok}, 503: {"description": "the worker loop stopped"}})
async def healthz(request: Request) -> SeedJSON:
    """The process is alive (and so is its worker loop, if it runs one)."""
    why = _probe(request).alive()
    return error(503, why) if why else SeedJSON({"status": "ok"})


@router.get(
    "/readyz",
    responses={200: {"model": Ok}, 503: {"description": "database unreachable, or this process cannot take work"}},
)
async def readyz(request: Request) -> SeedJSON:
    """The database answers (within 1 s) and this process can take work."""
    why = await _probe(request).ready()
    return error(503, why) if why else SeedJSON({"status": "ok"})
