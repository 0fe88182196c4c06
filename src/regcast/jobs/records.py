"""What the job store hands out and takes in: plain values, states as enums."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from regcast.jobs.models import JobState
from regcast.transfer.progress import TargetState


@dataclass
class TargetRecord:
    idx: int
    endpoint: str
    repository: str
    ref: str
    state: TargetState
    bytes_done: int = 0
    bytes_total: int = 0
    attempts: int = 0
    error: str | None = None
    retries: int = 0
    retryable: bool = True
    reason: str | None = None  # why SKIPPED: up-to-date / tag-differs
    referrers: int = 0
    referrers_left_out: list[str] = field(default_factory=list)
    finished_at: dt.datetime | None = None  # this target's own end (issue 19)
    blobs_detached: int = 0
    detached_reason: str | None = None


@dataclass
class JobRecord:
    id: str
    state: JobState
    created_at: dt.datetime
    started_at: dt.datetime
    running_at: dt.datetime | None
    finished_at: dt.datetime | None
    updated_at: dt.datetime
    request: dict[str, Any]
    secrets: bytes | None
    source_digest: str | None
    attempts: int
    worker_id: str | None
    heartbeat_at: dt.datetime | None
    cancel_requested: bool
    error: str | None
    targets: list[TargetRecord] = field(default_factory=list)
    not_before: dt.datetime | None = None
    claim_generation: int = 0
    notifications: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class TargetUpdate:
    idx: int
    state: TargetState
    bytes_done: int
    bytes_total: int
    attempts: int
    error: str | None
    retries: int = 0
    retryable: bool = True
    reason: str | None = None
    referrers: int = 0
    referrers_left_out: tuple[str, ...] = ()
    finished_at: dt.datetime | None = None
    blobs_detached: int = 0
    detached_reason: str | None = None


@dataclass(frozen=True)
class Claim:
    """A worker's hold on one job: every write it makes is fenced by ``generation``."""

    job_id: str
    worker_id: str
    generation: int


@dataclass(frozen=True)
class WorkerRecord:
    id: str
    host: str
    pid: int
    started_at: dt.datetime
    heartbeat_at: dt.datetime
