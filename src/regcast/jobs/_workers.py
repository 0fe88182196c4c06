"""Worker rows of the job store: registration, heartbeats and the reaper, on the database's clock.

Several hosts compare heartbeats, so only the database's ``now()`` judges them (``_db.Clock``;
see ``docs/decisions.md``, liveness). The loops that call these live in ``liveness.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from sqlalchemy import and_, delete, insert, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from regcast.jobs._core import StoreCore
from regcast.jobs._db import utcnow
from regcast.jobs.models import JobState, jobs, workers
from regcast.jobs.records import WorkerRecord
from regcast.jobs.store_ops import cancel_if_asked, requeue_targets, settle_targets

log = logging.getLogger("regcast.jobs")


class WorkerRows(StoreCore):
    def register_worker(self, worker_id: str, host: str, pid: int) -> None:
        with self._tx() as conn:
            self._register(conn, worker_id, host, pid)

    def _register(self, conn: Connection, worker_id: str, host: str, pid: int) -> None:
        conn.execute(delete(workers).where(workers.c.id == worker_id))
        now = self.clock.now()
        conn.execute(insert(workers).values(id=worker_id, host=host, pid=pid, started_at=now, heartbeat_at=now))

    def heartbeat(self, worker_id: str, host: str, pid: int, timeout: float | None = None) -> bool:
        """Refresh this worker's heartbeat; False if its row was gone (it had been judged dead)."""
        with self._tx(timeout) as conn:
            n = conn.execute(
                update(workers).where(workers.c.id == worker_id).values(heartbeat_at=self.clock.now())
            ).rowcount
            if n != 1:
                self._register(conn, worker_id, host, pid)
        return n == 1

    def deregister_worker(self, worker_id: str) -> None:
        with self._tx() as conn:
            conn.execute(delete(workers).where(workers.c.id == worker_id))

    def workers(self) -> list[WorkerRecord]:
        with self._tx() as conn:
            rows = conn.execute(select(workers).order_by(workers.c.started_at)).all()
        return [
            WorkerRecord(m["id"], m["host"], m["pid"], m["started_at"], m["heartbeat_at"])
            for m in (r._mapping for r in rows)
        ]

    def reap(
        self, stale_after: float | None, max_attempts: int, dead: Iterable[str] = (), ended: list[str] | None = None
    ) -> list[str]:
        """Forget workers whose heartbeat is older than ``stale_after`` (None: judge no heartbeat) or
        known ``dead``; requeue every RUNNING job not held by a live worker — FAILED after
        ``max_attempts`` claims."""
        with self._tx() as conn:
            gone: ColumnElement[bool] = workers.c.id.in_(list(dead))
            if stale_after is not None:
                gone = or_(gone, workers.c.heartbeat_at < self.clock.later(-stale_after))
            for (wid,) in conn.execute(select(workers.c.id).where(gone)):
                log.warning("worker %s stopped heartbeating; its jobs go back to the queue", wid)
            conn.execute(delete(workers).where(gone))
            orphan = and_(
                jobs.c.state == JobState.RUNNING.value,
                or_(jobs.c.worker_id.is_(None), jobs.c.worker_id.not_in(select(workers.c.id))),
            )
            ids = [r[0] for r in conn.execute(select(jobs.c.id).where(orphan).with_for_update(skip_locked=True))]
            if not ids:
                return []
            now = utcnow()
            given_up = f"worker stopped responding; gave up after {max_attempts} attempts"
            failed = list(
                conn.execute(
                    update(jobs)
                    .where(  # a job whose cancel was asked ends CANCELLED below, not FAILED
                        jobs.c.id.in_(ids),
                        jobs.c.state == JobState.RUNNING.value,
                        jobs.c.attempts >= max_attempts,
                        jobs.c.cancel_requested.is_(False),
                    )
                    .values(
                        state=JobState.FAILED.value, finished_at=now, updated_at=now, worker_id=None, error=given_up
                    )
                    .returning(jobs.c.id)
                ).scalars()
            )
            settle_targets(conn, failed, JobState.FAILED, given_up, now)
            conn.execute(
                update(jobs)
                .where(jobs.c.id.in_(ids), jobs.c.state == JobState.RUNNING.value)
                .values(state=JobState.QUEUED.value, worker_id=None, updated_at=now)
            )
            requeue_targets(conn, ids)
            cancelled = set(cancel_if_asked(conn, ids))
            self._notify(conn)
        if ended is not None:  # the jobs that ended here, not in a worker: their notifications are the caller's
            ended.extend([*failed, *cancelled])
        for i in ids:
            outcome = "CANCELLED, as asked" if i in cancelled else f"FAILED ({given_up})" if i in failed else "requeued"
            log.warning("job %s: its worker is gone; %s", i, outcome)
        return ids
