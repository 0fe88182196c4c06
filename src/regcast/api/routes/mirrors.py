"""Mirror sets in the service: store (YAML or JSON), list, show, delete, run now, runs, plan."""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Any

from fastapi import APIRouter, Query, Request

from regcast._exceptions import InvalidInput
from regcast.api.responses import SeedJSON, error
from regcast.api.service import Service, ServiceDep
from regcast.config import Settings
from regcast.mirrors.clients import ClientPool
from regcast.mirrors.document import MirrorDocument, load_document
from regcast.mirrors.models import Trigger
from regcast.mirrors.plan import Planner
from regcast.mirrors.records import MirrorRecord
from regcast.mirrors.schedule import Schedule
from regcast.mirrors.select import expand_targets, is_layout
from regcast.mirrors.service import MirrorService, split_document
from regcast.mirrors.store import utcnow
from regcast.mirrors.sync import PassReport

router = APIRouter(tags=["mirrors"])
PLAN_TIMEOUT = 300.0
SETTINGS_PREFIX = "REGCAST_"  # variables a posted document's ${VAR} may not read
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "no mirror of that name"}}
_BODY = {
    "requestBody": {
        "content": {
            "application/yaml": {"schema": {"type": "string"}},
            "application/json": {"schema": {"type": "object"}},
        },
        "required": True,
    }
}


def _mirrors(service: Service) -> MirrorService:
    assert service.mirrors is not None
    return service.mirrors


async def _document(request: Request, settings: Settings) -> MirrorDocument | SeedJSON:
    try:
        text = (await request.body()).decode()
    except UnicodeDecodeError:
        return error(400, "Failed to parse data: the document is not UTF-8 text")
    try:
        # the service's own secrets stay its own, and so does what REGCAST_MIRROR_ENV does not list
        doc = load_document(text, os.environ, reserved=SETTINGS_PREFIX, allowed=settings.mirror_env_patterns)
    except InvalidInput as exc:
        return error(400, f"Failed to parse data: {exc}")
    for i, m in enumerate(doc.mirrors):  # a service writing files on its own host is nobody's intent
        if any(is_layout(t) for t in expand_targets(doc, m.targets)):
            return error(400, f"Failed to parse data: mirrors[{i}].targets: layout targets are for regcast sync only")
    return doc


def _summary(rec: MirrorRecord, now: Any) -> dict[str, Any]:
    mirror = rec.document["mirrors"][0]
    schedule = Schedule(cron=rec.schedule, interval=rec.interval_seconds)
    next_due = None
    if schedule.cron is not None or schedule.interval is not None:
        with contextlib.suppress(ValueError):  # a cron stored before check_cron refused one that never fires
            next_due = schedule.next_due(now).isoformat()
    return {
        "name": rec.name,
        "source": mirror["source"],
        "targets": mirror["targets"],
        "schedule": rec.schedule,
        "interval_seconds": rec.interval_seconds,
        "next_due": next_due,
        "active_run": rec.active_run,
        "created_at": rec.created_at.isoformat(),
        "updated_at": rec.updated_at.isoformat(),
    }


@router.post(
    "/api/mirrors",
    status_code=201,
    openapi_extra=_BODY,
    responses={400: {"description": "bad document (nothing stored)"}, 503: {"description": "database unavailable"}},
)
async def put_mirrors(request: Request, service: ServiceDep) -> SeedJSON:
    """Store every mirror of a document (YAML or JSON), creating or replacing each by name."""
    doc = await _document(request, service.settings)
    if isinstance(doc, SeedJSON):
        return doc
    if not service.ready.is_set():
        return error(503, "database unavailable")
    ms = _mirrors(service)
    items = split_document(doc, service.box)
    await asyncio.to_thread(ms.store.put, items)
    return SeedJSON({"status": "success", "msg": "Mirrors stored", "mirrors": [i.name for i in items]}, status_code=201)


@router.get("/api/mirrors")
async def list_mirrors(service: ServiceDep) -> SeedJSON:
    """Every stored mirror with its schedule and next due time."""
    records = await asyncio.to_thread(_mirrors(service).store.all)
    now = utcnow()
    return SeedJSON({"mirrors": [_summary(r, now) for r in records]})


@router.post(
    "/api/mirrors/plan",
    openapi_extra=_BODY,
    responses={400: {"description": "bad document"}, 504: {"description": "planning took too long"}},
)
async def plan(request: Request, service: ServiceDep) -> SeedJSON:
    """The dry run of a posted document (image x target: up to date / copy / skip, bytes); nothing stored."""
    doc = await _document(request, service.settings)
    if isinstance(doc, SeedJSON):
        return doc
    pool = ClientPool(doc, service.settings)
    try:
        plans = await asyncio.wait_for(Planner(doc, pool, with_bytes=True).plan(), PLAN_TIMEOUT)
    except TimeoutError:
        return error(504, "planning took too long")
    finally:
        await pool.close()
    return SeedJSON(PassReport(plans, dry_run=True).public())


@router.get("/api/mirrors/{name}", responses=_NOT_FOUND)
async def get_mirror(name: str, service: ServiceDep) -> SeedJSON:
    """One mirror: its stored document (no password) and schedule."""
    rec = await asyncio.to_thread(_mirrors(service).store.get, name)
    if rec is None:
        return error(404, "mirror not found")
    return SeedJSON({**_summary(rec, utcnow()), "document": rec.document})


@router.delete("/api/mirrors/{name}", responses=_NOT_FOUND)
async def delete_mirror(name: str, service: ServiceDep) -> SeedJSON:
    """Forget a mirror (its past runs and jobs stay)."""
    if not await asyncio.to_thread(_mirrors(service).store.delete, name):
        return error(404, "mirror not found")
    return SeedJSON({"status": "success", "msg": "Mirror deleted"})


@router.post(
    "/api/mirrors/{name}/run",
    status_code=202,
    responses={**_NOT_FOUND, 409: {"description": "a run of this mirror is still going"}},
)
async def run_now(name: str, service: ServiceDep) -> SeedJSON:
    """Run a mirror now: its copies become jobs in the queue, linked to the run."""
    run_id, going = await _mirrors(service).start(name, Trigger.MANUAL)
    if run_id is not None:
        return SeedJSON({"status": "success", "msg": "Mirror run started", "id": run_id}, status_code=202)
    if going is None:
        return error(404, "mirror not found")
    return error(409, f"a run of {name} is still going ({going.id})")


@router.get("/api/mirrors/{name}/runs", responses=_NOT_FOUND)
async def runs(name: str, service: ServiceDep, limit: int = Query(50, ge=1, le=500)) -> SeedJSON:
    """Runs, newest first: started/finished, images selected, copied, up to date, failed, bytes, jobs."""
    store = _mirrors(service).store
    if await asyncio.to_thread(store.get, name) is None:
        return error(404, "mirror not found")
    await _mirrors(service).settle()
    found = await asyncio.to_thread(store.runs, name, limit)
    return SeedJSON({"runs": [r.public() for r in found]})
