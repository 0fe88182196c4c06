"""Operators' routes: ``GET /metrics`` (Prometheus) and ``POST /api/distribute/image/<id>/retry``."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import Response

from regcast.api.responses import SeedJSON, error
from regcast.api.service import ServiceDep
from regcast.api.status import job_status
from regcast.ops.metrics import CONTENT_TYPE

router = APIRouter()


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"description": "Prometheus text format", "content": {CONTENT_TYPE: {}}}},
)
async def metrics(service: ServiceDep) -> Response:
    """Prometheus metrics (``regcast_*``); needs the API token unless REGCAST_METRICS_PUBLIC=true."""
    store = service.store if service.ready.is_set() else None
    return Response(await asyncio.to_thread(service.metrics.render, store), media_type=CONTENT_TYPE)


@router.post(
    "/api/distribute/image/{job_id}/retry",
    status_code=202,
    responses={404: {"description": "unknown job id"}, 409: {"description": "job not failed or cancelled"}},
)
async def retry(service: ServiceDep, job_id: str) -> SeedJSON:
    """Run a failed (or cancelled) job again: its failed targets only; finished targets are kept."""
    store = service.store
    before = await asyncio.to_thread(store.get, job_id) if len(job_id) <= 64 else None
    if before is None:
        return error(404, "job with id not found")
    job = await asyncio.to_thread(store.retry_failed, job_id)
    if job is None:
        return error(409, f"job is {before.state}: only FAILED or CANCELLED jobs can be retried")
    if service.worker is not None:
        service.worker.wake()
    return SeedJSON(job_status(job), status_code=202)
