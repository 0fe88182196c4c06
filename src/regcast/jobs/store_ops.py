"""The job store's queries for operators: queue statistics, retry of an ended job, retention,
notification records. Mixed into ``JobStore`` (same transactions, same error boundary); also the
target settling every state change of a job shares."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.engine import Connection

from regcast.jobs._core import StoreCore
from regcast.jobs._db import as_utc, utcnow
from regcast.jobs._rows import get_jobs
from regcast.jobs.models import FINAL_STATES, FINAL_TARGET_STATES, JobState, job_targets, jobs
from regcast.jobs.records import JobRecord
from regcast.transfer.progress import TargetState

KEPT_ON_RETRY = (TargetState.FINISHED.value, TargetState.SKIPPED.value)  # a retried job does not redo these


class OpsQueries(StoreCore):
    def queue_stats(self) -> tuple[dict[str, int], float | None, int]:
        """Job counts by state, the age in seconds of the oldest QUEUED job (None when none), and
        the number of targets being copied (RUNNING targets of RUNNING jobs)."""
        with self._tx() as conn:
            counts = {r[0]: int(r[1]) for r in conn.execute(select(jobs.c.state, func.count()).group_by(jobs.c.state))}
            oldest = as_utc(
                conn.execute(select(func.min(jobs.c.created_at)).where(jobs.c.state == JobState.QUEUED.value)).scalar()
            )
            running = conn.execute(
                select(func.count())
                .select_from(job_targets.join(jobs, jobs.c.id == job_targets.c.job_id))
                .where(jobs.c.state == JobState.RUNNING.value, job_targets.c.state == TargetState.RUNNING.value)
            ).scalar_one()
        return counts, (utcnow() - oldest).total_seconds() if oldest else None, int(running)

    def retry_failed(self, job_id: str) -> JobRecord | None:
        """A FAILED or CANCELLED job back to QUEUED; its FAILED (and unfinished) targets start over.

        Targets FINISHED or SKIPPED stay as they are, so the worker does not redo them.
        Returns None when the job is not in a state that can be retried.
        """
        now = utcnow()
        ended = (JobState.FAILED.value, JobState.CANCELLED.value)
        with self._tx() as conn:
            n = conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.state.in_(ended))
                .values(
                    state=JobState.QUEUED.value,
                    attempts=0,
                    finished_at=None,
                    running_at=None,
                    cancel_requested=False,
                    error=None,
                    worker_id=None,
                    not_before=None,
                    updated_at=now,
                )
            ).rowcount
            if n != 1:
                return None
            conn.execute(
                update(job_targets)
                .where(job_targets.c.job_id == job_id, job_targets.c.state.not_in(KEPT_ON_RETRY))
                .values(
                    state=TargetState.PENDING.value,
                    bytes_done=0,
                    attempts=0,
                    error=None,
                    retryable=True,
                    updated_at=now,
                )
            )
            self._notify(conn)
            found = get_jobs(conn, [job_id], self.sql)
        return found[0] if found else None

    def purge_finished(self, older_than: dt.timedelta) -> int:
        """Delete jobs that ended more than ``older_than`` ago (their targets go with them)."""
        limit = utcnow() - older_than
        final = [s.value for s in FINAL_STATES]
        with self._tx() as conn:
            ids = [
                r[0]
                for r in conn.execute(
                    select(jobs.c.id).where(jobs.c.state.in_(final), jobs.c.finished_at < limit).limit(1000)
                )
            ]
            if not ids:
                return 0
            conn.execute(job_targets.delete().where(job_targets.c.job_id.in_(ids)))
            conn.execute(jobs.delete().where(jobs.c.id.in_(ids)))
        return len(ids)

    def save_notifications(self, job_id: str, deliveries: list[dict[str, Any]]) -> None:
        """The job's notification delivery attempts, as shown in its status (not fenced: sent after the end)."""
        with self._tx() as conn:
            conn.execute(update(jobs).where(jobs.c.id == job_id).values(notifications=deliveries))


def settle_targets(conn: Connection, ids: list[str], state: JobState, error: str | None, now: dt.datetime) -> None:
    """A job that ended leaves no target QUEUED or RUNNING: they end with it (FAILED or CANCELLED)."""
    if not ids or state is JobState.FINISHED:
        return
    conn.execute(
        update(job_targets)
        .where(job_targets.c.job_id.in_(ids), job_targets.c.state.not_in(FINAL_TARGET_STATES))
        .values(state=state.value, error=func.coalesce(job_targets.c.error, error), updated_at=now)
    )


def cancel_if_asked(conn: Connection, ids: list[str]) -> list[str]:
    """Jobs just put back in the queue whose cancel a user asked for end CANCELLED now: queued with the
    request still on them, they were claimed and copied again (a small image to the end) by the next
    worker (a worker gone or stopped before it saw the request, an attempt retried later)."""
    if not ids:
        return []
    now = utcnow()
    done = list(
        conn.execute(
            update(jobs)
            .where(jobs.c.id.in_(ids), jobs.c.state == JobState.QUEUED.value, jobs.c.cancel_requested.is_(True))
            .values(
                state=JobState.CANCELLED.value,
                finished_at=now,
                updated_at=now,
                worker_id=None,
                not_before=None,
                error="cancelled by user",
            )
            .returning(jobs.c.id)
        ).scalars()
    )
    settle_targets(conn, done, JobState.CANCELLED, None, now)
    return done


def requeue_targets(conn: Connection, ids: list[str]) -> None:
    """A job back in the queue has no target still RUNNING: they wait (QUEUED) with it."""
    conn.execute(
        update(job_targets)
        .where(job_targets.c.job_id.in_(ids), job_targets.c.state == TargetState.RUNNING.value)
        .values(state=TargetState.PENDING.value, updated_at=utcnow())
    )
