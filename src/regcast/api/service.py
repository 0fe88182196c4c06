"""What every route needs: settings, the store, the secret box, the worker; reached through the app."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Annotated, cast

from fastapi import Depends, Request

from regcast.config import Settings
from regcast.jobs.secrets import SecretBox
from regcast.jobs.store import JobStore
from regcast.jobs.worker import Worker
from regcast.mirrors.service import MirrorService
from regcast.ops.events import JobEvents
from regcast.ops.metrics import Metrics
from regcast.registry.pool import ConnectionPools
from regcast.triggers.dispatch import PushTriggers


@dataclass
class Service:
    settings: Settings
    store: JobStore
    box: SecretBox
    run_workers: bool = True
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    tried: asyncio.Event = field(default_factory=asyncio.Event)  # the first try at the database ended
    worker: Worker | None = None
    mirrors: MirrorService | None = None  # stored mirror sets, their runs and schedules
    metrics: Metrics = field(default_factory=Metrics)
    triggers: PushTriggers | None = None  # registries' push notifications (POST /api/events/<name>)
    events: JobEvents | None = None  # set once the database is ready: a job ended here (a queued job cancelled)
    starter: asyncio.Task[None] | None = None  # migrate, then the worker loop until shutdown
    stopping: bool = False
    # the POST's source checks: connection, /v2/ ping and tokens kept across submissions (#17: per-job CPU)
    check_pools: ConnectionPools = field(default_factory=ConnectionPools)
    check_settings: Settings | None = None  # the settings of those checks (short timeouts), made once

    def alive(self) -> str | None:
        """None while the process can do its job; a dead worker loop makes ``serve`` unhealthy."""
        if self.run_workers and self.starter is not None and self.starter.done() and not self.stopping:
            return "worker loop stopped"
        return None

    def problem(self) -> str | None:
        """Why this process cannot take work now (None: it can)."""
        if not self.ready.is_set():
            return "database unavailable"
        return self.worker.problem if self.worker is not None else None


async def get_service(request: Request) -> Service:
    """The ``Service`` of the app serving this request (set by ``create_app``).

    ``async``: FastAPI runs a plain ``def`` dependency in a thread pool, a thread hop per request (#17).
    """
    return cast(Service, request.app.state.service)


ServiceDep = Annotated[Service, Depends(get_service)]
