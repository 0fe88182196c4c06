"""Per-target state and counters that the CLI's progress bars and the job store consume."""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass, field
from typing import Protocol


class TargetState(enum.StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    FINISHED = "FINISHED"
    SKIPPED = "SKIPPED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"  # never set by the engine: the store settles a cancelled job's targets


@dataclass
class TargetStatus:
    """Live status of one target during a copy (mutated by the engine only)."""

    key: str
    state: TargetState = TargetState.PENDING
    error: str | None = None
    reason: str | None = None  # why SKIPPED: "up-to-date" (tag at the source digest) or "tag-differs"
    bytes_total: int = 0
    bytes_done: int = 0
    bytes_uploaded: int = 0
    bytes_mounted: int = 0  # blobs made present by a cross-repository mount
    blobs_total: int = 0
    blobs_present: int = 0
    blobs_mounted: int = 0
    blobs_uploaded: int = 0
    manifests_pushed: int = 0
    blobs_detached: int = 0  # blobs this target finished from its own, later source read (it lagged)
    detached_reason: str | None = None  # why it was last detached
    finished_at: dt.datetime | None = None  # when this target ended (FINISHED/SKIPPED/FAILED), its own time
    attempts: int = 0
    # this job's tag check passed for a push here (the tag absent, or another digest with overwrite on):
    # stored, so a later attempt that finds the tag at the source digest knows it is this job's own push
    # (its process died before the status said so) and the target is FINISHED, not SKIPPED
    tag_pushed: bool = False
    retries: int = 0  # requests retried and blobs re-sent for this target
    retryable: bool = True  # False when trying again cannot help (bad credentials, bad input)
    referrers: int = 0  # signatures, attestations, SBOMs... pushed to this target
    referrers_left_out: list[str] = field(default_factory=list)  # one line each: which, and why
    notes: list[str] = field(default_factory=list)
    waiting: str | None = None  # a registry's rate limit holds this target back (shown until waiting_until)
    waiting_until: dt.datetime | None = None

    @property
    def done(self) -> bool:
        return self.state in (TargetState.FINISHED, TargetState.SKIPPED, TargetState.FAILED)


class Listener(Protocol):
    """Told whenever a target's status changes (bytes included); must return quickly."""

    def changed(self, status: TargetStatus) -> None: ...


class NullListener:
    def changed(self, status: TargetStatus) -> None:
        return None
