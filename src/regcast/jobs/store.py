"""All SQL of the job service, for SQLite and PostgreSQL alike (one code path).

Every method is synchronous (async code runs it in a thread), bounded by the store's timeout,
and raises only ``JobStoreUnavailable`` / ``JobError`` (translated in ``_db.boundary``), never a
SQLAlchemy error. States come back as ``JobState`` / ``TargetState``.

Claims are one ``UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED)`` statement: atomic on
both databases. Each claim increments ``claim_generation``; every later write of the worker is
fenced by the generation it claimed, so a worker whose job was requeued and claimed by another
cannot overwrite the new owner — but one whose job was requeued only because it could not reach
the database (and was not claimed since) takes it back with its next write. Liveness (workers,
heartbeats, reaping) is judged with the database's clock; see ``docs/decisions.md``.
"""

from __future__ import annotations

import ast
import contextlib
import datetime as dt
import logging
import uuid
from collections.abc import Iterable, Iterator, Sequence
from importlib import resources
from typing import Any

from sqlalchemy import and_, delete, func, insert, inspect, or_, select, text, true, update
from sqlalchemy.engine import Connection, Row
from sqlalchemy.sql.dml import Update
from sqlalchemy.sql.elements import ColumnElement

from regcast.jobs._db import Clock, Database, Watchdog, make_engine, utcnow
from regcast.jobs.models import FINAL_STATES, JobState, job_targets, jobs, workers
from regcast.jobs.records import Claim, JobRecord, TargetRecord, TargetUpdate, WorkerRecord
from regcast.jobs.store_ops import OpsQueries, requeue_targets, settle_targets
from regcast.transfer.progress import TargetState

__all__ = ["Claim", "JobRecord", "JobStore", "TargetRecord", "TargetUpdate", "WorkerRecord", "utcnow"]

log = logging.getLogger("regcast.jobs")
CHANNEL = "regcast_jobs"  # PostgreSQL NOTIFY channel: a job became claimable


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    """SQLite hands back naive datetimes: they were written as UTC."""
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def head_revision() -> str | None:
    """The newest revision of ``migrations/versions`` read from the files' ``revision`` and
    ``down_revision`` assignments (no Alembic import); None unless they form one chain with one head."""
    revisions: dict[str, str | None] = {}
    for script in (resources.files("regcast.jobs") / "migrations" / "versions").iterdir():
        if not script.name.endswith(".py") or script.name.startswith("_"):
            continue
        found: dict[str, object] = {}
        for node in ast.parse(script.read_text()).body:
            if isinstance(node, ast.Assign | ast.AnnAssign) and isinstance(node.value, ast.Constant):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                found.update({t.id: node.value.value for t in targets if isinstance(t, ast.Name)})
        rev, down = found.get("revision"), found.get("down_revision")
        if not isinstance(rev, str) or not (down is None or isinstance(down, str)):
            return None  # a merge or something unexpected: Alembic decides
        revisions[rev] = down
    heads = set(revisions) - {d for d in revisions.values() if d is not None}
    return heads.pop() if len(heads) == 1 else None


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


def _target_state(value: str) -> TargetState:
    return TargetState(value) if value in TargetState.__members__ else TargetState.PENDING


