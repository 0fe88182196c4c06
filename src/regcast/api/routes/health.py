"""Liveness and readiness (open even when the API needs a token)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from sqlalchemy.exc import SQLAlchemyError

from regcast.api.responses import SeedJSON, error
from regcast.api.schemas import Ok
from regcast.api.service import ServiceDep

router = APIRouter()


@router.get("/healthz", responses={200: {"model": Ok}})
async def healthz() -> SeedJSON:
    """The process is alive."""
    return SeedJSON({"status": "ok"})


@router.get("/readyz", responses={200: {"model": Ok}, 503: {"description": "database unreachable"}})
async def readyz(service: ServiceDep) -> SeedJSON:
    """The database answers and the schema is current."""
    if not service.ready.is_set():
        return error(503, "database unavailable")
    try:
        await asyncio.wait_for(asyncio.to_thread(service.store.ping), 5.0)
    except (SQLAlchemyError, TimeoutError):
        return error(503, "database unavailable")
    return SeedJSON({"status": "ok"})
