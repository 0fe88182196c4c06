"""Claims and the writes fenced by them: how a worker takes a job and writes while it holds it.

A claim is one ``UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED)`` statement: atomic
on both databases. Each claim increments ``claim_generation``; every later write of the worker
is fenced by the generation it claimed, so a worker whose job was requeued and claimed by
another cannot overwrite the new owner — but one whose job was requeued only because it could
not reach the database (and was not claimed since) takes it back with its next write. The
worker shields its final writes (``finish``, ``release``, ``retry_later``) from cancellation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, bindparam, update
from sqlalchemy.engine import Connection
from sqlalchemy.sql.dml import Update

from regcast.jobs._core import StoreCore
from regcast.jobs._db import as_utc, utcnow
from regcast.jobs._rows import job_records, target_values
from regcast.jobs.models import JobState, job_targets, jobs
from regcast.jobs.records import Claim, JobRecord, TargetUpdate
from regcast.jobs.store_ops import cancel_if_asked, requeue_targets, settle_targets


def _fenced_update(claim: Claim, **values: Any) -> Update:
    """The UPDATE of a job row that only hits while ``claim`` holds it (RUNNING, or QUEUED since)."""
    held = and_(
        jobs.c.id == claim.job_id,
        jobs.c.claim_generation == claim.generation,
        jobs.c.state.in_([JobState.RUNNING.value, JobState.QUEUED.value]),
    )
    values.setdefault("state", JobState.RUNNING.value)
    values.setdefault("worker_id", claim.worker_id if values["state"] == JobState.RUNNING.value else None)
    return update(jobs).where(held).values(updated_at=utcnow(), **values)


# One target row's progress; the SET columns come from the parameters (target_values + updated_at).
_TARGET_ROW = update(job_targets).where(
    job_targets.c.job_id == bindparam("row_job_id"), job_targets.c.idx == bindparam("row_idx")
)


def _write_targets(conn: Connection, job_id: str, updates: Sequence[TargetUpdate]) -> None:
    """Every changed target row in one executemany of one statement (compiled once per process), not a
    statement built, keyed and sent per target (issue 17: a job's final write)."""
    if not updates:
        return
    now = utcnow()
    conn.execute(
        _TARGET_ROW,
        [{"row_job_id": job_id, "row_idx": u.idx, **target_values(u), "updated_at": now} for u in updates],
    )


def _held(claim: Claim) -> dict[str, Any]:
    """The parameters that fence a statement of ``Statements`` to this claim."""
    return {"job_id": claim.job_id, "generation": claim.generation}


class Claims(StoreCore):
    def claim(self, worker_id: str, limit: int = 1) -> list[JobRecord]:
        """Atomically take up to ``limit`` of the oldest claimable QUEUED jobs for a registered worker."""
        now = utcnow()
        params = {"claimer": worker_id, "limit": limit, "updated": now, "now": now}
        with self._tx() as conn:
            # oldest first, as the candidates' ORDER BY (RETURNING keeps no order)
            rows = sorted(conn.execute(self.sql.claim, params).all(), key=lambda r: (as_utc(r.created_at), r.id))
            return job_records(conn, rows, self.sql) if rows else []

    @staticmethod
    def _fenced(conn: Connection, claim: Claim, **values: Any) -> bool:
        """Write to a job this claim still holds — taking it back if it was only requeued since."""
        return conn.execute(_fenced_update(claim, **values)).rowcount == 1

    def save_progress(
        self, claim: Claim, updates: Sequence[TargetUpdate], source_digest: str | None = None
    ) -> tuple[bool, bool]:
        """Persist target progress and the job's heartbeat; returns (still held, cancel requested).

        ``updates`` need only hold the targets that changed since the last save (the worker keeps
        what it wrote): an unchanged target costs no statement.
        """
        now = utcnow()
        params = {**_held(claim), "claimer": claim.worker_id, "updated": now, "now": now}
        stmt = self.sql.progress
        if source_digest:
            stmt, params["digest"] = self.sql.progress_digest, source_digest
        with self._tx() as conn:
            held = conn.execute(stmt, params).first()
            if held is None:
                return False, False
            _write_targets(conn, claim.job_id, updates)
        return True, bool(held[0])

    def finish(
        self,
        claim: Claim,
        state: JobState,
        error: str | None = None,
        updates: Sequence[TargetUpdate] = (),
        source_digest: str | None = None,
    ) -> bool:
        """Final state and the targets' last progress, in one transaction (so it is all or nothing)."""
        now = utcnow()
        params = {**_held(claim), "new_state": state.value, "updated": now, "finished": now, "err": error}
        stmt = self.sql.finish
        if source_digest:
            stmt, params["digest"] = self.sql.finish_digest, source_digest
        with self._tx() as conn:
            if conn.execute(stmt, params).rowcount != 1:
                return False
            _write_targets(conn, claim.job_id, updates)
            settle_targets(conn, [claim.job_id], state, error, now)
        return True

    def release(self, claim: Claim, updates: Sequence[TargetUpdate] = ()) -> bool:
        """Graceful shutdown: the job goes back to QUEUED at once, this attempt not counted."""
        with self._tx() as conn:
            ok = self._fenced(conn, claim, state=JobState.QUEUED.value, attempts=jobs.c.attempts - 1)
            if ok:
                _write_targets(conn, claim.job_id, updates)
                requeue_targets(conn, [claim.job_id])
                cancel_if_asked(conn, [claim.job_id])
                self._notify(conn)
        return ok

    def retry_later(self, claim: Claim, delay: float, updates: Sequence[TargetUpdate] = ()) -> bool:
        """Back to QUEUED, claimable by any worker once ``delay`` seconds have passed (this attempt counted)."""
        with self._tx() as conn:
            ok = self._fenced(conn, claim, state=JobState.QUEUED.value, not_before=self.clock.later(delay))
            if ok:
                _write_targets(conn, claim.job_id, updates)
                cancel_if_asked(conn, [claim.job_id])
        return ok
