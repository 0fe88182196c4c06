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
from regcast.ops.metrics import Metrics
from regcast.triggers.dispatch import PushTriggers


@dataclass
class Service:
    settings: Settings
    store: JobStore
    box: SecretBox
    run_workers: bool = True
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    worker: Worker | None = None
    mirrors: MirrorService | None = None  # stored mirror sets, their runs and schedules
    metrics: Metrics = field(default_factory=Metrics)
    triggers: PushTriggers | None = None  # registries' push notifications (POST /api/events/<name>)


def get_service(request: Request) -> Service:
    """The ``Service`` of the app serving this request (set by ``create_app``)."""
    return cast(Service, request.app.state.service)


ServiceDep = Annotated[Service, Depends(get_service)]
