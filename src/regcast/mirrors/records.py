"""What the mirror store hands out: plain records with states as enums, never a database row."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from regcast.jobs.models import FINAL_STATES, JobState
from regcast.mirrors.models import RunState, Trigger


@dataclass(frozen=True)
class StoredMirror:
    """One mirror as ``MirrorStore.put`` stores it."""

    name: str
    document: dict[str, Any]
    sealed: bytes
    schedule: str | None
    interval_seconds: float | None


@dataclass
class MirrorRecord:
    name: str
    document: dict[str, Any]
    sealed: bytes
    schedule: str | None
    interval_seconds: float | None
    active_run: str | None
    created_at: dt.datetime
    updated_at: dt.datetime


@dataclass
class RunRecord:
    id: str
    mirror: str
    trigger: Trigger
    due_at: dt.datetime | None
    state: RunState
    created_at: dt.datetime
    planned_at: dt.datetime | None
    finished_at: dt.datetime | None
    images_selected: int
    images_up_to_date: int
    images_skipped: int
    images_failed: int
    owner: str | None
    error: str | None
    jobs: dict[str, JobState] = field(default_factory=dict)  # job id -> state
    bytes: int = 0
    jobs_finished_at: dt.datetime | None = None  # the last of its jobs to end
    waiting: str | None = None  # a registry's rate limit holds it back now (its planner's or a job's): until when

    @property
    def in_sync_at(self) -> dt.datetime | None:
        """When every target held the run's images: its last job's end (its plan's, with no job)."""
        if self.state is not RunState.FINISHED:
            return None
        return self.jobs_finished_at if self.jobs else self.planned_at

    @property
    def lag_seconds(self) -> float | None:
        """Push runs: from the push (``due_at`` holds its time) to in sync at every target."""
        if self.trigger is not Trigger.PUSH or self.due_at is None or self.in_sync_at is None:
            return None
        return max(0.0, (self.in_sync_at - self.due_at).total_seconds())

    def public(self) -> dict[str, Any]:
        states = list(self.jobs.values())
        push = {"pushed_at": _iso(self.due_at), "lag_seconds": self.lag_seconds} if self.trigger is Trigger.PUSH else {}
        return {
            **push,
            "id": self.id,
            "mirror": self.mirror,
            "trigger": self.trigger.value,
            "due_at": _iso(self.due_at),
            "state": self.state.value,
            "started_at": _iso(self.created_at),
            "finished_at": _iso(self.finished_at),
            "images_selected": self.images_selected,
            "up_to_date": self.images_up_to_date,
            "skipped": self.images_skipped,
            "copied": states.count(JobState.FINISHED),
            "failed": self.images_failed + states.count(JobState.FAILED) + states.count(JobState.CANCELLED),
            "in_progress": sum(s not in FINAL_STATES for s in states),
            "bytes": self.bytes,
            "jobs": sorted(self.jobs),
            "error": self.error,
            "waiting": self.waiting,
        }


def _iso(t: dt.datetime | None) -> str | None:
    return t.isoformat() if t else None
