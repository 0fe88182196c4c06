"""The seed's two routes, kept byte-compatible, plus list and cancel."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import logging
from typing import Any

from fastapi import APIRouter, Query, Request

from regcast._exceptions import InvalidInput, NotFound, RegcastError, is_retryable
from regcast.api.responses import FlaskJSON, SeedJSON, error
from regcast.api.schemas import Accepted, ErrorBody, JobList, JobStatus
from regcast.api.service import Service, ServiceDep
from regcast.api.status import job_status
from regcast.config import Settings
from regcast.jobs.models import JobState
from regcast.jobs.runner import client_for, refused_endpoint
from regcast.jobs.spec import MAX_DEPTH, DistributeRequest, parse_request
from regcast.registry.client import describe

log = logging.getLogger("regcast.api")
SUBMIT_CHECK_TIMEOUT = 30.0

router = APIRouter()


@router.post(
    "/api/distribute/image",
    status_code=201,
    responses={
        201: {
            "model": Accepted,
            "description": "accepted (`warnings` only when a key was not understood)",
            "content": {
                "application/json": {
                    "example": {
                        "id": "0b7c4e1a-...",
                        "msg": "Image sync started",
                        "status": "success",
                        "warnings": ["unknown field targets.0.overwite"],
                    }
                }
            },
        },
        400: {"model": ErrorBody, "description": "bad body: `Failed to parse data: <field>: <why>`"},
        404: {
            "model": ErrorBody,
            "description": "the source said the image does not exist (`X-Regcast-Registry` names it)",
        },
        502: {"model": ErrorBody, "description": "the source refused for good (credentials, certificate)"},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "The seed's body; any optional key may be present and empty (empty means absent).",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/DistributeRequest"}}},
        }
    },
)
async def distribute(request: Request, service: ServiceDep) -> SeedJSON:
    """Start copying ``source`` to every target (the seed's route).

    The body is read as JSON whatever its Content-Type, as the seed's clients send it.
    """
    parsed = _parse(await request.body(), service)
    if isinstance(parsed, SeedJSON):
        return parsed
    body, warnings = parsed
    if not service.ready.is_set():
        return error(503, "database unavailable")
    refusal = await _check_source(body, service)
    if refusal is not None:
        return refusal
    src = body.source
    targets = [(t.endpoint, t.image or src.image, t.ref or src.ref) for t in body.targets]
    # nothing to hide (no auth, no hook): no encryption now and no decryption per attempt (#17: per-job CPU)
    sealed = service.box.seal(body.sealed_auth()) if body.has_secret() else None
    job_id = await asyncio.to_thread(service.store.create, body.public(), sealed, targets)
    if service.worker is not None:
        service.worker.wake()
    log.info("job %s: queued (%s/%s:%s to %d target(s))", job_id, src.endpoint, src.image, src.ref, len(targets))
    accepted: dict[str, Any] = {"id": job_id, "msg": "Image sync started", "status": "success"}
    if warnings:
        log.warning("job %s: %s", job_id, "; ".join(warnings))
        accepted["warnings"] = warnings
    return FlaskJSON(accepted, status_code=201)  # the seed's dict answer: jsonify's layout


def _parse(raw_body: bytes, service: Service) -> tuple[DistributeRequest, list[str]] | SeedJSON:
    """The validated request and its warnings, or the 400 naming the first field that is wrong."""
    try:
        raw = json.loads(raw_body)
    except (ValueError, UnicodeDecodeError):
        return error(400, "Failed to parse data: body is not valid JSON")
    except RecursionError:
        return error(400, f"Failed to parse data: body: nested deeper than {MAX_DEPTH} levels")
    settings = service.settings
    try:
        body, warnings = parse_request(raw, strict=settings.strict_requests)
    except InvalidInput as exc:
        return error(400, f"Failed to parse data: {exc}")
    if len(body.targets) > settings.max_targets:
        return error(400, f"Failed to parse data: targets: at most {settings.max_targets} targets")
    refused = refused_endpoint(body, settings.outbound_policy())
    if refused:
        return error(400, f"Failed to parse data: {refused}")
    return body, warnings


async def _check_source(body: DistributeRequest, service: Service) -> SeedJSON | None:
    """None when the job may go ahead; the seed's 404 only when the source said it has no such image.

    A passing fault (timeout, connection, 408/429/5xx) is no verdict on the image: the job is
    accepted and the worker tries per the policy. A fault that trying again cannot fix (bad
    credentials, a refused certificate) is a 502 naming the registry.
    """
    src = body.source
    auth = src.auth.model_dump(by_alias=True) if src.auth else None
    await service.check_pools.prune()
    client = client_for(
        src.endpoint,
        auth,
        src.verify_tls,
        service.check_settings or _check_settings(service),
        read_only=True,
        allow_plain_http=src.allow_plain_http,
        pool=service.check_pools,  # a connection, ping and token kept for the next submission
    )
    try:
        # a burst of submissions of one image: the first one's "present" stands for 3 s (registry/memo.py)
        found = client.memo.recently_present(src.image, src.ref)
        if not found:
            head = client.head_manifest(src.image, src.ref)
            found = await asyncio.wait_for(head, SUBMIT_CHECK_TIMEOUT) is not None
            if found:
                client.memo.note_present(src.image, src.ref)
    except NotFound as exc:
        if "/manifests/" not in exc.url:  # /v2/ itself is missing: not a registry API, not a verdict on the image
            return error(502, f"Source registry error: {describe(exc)}")
        found = False
    except (TimeoutError, RegcastError) as exc:
        if not is_retryable(exc):
            return error(502, f"Source registry error: {describe(exc)}")
        why = describe(exc) if isinstance(exc, RegcastError) else f"registry {client.name} did not answer in time"
        log.warning("source check of %s %s:%s failed (%s); job accepted", src.endpoint, src.image, src.ref, why)
        return None
    finally:
        await client.close()
    if found:
        return None
    log.info("source %s has no %s:%s: 404", client.name, src.image, src.ref)
    response = error(404, "Image not found")  # the seed's body, byte for byte: the registry goes in a header
    response.headers["X-Regcast-Registry"] = client.name
    return response


def _submit_check(settings: Settings) -> Settings:
    """The POST's existence check answers fast: few retries, short waits (the worker retries anyway)."""
    return dataclasses.replace(
        settings,
        read_timeout=SUBMIT_CHECK_TIMEOUT,
        request_retries=2,
        request_retry_max_seconds=5.0,
        retry_after_max=2.0,
    )


def _check_settings(service: Service) -> Settings:
    service.check_settings = _submit_check(service.settings)  # once, not a settings copy per POST
    return service.check_settings


@router.get(
    "/api/distribute/image/{job_id}",
    responses={200: {"model": JobStatus}, 404: {"model": ErrorBody, "description": "unknown job id"}},
)
async def status(job_id: str, service: ServiceDep) -> SeedJSON:
    """The job's status: the seed's fields first, then per-target detail."""
    job = await asyncio.to_thread(service.store.get, job_id) if len(job_id) <= 64 else None
    if job is None:
        return error(404, "job with id not found")
    return SeedJSON(job_status(job))


@router.get("/api/distribute/image", responses={200: {"model": JobList}})
async def list_jobs(
    service: ServiceDep,
    state: JobState | None = None,
    image: str | None = Query(None, max_length=512),
    target: str | None = Query(None, max_length=2048),
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0, le=1_000_000_000),
) -> SeedJSON:
    """Jobs, newest first; filter by ``state``, ``image`` (the source or a target repository contains it),
    ``target`` (a target endpoint contains it); page with ``limit``/``offset``."""
    page, total = await asyncio.to_thread(
        functools.partial(service.store.list_jobs, state, limit, offset, image=image, target=target)
    )
    return SeedJSON({"jobs": [job_status(j) for j in page], "total": total, "limit": limit, "offset": offset})


@router.delete(
    "/api/distribute/image/{job_id}",
    responses={
        200: {"model": JobStatus, "description": "cancelled (it was queued)"},
        202: {"model": JobStatus, "description": "cancel requested: its worker stops it"},
        404: {"model": ErrorBody, "description": "unknown job id"},
        409: {"model": ErrorBody, "description": "job already ended"},
    },
)
async def cancel(job_id: str, service: ServiceDep) -> SeedJSON:
    """Cancel a job: a queued job at once, a running one as soon as its worker notices."""
    store = service.store
    before = await asyncio.to_thread(store.get, job_id) if len(job_id) <= 64 else None
    if before is None:
        return error(404, "job with id not found")
    if store.is_final(before.state):
        return error(409, f"job already {before.state}")
    job, ended_here = await asyncio.to_thread(store.cancel_job, job_id)
    assert job is not None
    if ended_here and service.events is not None:  # ended by this call: not by a worker, nor by another DELETE
        service.events.ended_elsewhere([job.id])
    return SeedJSON(job_status(job), status_code=200 if job.state == JobState.CANCELLED else 202)
