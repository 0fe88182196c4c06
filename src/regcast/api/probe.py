"""What ``/healthz`` and ``/readyz`` look at, for ``serve`` and ``worker`` alike (Kubernetes probes).

``/healthz``: the process is alive — for ``serve`` with workers, that includes its worker loop.
``/readyz``: the database answers and this process can do its work; it answers within
``READY_BUDGET`` (under Kubernetes' default 1 s probe timeout) whether the database answers,
fails, or is frozen. ``regcast worker`` serves the probes from ``create_health_app`` on its own
small port, with that worker's ``/metrics``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import FastAPI

from regcast._exceptions import JobError
from regcast.jobs.store import JobStore

READY_BUDGET = 0.9  # seconds


@dataclass
class Probe:
    """``alive``/``problem`` return None when fine, else why not (the 503 message)."""

    store: JobStore
    alive: Callable[[], str | None]
    problem: Callable[[], str | None]

    async def ready(self) -> str | None:
        why = self.problem()
        if why:
            return why
        try:
            await asyncio.wait_for(asyncio.to_thread(self.store.ping, READY_BUDGET - 0.1), READY_BUDGET)
        except (JobError, TimeoutError):
            return "database unavailable"
        return None


def create_health_app(
    probe: Probe,
    metrics: Callable[[], bytes] | None = None,
    tokens: tuple[str, ...] = (),
    metrics_public: bool = False,
) -> FastAPI:
    """The small app ``regcast worker`` serves on ``REGCAST_HEALTH_PORT``: the probes, and with
    ``metrics`` (the worker's own: its jobs, bytes, retries, registry requests) ``/metrics``, behind
    the API tokens as on ``serve`` unless ``metrics_public``."""
    from fastapi.responses import Response

    from regcast.api.middleware import BearerAuth, SeedPaths
    from regcast.api.responses import seed_errors
    from regcast.api.routes import health
    from regcast.ops.metrics import CONTENT_TYPE

    app = FastAPI(title="regcast worker", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.probe = probe
    app.include_router(health.router)
    if metrics is not None:
        render = metrics

        @app.get("/metrics", response_class=Response)
        async def _metrics() -> Response:
            return Response(await asyncio.to_thread(render), media_type=CONTENT_TYPE)

        if tokens and not metrics_public:
            app.add_middleware(BearerAuth, tokens=tokens)
    seed_errors(app)
    app.add_middleware(SeedPaths)  # HEAD probes answered, as on `serve`
    return app
