"""The ASGI app: middleware, error handlers and the routers of ``api/routes``, around one ``Service``.

Routes reach the service through ``request.app.state.service`` (``api/service.py``), so a new
concern is a new router module included here, not more code in this file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi_offline import FastAPIOffline

from regcast import __version__
from regcast._exceptions import JobError, JobStoreUnavailable
from regcast.api import dashboard
from regcast.api.middleware import BearerAuth, BodyLimit, BrowserGuard, SeedPaths
from regcast.api.openapi import build_openapi
from regcast.api.probe import Probe
from regcast.api.responses import SeedJSON, error, seed_errors
from regcast.api.routes import events, health, jobs, mirrors, operations
from regcast.api.service import Service
from regcast.config import split_list as _split
from regcast.jobs.store import failure_reason
from regcast.jobs.worker import Worker
from regcast.mirrors.service import MirrorService
from regcast.ops.events import JobEvents
from regcast.triggers.dispatch import PushTriggers

log = logging.getLogger("regcast.api")
SHUTDOWN_MARGIN = 5.0  # past the workers' own deadline (settings.shutdown_grace)
DOCS_STATIC = "/docs/static"


def _validation_message(exc: RequestValidationError) -> str:
    err = exc.errors()[0]
    loc = [str(p) for p in err.get("loc", ()) if p != "body"]
    if err.get("type") == "json_invalid":
        return "body is not valid JSON"
    where = ".".join(loc) or "body"
    msg = str(err.get("msg", "invalid"))
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if err.get("type") == "missing":
        msg = "missing field"
    return f"{where}: {msg}"


async def _bad_request(_req: Request, exc: Exception) -> SeedJSON:
    assert isinstance(exc, RequestValidationError)
    return error(400, f"Failed to parse data: {_validation_message(exc)}")


async def _db_down(_req: Request, exc: Exception) -> SeedJSON:
    log.warning("%s", exc)
    return error(503, "database unavailable")


def create_app(service: Service) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        async with _running(service):
            yield

    app = FastAPIOffline(  # Swagger UI's assets served from the package: /docs works without a CDN
        title="regcast",
        version=__version__,
        lifespan=lifespan,
        description="Copy one container image from one registry to many.",
        static_url=DOCS_STATIC,
        redoc_url=None,
    )
    app.state.service = service
    if service.mirrors is None:
        service.mirrors = MirrorService(service.settings, service.store, service.box, owner=f"api-{os.getpid()}")
    if service.triggers is None:
        service.triggers = PushTriggers(service.mirrors, service.metrics.push_lag.observe, service.metrics.event)
    app.state.probe = Probe(service.store, service.alive, service.problem)
    app.add_middleware(BodyLimit, limit=service.settings.max_body_bytes)
    tokens = service.settings.tokens()
    if tokens:
        public = frozenset({"/metrics"}) if service.settings.metrics_public else frozenset()
        app.add_middleware(BearerAuth, tokens=tokens, open_paths=public)
    settings = service.settings
    hosts = None if tokens else (settings.host, *_split(settings.allowed_hosts))
    app.add_middleware(BrowserGuard, allowed_origins=_split(settings.allowed_origins), allowed_hosts=hosts)
    app.add_middleware(SeedPaths)  # outermost: every other layer sees the route's own path and GET
    app.add_exception_handler(RequestValidationError, _bad_request)
    seed_errors(app)
    app.add_exception_handler(JobError, _db_down)
    app.include_router(jobs.router)
    app.include_router(health.router)
    app.include_router(mirrors.router)
    app.include_router(events.router)
    app.include_router(operations.router)
    app.include_router(dashboard.router)

    def openapi() -> dict[str, Any]:
        return build_openapi(app, auth=bool(tokens))

    app.openapi = openapi  # type: ignore[method-assign]
    return app


@contextlib.asynccontextmanager
async def _running(service: Service) -> AsyncIterator[None]:
    """Start migrating and working in the background; on exit stop the workers cleanly."""
    starter = service.starter = asyncio.create_task(_start(service), name="startup")
    # uvicorn answers once this yields: the first try at the database comes first, so a request right
    # after the start finds the service ready rather than a 503 (a database down is waited for meanwhile)
    tried = asyncio.ensure_future(service.tried.wait())
    await asyncio.wait(
        {tried, starter}, timeout=service.settings.db_timeout + SHUTDOWN_MARGIN, return_when="FIRST_COMPLETED"
    )
    tried.cancel()
    try:
        yield
    finally:
        service.stopping = True
        if service.worker is not None:
            service.worker.stop()  # running jobs stop cleanly and go back to the queue
        if service.ready.is_set():  # else still waiting for the database: nothing to stop cleanly
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(starter), service.settings.shutdown_grace + SHUTDOWN_MARGIN)
        starter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await starter
        if service.triggers is not None:
            await service.triggers.close()
        if service.worker is None and service.events is not None:  # an API-only replica's own deliveries
            await service.events.close()  # (a worker closes them itself): cancels notified, not dropped
        await service.check_pools.close()
        await asyncio.to_thread(service.store.close)


async def _start(service: Service) -> None:
    """Migrate (retrying while the database is down), then run the workers until shutdown."""
    delay = 1.0
    store = service.store
    while True:
        try:
            await asyncio.to_thread(store.migrate)
            break
        except JobStoreUnavailable as exc:
            log.error("database %s unavailable: %s; retrying in %.0fs", store.label, failure_reason(exc), delay)
            service.tried.set()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)
        except JobError as exc:  # no waiting helps (a schema a newer regcast wrote): /healthz answers 503
            log.error("%s", exc)
            service.tried.set()
            return
    service.ready.set()
    service.tried.set()
    events = service.events = JobEvents(service.store, service.settings, service.box, service.metrics)
    if service.mirrors is not None:  # whichever process settles a run sends its notification
        service.mirrors.on_run_ended = events.notifier.run_ended
    if service.run_workers:
        service.worker = Worker(service.store, service.settings, service.box, events=events)
        try:
            if service.mirrors is None:
                await service.worker.run()
            else:
                service.mirrors.wake = service.worker.wake
                service.mirrors.limits = service.worker.runner.engine.limits
                service.mirrors.connections = service.worker.runner.pool
                await asyncio.gather(service.worker.run(), service.mirrors.run_scheduler(service.worker.stopping))
        except Exception:
            log.exception("the worker loop crashed; /healthz answers 503")
            return
        if not service.stopping:
            log.error("the worker loop stopped; /healthz answers 503")


__all__ = ["SeedJSON", "Service", "create_app", "error"]
