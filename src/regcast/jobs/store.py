"""All SQL of the job service, for SQLite and PostgreSQL alike (one code path).

Claims are one ``UPDATE ... WHERE id = (SELECT ... FOR UPDATE SKIP LOCKED) AND state = 'QUEUED'``
statement: atomic on both databases. Every write a worker makes is fenced by its worker id
and the RUNNING state, so a worker that lost its job (requeued as stale) cannot overwrite the
new owner's progress. Calls are synchronous; async code runs them in a thread.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import uuid
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import Engine, and_, create_engine, event, func, insert, or_, select, text, true, update
from sqlalchemy.engine import Connection, Row
from sqlalchemy.sql.elements import ColumnElement

from regcast.jobs.models import FINAL_STATES, FINAL_TARGET_STATES, JobState, job_targets, jobs

log = logging.getLogger("regcast.jobs")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    """SQLite hands back naive datetimes: they were written as UTC."""
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


@dataclass
class TargetRecord:
    idx: int
    endpoint: str
    repository: str
    ref: str
    state: str
    bytes_done: int = 0
    bytes_total: int = 0
    attempts: int = 0
    error: str | None = None
    retries: int = 0
    reason: str | None = None
    referrers: int = 0
    referrers_left_out: list[str] = field(default_factory=list)
    finished_at: dt.datetime | None = None
    blobs_detached: int = 0
    detached_reason: str | None = None


@dataclass
class JobRecord:
    id: str
    state: str
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
    notifications: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class TargetUpdate:
    idx: int
    state: str
    bytes_done: int
    bytes_total: int
    attempts: int
    error: str | None
    retries: int = 0
    reason: str | None = None
    referrers: int = 0
    referrers_left_out: tuple[str, ...] = ()
    finished_at: dt.datetime | None = None
    blobs_detached: int = 0
    detached_reason: str | None = None


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def _private_file(url: str) -> None:
    """Create the SQLite file 0600 (its -wal and -shm files take the same mode): it holds job secrets' ciphertext
    and error texts."""
    path = url.split(":///", 1)[1].split("?", 1)[0] if ":///" in url else ""
    if not path or path == ":memory:":
        return
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
    except OSError:
        return  # the engine reports an unusable path itself


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        _private_file(url)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5, connect_args={"connect_timeout": 5})


class JobStore:
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)

    def close(self) -> None:
        self.engine.dispose()

    # -- schema and health ----------------------------------------------------------------------
    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision (safe to run on every start)."""
        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(resources.files("regcast.jobs") / "migrations"))
        with self.engine.begin() as conn:
            if self.engine.dialect.name == "postgresql":
                # several replicas starting together: one migrates, the others wait
                conn.execute(text("SELECT pg_advisory_xact_lock(727274)"))
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(select(func.count()).select_from(jobs).where(jobs.c.id == ""))

    # -- reading ---------------------------------------------------------------------------------
    @staticmethod
    def _record(row: Row[Any], targets: list[TargetRecord]) -> JobRecord:
        m = row._mapping
        created, started, updated = _utc(m["created_at"]), _utc(m["started_at"]), _utc(m["updated_at"])
        assert created and started and updated
        return JobRecord(
            id=m["id"],
            state=m["state"],
            created_at=created,
            started_at=started,
            running_at=_utc(m["running_at"]),
            finished_at=_utc(m["finished_at"]),
            updated_at=updated,
            request=m["request"],
            secrets=m["secrets"],
            source_digest=m["source_digest"],
            attempts=m["attempts"],
            worker_id=m["worker_id"],
            heartbeat_at=_utc(m["heartbeat_at"]),
            cancel_requested=bool(m["cancel_requested"]),
            error=m["error"],
            targets=targets,
            notifications=list(m["notifications"] or []) if "notifications" in m else [],
        )

    def _targets(self, conn: Connection, ids: list[str]) -> dict[str, list[TargetRecord]]:
        out: dict[str, list[TargetRecord]] = {i: [] for i in ids}
        if not ids:
            return out
        rows = conn.execute(
            select(job_targets).where(job_targets.c.job_id.in_(ids)).order_by(job_targets.c.job_id, job_targets.c.idx)
        )
        for r in rows:
            m = r._mapping
            out[m["job_id"]].append(
                TargetRecord(
                    m["idx"],
                    m["endpoint"],
                    m["repository"],
                    m["ref"],
                    m["state"],
                    m["bytes_done"],
                    m["bytes_total"],
                    m["attempts"],
                    m["error"],
                    m["retries"],
                    m["reason"],
                    m["referrers"],
                    list(m["referrers_left_out"] or []),
                    _utc(m["finished_at"]),
                    m["blobs_detached"] or 0,
                    m["detached_reason"],
                )
            )
        return out

    def get(self, job_id: str) -> JobRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(jobs).where(jobs.c.id == job_id)).first()
            if row is None:
                return None
            return self._record(row, self._targets(conn, [job_id])[job_id])

    def list_jobs(
        self,
        state: str | None = None,
        limit: int = 50,
        offset: int = 0,
        *,
        image: str | None = None,
        target: str | None = None,
    ) -> tuple[list[JobRecord], int]:
        """Newest first; filters: ``state``, ``image`` (in the source or a target repository),
        ``target`` (in a target endpoint); the last two match substrings. Returns (page, total)."""
        where: list[ColumnElement[bool]] = [jobs.c.state == state] if state else [true()]
        if image:
            in_target = select(job_targets.c.job_id).where(job_targets.c.repository.contains(image, autoescape=True))
            source_image = jobs.c.request[("source", "image")].as_string()
            where.append(or_(source_image.contains(image, autoescape=True), jobs.c.id.in_(in_target)))
        if target:
            where.append(
                jobs.c.id.in_(
                    select(job_targets.c.job_id).where(job_targets.c.endpoint.contains(target, autoescape=True))
                )
            )
        cond = and_(*where)
        with self.engine.connect() as conn:
            total = conn.execute(select(func.count()).select_from(jobs).where(cond)).scalar_one()
            rows = conn.execute(
                select(jobs).where(cond).order_by(jobs.c.created_at.desc(), jobs.c.id).limit(limit).offset(offset)
            ).all()
            targets = self._targets(conn, [r._mapping["id"] for r in rows])
            return [self._record(r, targets[r._mapping["id"]]) for r in rows], int(total)

    def queue_stats(self) -> tuple[dict[str, int], float | None, int]:
        """Job counts by state, the age in seconds of the oldest QUEUED job (None when none), and
        the number of targets being copied (RUNNING targets of RUNNING jobs)."""
        with self.engine.connect() as conn:
            counts = {r[0]: int(r[1]) for r in conn.execute(select(jobs.c.state, func.count()).group_by(jobs.c.state))}
            oldest = _utc(
                conn.execute(select(func.min(jobs.c.created_at)).where(jobs.c.state == JobState.QUEUED.value)).scalar()
            )
            running = conn.execute(
                select(func.count())
                .select_from(job_targets.join(jobs, jobs.c.id == job_targets.c.job_id))
                .where(jobs.c.state == JobState.RUNNING.value, job_targets.c.state == "RUNNING")
            ).scalar_one()
        return counts, (utcnow() - oldest).total_seconds() if oldest else None, int(running)

    # -- writing: API side ---------------------------------------------------------------------------
    def create(self, request: dict[str, Any], sealed: bytes | None, targets: list[tuple[str, str, str]]) -> str:
        job_id = str(uuid.uuid4())
        now = utcnow()
        with self.engine.begin() as conn:
            conn.execute(
                insert(jobs).values(
                    id=job_id,
                    state=JobState.QUEUED.value,
                    created_at=now,
                    started_at=now,
                    updated_at=now,
                    request=request,
                    secrets=sealed,
                    attempts=0,
                    cancel_requested=False,
                )
            )
            if targets:  # an empty list would make SQLAlchemy run one bare INSERT
                conn.execute(
                    insert(job_targets),
                    [
                        {
                            "job_id": job_id,
                            "idx": i,
                            "endpoint": e,
                            "repository": r,
                            "ref": ref,
                            "state": "PENDING",
                            "bytes_done": 0,
                            "bytes_total": 0,
                            "attempts": 0,
                            "retries": 0,
                            "updated_at": now,
                        }
                        for i, (e, r, ref) in enumerate(targets)
                    ],
                )
        return job_id

    def request_cancel(self, job_id: str) -> JobRecord | None:
        """QUEUED → CANCELLED at once; RUNNING → flagged for its worker; final states unchanged."""
        now = utcnow()
        with self.engine.begin() as conn:
            cancelled = conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.state == JobState.QUEUED.value)
                .values(state=JobState.CANCELLED.value, finished_at=now, updated_at=now, error="cancelled by user")
            ).rowcount
            if cancelled:
                _settle_targets(conn, [job_id], JobState.CANCELLED, None, now)
            conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.state == JobState.RUNNING.value)
                .values(cancel_requested=True, updated_at=now)
            )
        return self.get(job_id)

    def retry_failed(self, job_id: str) -> JobRecord | None:
        """A FAILED or CANCELLED job back to QUEUED; its FAILED (and unfinished) targets start over.

        Targets FINISHED or SKIPPED stay as they are, so the worker does not redo them.
        Returns None when the job is not in a state that can be retried.
        """
        now = utcnow()
        ended = (JobState.FAILED.value, JobState.CANCELLED.value)
        with self.engine.begin() as conn:
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
                .where(job_targets.c.job_id == job_id, job_targets.c.state.not_in(("FINISHED", "SKIPPED")))
                .values(state="PENDING", bytes_done=0, attempts=0, error=None, updated_at=now)
            )
        return self.get(job_id)

    def purge_finished(self, older_than: dt.timedelta) -> int:
        """Delete jobs that ended more than ``older_than`` ago (their targets go with them)."""
        limit = utcnow() - older_than
        final = [s.value for s in FINAL_STATES]
        with self.engine.begin() as conn:
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
        with self.engine.begin() as conn:
            conn.execute(update(jobs).where(jobs.c.id == job_id).values(notifications=deliveries))

    # -- writing: worker side (fenced) ---------------------------------------------------------------
    def _owned(self, job_id: str, worker_id: str) -> Any:
        return and_(jobs.c.id == job_id, jobs.c.worker_id == worker_id, jobs.c.state == JobState.RUNNING.value)

    def claim(self, worker_id: str) -> JobRecord | None:
        """Atomically take the oldest runnable QUEUED job, or None."""
        now = utcnow()
        candidate = (
            select(jobs.c.id)
            .where(jobs.c.state == JobState.QUEUED.value)
            .where((jobs.c.not_before.is_(None)) | (jobs.c.not_before <= now))
            .order_by(jobs.c.created_at)
            .limit(1)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        stmt = (
            update(jobs)
            .where(jobs.c.id == candidate, jobs.c.state == JobState.QUEUED.value)
            .values(
                state=JobState.RUNNING.value,
                worker_id=worker_id,
                heartbeat_at=now,
                running_at=now,
                updated_at=now,
                attempts=jobs.c.attempts + 1,
            )
            .returning(jobs.c.id)
        )
        with self.engine.begin() as conn:
            job_id = conn.execute(stmt).scalar()
        return self.get(job_id) if job_id else None

    def save_progress(
        self, job_id: str, worker_id: str, updates: list[TargetUpdate], source_digest: str | None = None
    ) -> tuple[bool, bool]:
        """Persist target progress and the heartbeat; returns (still owned, cancel requested)."""
        now = utcnow()
        with self.engine.begin() as conn:
            values: dict[str, Any] = {"updated_at": now, "heartbeat_at": now}
            if source_digest:
                values["source_digest"] = source_digest
            if conn.execute(update(jobs).where(self._owned(job_id, worker_id)).values(**values)).rowcount != 1:
                return False, False
            for u in updates:
                conn.execute(
                    update(job_targets)
                    .where(job_targets.c.job_id == job_id, job_targets.c.idx == u.idx)
                    .values(
                        state=u.state,
                        bytes_done=u.bytes_done,
                        bytes_total=u.bytes_total,
                        attempts=u.attempts,
                        error=u.error,
                        retries=u.retries,
                        reason=u.reason,
                        referrers=u.referrers,
                        referrers_left_out=list(u.referrers_left_out) or None,
                        finished_at=u.finished_at,
                        blobs_detached=u.blobs_detached,
                        detached_reason=u.detached_reason,
                        updated_at=now,
                    )
                )
            cancel = conn.execute(select(jobs.c.cancel_requested).where(jobs.c.id == job_id)).scalar()
        return True, bool(cancel)

    def finish(self, job_id: str, worker_id: str, state: JobState, error: str | None = None) -> bool:
        now = utcnow()
        with self.engine.begin() as conn:
            n = conn.execute(
                update(jobs)
                .where(self._owned(job_id, worker_id))
                .values(
                    state=state.value,
                    finished_at=now,
                    updated_at=now,
                    error=error,
                    worker_id=None,
                )
            ).rowcount
            if n == 1:
                _settle_targets(conn, [job_id], state, error, now)
        return n == 1

    def release(self, job_id: str, worker_id: str) -> bool:
        """Graceful shutdown: the job goes back to QUEUED, this attempt not counted."""
        with self.engine.begin() as conn:
            n = conn.execute(
                update(jobs)
                .where(self._owned(job_id, worker_id))
                .values(
                    state=JobState.QUEUED.value,
                    worker_id=None,
                    updated_at=utcnow(),
                    attempts=jobs.c.attempts - 1,
                )
            ).rowcount
            if n == 1:
                _requeue_targets(conn, [job_id])
        return n == 1

    def requeue_stale(self, stale_after: float, max_attempts: int) -> list[str]:
        """Jobs whose worker stopped heartbeating: requeue, or FAIL after ``max_attempts`` claims."""
        now = utcnow()
        limit = now - dt.timedelta(seconds=stale_after)
        stale = and_(jobs.c.state == JobState.RUNNING.value, jobs.c.heartbeat_at < limit)
        with self.engine.begin() as conn:
            ids = [r[0] for r in conn.execute(select(jobs.c.id).where(stale).with_for_update(skip_locked=True))]
            if not ids:
                return []
            given_up = f"worker stopped responding; gave up after {max_attempts} attempts"
            failed = conn.execute(
                update(jobs)
                .where(stale, jobs.c.id.in_(ids), jobs.c.attempts >= max_attempts)
                .values(state=JobState.FAILED.value, finished_at=now, updated_at=now, worker_id=None, error=given_up)
                .returning(jobs.c.id)
            ).scalars()
            _settle_targets(conn, list(failed), JobState.FAILED, given_up, now)
            conn.execute(
                update(jobs)
                .where(stale, jobs.c.id.in_(ids))
                .values(state=JobState.QUEUED.value, worker_id=None, updated_at=now)
            )
            _requeue_targets(conn, ids)
        for i in ids:
            log.warning("job %s: its worker stopped heartbeating; requeued", i)
        return ids

    def is_final(self, state: str) -> bool:
        return state in {s.value for s in FINAL_STATES}


def _settle_targets(conn: Connection, ids: list[str], state: JobState, error: str | None, now: dt.datetime) -> None:
    """A job that ended leaves no target QUEUED or RUNNING: they end with it (FAILED or CANCELLED)."""
    if not ids or state is JobState.FINISHED:
        return
    conn.execute(
        update(job_targets)
        .where(job_targets.c.job_id.in_(ids), job_targets.c.state.not_in(FINAL_TARGET_STATES))
        .values(state=state.value, error=func.coalesce(job_targets.c.error, error), updated_at=now)
    )


def _requeue_targets(conn: Connection, ids: list[str]) -> None:
    """A job back in the queue has no target still RUNNING: they wait (QUEUED) with it."""
    conn.execute(
        update(job_targets)
        .where(job_targets.c.job_id.in_(ids), job_targets.c.state == "RUNNING")
        .values(state="PENDING", updated_at=utcnow())
    )
