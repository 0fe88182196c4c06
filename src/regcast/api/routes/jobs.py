"""The seed's two routes, kept byte-compatible, plus list and cancel."""

from __future__ import annotations

import asyncio
import json
import logging

from fastapi import APIRouter, Query, Request
from pydantic import ValidationError

from regcast._exceptions import NotFound, RegcastError
from regcast.api.responses import SeedJSON, error
from regcast.api.service import Service, ServiceDep
from regcast.api.status import job_status
from regcast.jobs.models import JobState
from regcast.jobs.runner import client_for, refused_endpoint
from regcast.jobs.spec import DistributeRequest, describe_validation
from regcast.registry.client import describe

log = logging.getLogger("regcast.api")
SUBMIT_CHECK_TIMEOUT = 30.0

router = APIRouter()


@router.post(
    "/api/distribute/image",
    status_code=201,
    responses={
        201: {
            "description": "accepted",
            "content": {
                "application/json": {"example": {"id": "0b7c...", "msg": "Image sync started", "status": "success"}}
            },
        },
        400: {"description": "bad body"},
        404: {"description": "source image not found"},
        413: {"description": "body too large"},
        502: {"description": "source registry failed"},
    },
)
async def distribute(request: Request, service: ServiceDep) -> SeedJSON:
    """Start copying ``source`` to every target (the seed's route).

    The body is read as JSON whatever its Content-Type, as the seed's clients send it.
    """
    body = _parse(await request.body(), service)
    if isinstance(body, SeedJSON):
        return body
    if not service.ready.is_set():
        return error(503, "database unavailable")
    refusal = await _check_source(body, service)
    if refusal is not None:
        return refusal
    src = body.source
    targets = [(t.endpoint, t.image or src.image, t.ref or src.ref) for t in body.targets]
    sealed = service.box.seal(body.sealed_auth())
    job_id = await asyncio.to_thread(service.store.create, body.public(), sealed, targets)
    if service.worker is not None:
        service.worker.wake()
    log.info("job %s: queued (%s/%s:%s to %d target(s))", job_id, src.endpoint, src.image, src.ref, len(targets))
    return SeedJSON({"id": job_id, "msg": "Image sync started", "status": "success"}, status_code=201)


def _parse(raw_body: bytes, service: Service) -> DistributeRequest | SeedJSON:
    """The validated request, or the 400 naming the first field that is wrong."""
    try:
        raw = json.loads(raw_body)
    except (ValueError, UnicodeDecodeError):
        return error(400, "Failed to parse data: body is not valid JSON")
    try:
        body = DistributeRequest.model_validate(raw)
    except ValidationError as exc:
        return error(400, f"Failed to parse data: {describe_validation(exc)}")
    settings = service.settings
    if len(body.targets) > settings.max_targets:
        return error(400, f"Failed to parse data: targets: at most {settings.max_targets} targets")
    refused = refused_endpoint(body, settings.outbound_policy())
    if refused:
        return error(400, f"Failed to parse data: {refused}")
    return body


async def _check_source(body: DistributeRequest, service: Service) -> SeedJSON | None:
    """None when the source holds the image; else the seed's 404, or a 502 naming the registry."""
    src = body.source
    auth = src.auth.model_dump(by_alias=True) if src.auth else None
    check = service.settings.model_copy(update={"read_timeout": SUBMIT_CHECK_TIMEOUT})
    client = client_for(src.endpoint, auth, src.verify_tls, check, read_only=True)
    try:
        digest = await asyncio.wait_for(client.head_manifest(src.image, src.ref), SUBMIT_CHECK_TIMEOUT)
    except NotFound:
        digest = None
    except TimeoutError:
        return error(502, f"Source registry error: registry {client.name} did not answer in time")
    except RegcastError as exc:
        return error(502, f"Source registry error: {describe(exc)}")
    finally:
        await client.close()
    return error(404, "Image not found") if digest is None else None


@router.get("/api/distribute/image/{job_id}", responses={404: {"description": "unknown job id"}})
async def status(job_id: str, service: ServiceDep) -> SeedJSON:
    """The job's status: the seed's fields first, then per-target detail."""
    job = await asyncio.to_thread(service.store.get, job_id) if len(job_id) <= 64 else None
    if job is None:
        return error(404, "job with id not found")
    return SeedJSON(job_status(job))


@router.get("/api/distribute/image")
async def list_jobs(
    service: ServiceDep,
    state: JobState | None = None,
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0, le=1_000_000_000),
) -> SeedJSON:
    """Jobs, newest first; filter by ``state``; page with ``limit``/``offset``."""
    page, total = await asyncio.to_thread(service.store.list_jobs, state.value if state else None, limit, offset)
    return SeedJSON({"jobs": [job_status(j) for j in page], "total": total, "limit": limit, "offset": offset})


@router.delete(
    "/api/distribute/image/{job_id}",
    responses={404: {"description": "unknown job id"}, 409: {"description": "job already ended"}},
)
async def cancel(job_id: str, service: ServiceDep) -> SeedJSON:
    """Cancel a job: a queued job at once, a running one as soon as its worker notices."""
    store = service.store
    before = await asyncio.to_thread(store.get, job_id) if len(job_id) <= 64 else None
    if before is None:
        return error(404, "job with id not found")
    if store.is_final(before.state):
        return error(409, f"job already {before.state}")
    job = await asyncio.to_thread(store.request_cancel, job_id)
    assert job is not None
    return SeedJSON(job_status(job), status_code=200 if job.state == JobState.CANCELLED else 202)
