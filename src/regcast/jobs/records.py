"""What the job store hands out and takes in: plain values, states as enums.

A target's progress crosses two boundaries here, each mapped in one place: a stored target
becomes the runner's live ``TargetStatus`` (``TargetRecord.status``) and a live status becomes
the row the worker writes (``TargetUpdate.of``); ``_rows.py`` maps records to and from rows.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from regcast.jobs.models import JobState
from regcast.transfer.progress import TargetState, TargetStatus


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
    waiting: str | None = None  # a registry's rate limit holds it back (shown while waiting_until is ahead)
    waiting_until: dt.datetime | None = None
    tag_pushed: bool = False  # this job's tag check passed for a push (TargetStatus.tag_pushed)

    def waiting_now(self, now: dt.datetime) -> str | None:
        """The wait shown at ``now``: None once its time passed or the target ended (a wait is written
        when it starts and never cleared; its time says when it is over)."""
        ahead = self.waiting_until is not None and self.waiting_until > now
        return self.waiting if ahead and self.state in (TargetState.PENDING, TargetState.RUNNING) else None

    def status(self) -> TargetStatus:
        """The live status a new attempt starts from: what earlier attempts stored."""
        return TargetStatus(
            self.endpoint,
            state=self.state,
            bytes_done=self.bytes_done,
            bytes_total=self.bytes_total,
            attempts=self.attempts,
            error=self.error,
            reason=self.reason,
            retries=self.retries,
            referrers=self.referrers,
            referrers_left_out=list(self.referrers_left_out),
            finished_at=self.finished_at,
            blobs_detached=self.blobs_detached,
            detached_reason=self.detached_reason,
            retryable=self.retryable,
            waiting=self.waiting,
            waiting_until=self.waiting_until,
            tag_pushed=self.tag_pushed,
        )


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
    waiting: str | None = None
    waiting_until: dt.datetime | None = None
    tag_pushed: bool = False

    @classmethod
    def of(cls, idx: int, status: TargetStatus, state: TargetState | None = None) -> TargetUpdate:
        """The row to write for target ``idx`` from its live status (``state``: stored instead of its own)."""
        return cls(
            idx,
            state or status.state,
            status.bytes_done,
            status.bytes_total,
            status.attempts,
            status.error,
            retries=status.retries,
            retryable=status.retryable,
            reason=status.reason,
            referrers=status.referrers,
            referrers_left_out=tuple(status.referrers_left_out),
            finished_at=status.finished_at,
            blobs_detached=status.blobs_detached,
            detached_reason=status.detached_reason,
            waiting=status.waiting,
            waiting_until=status.waiting_until,
            tag_pushed=status.tag_pushed,
        )


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