class JobStore(OpsQueries):
    def __init__(self, url: str, *, timeout: float = 5.0) -> None:
        self.url = url
        self.timeout = timeout
        self._watchdog = Watchdog()
        self.engine = make_engine(url, timeout, self._watchdog)
        self.db = Database(self.engine, self._watchdog, timeout)  # shared with the mirror store
        self.postgres = self.engine.dialect.name == "postgresql"
        self.clock = Clock(self.postgres)

    def close(self) -> None:
        self.engine.dispose()
        self._watchdog.close()

    @contextlib.contextmanager
    def _tx(self, timeout: float | None = None) -> Iterator[Connection]:
        """One transaction under the deadline; commits on success."""
        with self.db.tx(timeout) as conn:
            yield conn

    def _notify(self, conn: Connection) -> None:
        """Wake idle workers of every process (delivered at commit); polling covers SQLite."""
        if self.postgres:
            conn.execute(select(func.pg_notify(CHANNEL, "")))

    # -- schema and health ----------------------------------------------------------------------
    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision (safe to run on every start).

        A schema already at the newest revision is left alone without importing Alembic: its
        modules would stay in the service's memory for nothing (about 10 MB, #17).
        """
        if self._at_head():
            return
        from alembic import command
        from alembic.config import Config as AlembicConfig

        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(resources.files("regcast.jobs") / "migrations"))
        with self._tx(timeout=max(60.0, self.timeout)) as conn:
            if self.postgres:
                # several replicas starting together: one migrates, the others wait
                conn.execute(text("SET LOCAL lock_timeout = 0"))
                conn.execute(text("SET LOCAL statement_timeout = 0"))
                conn.execute(text("SELECT pg_advisory_xact_lock(727274)"))
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    def _at_head(self) -> bool:
        head = head_revision()
        with self._tx() as conn:
            if head is None or not inspect(conn).has_table("alembic_version"):
                return False
            return [r[0] for r in conn.execute(text("SELECT version_num FROM alembic_version"))] == [head]

    def ping(self, timeout: float | None = None) -> None:
        with self._tx(timeout) as conn:
            conn.execute(select(func.count()).select_from(jobs).where(jobs.c.id == ""))

    # -- reading ---------------------------------------------------------------------------------
    @staticmethod
    def _record(row: Row[Any], targets: list[TargetRecord]) -> JobRecord:
        m = row._mapping
        created, started, updated = _utc(m["created_at"]), _utc(m["started_at"]), _utc(m["updated_at"])
        assert created and started and updated
        return JobRecord(
            id=m["id"],
            state=JobState(m["state"]),
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
            not_before=_utc(m["not_before"]),
            claim_generation=m["claim_generation"],
            notifications=list(m["notifications"] or []),
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
                    _target_state(m["state"]),
                    m["bytes_done"],
                    m["bytes_total"],
                    m["attempts"],
                    m["error"],
                    m["retries"],
                    bool(m["retryable"]),
                    m["reason"],
                    m["referrers"],
                    list(m["referrers_left_out"] or []),
                    _utc(m["finished_at"]),
                    m["blobs_detached"] or 0,
                    m["detached_reason"],
                )
            )
        return out

    def _get(self, conn: Connection, ids: list[str]) -> list[JobRecord]:
        rows = conn.execute(select(jobs).where(jobs.c.id.in_(ids)).order_by(jobs.c.created_at, jobs.c.id)).all()
        targets = self._targets(conn, [r._mapping["id"] for r in rows])
        return [self._record(r, targets[r._mapping["id"]]) for r in rows]

    def get(self, job_id: str) -> JobRecord | None:
        with self._tx() as conn:
            found = self._get(conn, [job_id])
        return found[0] if found else None

    def list_jobs(
        self,
        state: JobState | str | None = None,
        limit: int = 50,
        offset: int = 0,
        *,
        image: str | None = None,
        target: str | None = None,
    ) -> tuple[list[JobRecord], int]:
        """Newest first; filters: ``state``, ``image`` (in the source or a target repository),
        ``target`` (in a target endpoint); the last two match substrings. Returns (page, total)."""
        where: list[ColumnElement[bool]] = [jobs.c.state == JobState(state).value] if state else [true()]
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
        with self._tx() as conn:
            total = conn.execute(select(func.count()).select_from(jobs).where(cond)).scalar_one()
            rows = conn.execute(
                select(jobs).where(cond).order_by(jobs.c.created_at.desc(), jobs.c.id).limit(limit).offset(offset)
            ).all()
            targets = self._targets(conn, [r._mapping["id"] for r in rows])
            return [self._record(r, targets[r._mapping["id"]]) for r in rows], int(total)

    @staticmethod
    def is_final(state: JobState | str) -> bool:
        return JobState(state) in FINAL_STATES

    # -- writing: API side ---------------------------------------------------------------------------
    def create(self, request: dict[str, Any], sealed: bytes | None, targets: list[tuple[str, str, str]]) -> str:
        job_id = str(uuid.uuid4())
        now = utcnow()
        with self._tx() as conn:
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
                            "state": TargetState.PENDING.value,
                            "updated_at": now,
                        }
                        for i, (e, r, ref) in enumerate(targets)
                    ],
                )
            self._notify(conn)
        return job_id

    def request_cancel(self, job_id: str) -> JobRecord | None:
        """QUEUED → CANCELLED at once; RUNNING → flagged for its worker; final states unchanged."""
        now = utcnow()
        with self._tx() as conn:
            cancelled = conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.state == JobState.QUEUED.value)
                .values(state=JobState.CANCELLED.value, finished_at=now, updated_at=now, error="cancelled by user")
            ).rowcount
            if cancelled:
                settle_targets(conn, [job_id], JobState.CANCELLED, None, now)
            conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.state == JobState.RUNNING.value)
                .values(cancel_requested=True, updated_at=now)
            )
            found = self._get(conn, [job_id])
        return found[0] if found else None

    # -- workers: registration, heartbeats, reaping (database clock) ----------------------------------
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

    def reap(self, stale_after: float | None, max_attempts: int, dead: Iterable[str] = ()) -> list[str]:
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
            failed = conn.execute(
                update(jobs)
                .where(jobs.c.id.in_(ids), jobs.c.state == JobState.RUNNING.value, jobs.c.attempts >= max_attempts)
                .values(state=JobState.FAILED.value, finished_at=now, updated_at=now, worker_id=None, error=given_up)
                .returning(jobs.c.id)
            ).scalars()
            settle_targets(conn, list(failed), JobState.FAILED, given_up, now)
            conn.execute(
                update(jobs)
                .where(jobs.c.id.in_(ids), jobs.c.state == JobState.RUNNING.value)
                .values(state=JobState.QUEUED.value, worker_id=None, updated_at=now)
            )
            requeue_targets(conn, ids)
            self._notify(conn)
        for i in ids:
            log.warning("job %s: its worker is gone; requeued", i)
        return ids

    # -- writing: worker side (fenced by claim generation) ---------------------------------------------
    def claim(self, worker_id: str, limit: int = 1) -> list[JobRecord]:
        """Atomically take up to ``limit`` of the oldest claimable QUEUED jobs for a registered worker."""
        now = self.clock.now()
        candidates = (
            select(jobs.c.id)
            .where(jobs.c.state == JobState.QUEUED.value)
            .where(or_(jobs.c.not_before.is_(None), jobs.c.not_before <= now))
            .where(select(workers.c.id).where(workers.c.id == worker_id).exists())
            .order_by(jobs.c.created_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
            .cte("claimable")
        )
        if self.postgres:  # evaluated once: a rescanned LIMIT ... SKIP LOCKED subquery can return more rows
            candidates = candidates.prefix_with("MATERIALIZED")
        stmt = (
            update(jobs)
            .where(jobs.c.id.in_(select(candidates.c.id)), jobs.c.state == JobState.QUEUED.value)
            .values(
                state=JobState.RUNNING.value,
                worker_id=worker_id,
                heartbeat_at=now,
                running_at=now,
                updated_at=utcnow(),
                not_before=None,
                attempts=jobs.c.attempts + 1,
                claim_generation=jobs.c.claim_generation + 1,
            )
            .returning(jobs.c.id)
        )
        with self._tx() as conn:
            ids = list(conn.execute(stmt).scalars())
            return self._get(conn, ids) if ids else []

    def _fenced(self, conn: Connection, claim: Claim, **values: Any) -> bool:
        """Write to a job this claim still holds — taking it back if it was only requeued since."""
        return conn.execute(_fenced_update(claim, **values)).rowcount == 1

    def save_progress(
        self, claim: Claim, updates: Sequence[TargetUpdate], source_digest: str | None = None
    ) -> tuple[bool, bool]:
        """Persist target progress and the job's heartbeat; returns (still held, cancel requested).

        ``updates`` need only hold the targets that changed since the last save (the worker keeps
        what it wrote): an unchanged target costs no statement.
        """
        values: dict[str, Any] = {"heartbeat_at": self.clock.now()}
        if source_digest:
            values["source_digest"] = source_digest
        with self._tx() as conn:
            held = conn.execute(_fenced_update(claim, **values).returning(jobs.c.cancel_requested)).first()
            if held is None:
                return False, False
            self._write_targets(conn, claim.job_id, updates)
        return True, bool(held[0])

    @staticmethod
    def _write_targets(conn: Connection, job_id: str, updates: Sequence[TargetUpdate]) -> None:
        now = utcnow()
        for u in updates:
            conn.execute(
                update(job_targets)
                .where(job_targets.c.job_id == job_id, job_targets.c.idx == u.idx)
                .values(
                    state=u.state.value,
                    bytes_done=u.bytes_done,
                    bytes_total=u.bytes_total,
                    attempts=u.attempts,
                    error=u.error,
                    retries=u.retries,
                    retryable=u.retryable,
                    reason=u.reason,
                    referrers=u.referrers,
                    referrers_left_out=list(u.referrers_left_out) or None,
                    finished_at=u.finished_at,
                    blobs_detached=u.blobs_detached,
                    detached_reason=u.detached_reason,
                    updated_at=now,
                )
            )

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
        extra = {"source_digest": source_digest} if source_digest else {}
        with self._tx() as conn:
            if not self._fenced(conn, claim, state=state.value, finished_at=now, error=error, **extra):
                return False
            self._write_targets(conn, claim.job_id, updates)
            settle_targets(conn, [claim.job_id], state, error, now)
        return True

    def release(self, claim: Claim, updates: Sequence[TargetUpdate] = ()) -> bool:
        """Graceful shutdown: the job goes back to QUEUED at once, this attempt not counted."""
        with self._tx() as conn:
            ok = self._fenced(conn, claim, state=JobState.QUEUED.value, attempts=jobs.c.attempts - 1)
            if ok:
                self._write_targets(conn, claim.job_id, updates)
                requeue_targets(conn, [claim.job_id])
                self._notify(conn)
        return ok

    def retry_later(self, claim: Claim, delay: float, updates: Sequence[TargetUpdate] = ()) -> bool:
        """Back to QUEUED, claimable by any worker once ``delay`` seconds have passed (this attempt counted)."""
        with self._tx() as conn:
            ok = self._fenced(conn, claim, state=JobState.QUEUED.value, not_before=self.clock.later(delay))
            if ok:
                self._write_targets(conn, claim.job_id, updates)
        return ok
