"""The job service's store: ``JobStore``, all SQL of jobs, for SQLite and PostgreSQL alike (one code path).

Every method is synchronous (async code runs it in a thread), bounded by the store's timeout,
and raises only ``JobStoreUnavailable`` / ``JobError`` (translated in ``_db.boundary``), never a
SQLAlchemy error. States come back as ``JobState`` / ``TargetState``.

Here: the schema (migrate, ping), reads, and the API's writes (create, cancel). Its parts:
``_core.py`` (engine, ``Database.tx``, NOTIFY), ``_rows.py`` (rows <-> records), ``_claims.py``
(the atomic claim and the writes fenced by its generation), ``_workers.py`` (worker rows,
heartbeats and the reaper on the database's clock), ``store_ops.py`` (operators' queries).
"""

from __future__ import annotations

import ast
import uuid
from importlib import resources
from typing import Any

from sqlalchemy import and_, func, inspect, or_, select, text, true, update
from sqlalchemy.sql.elements import ColumnElement

from regcast import __version__
from regcast._exceptions import SchemaUnknown
from regcast.jobs._claims import Claims
from regcast.jobs._core import CHANNEL
from regcast.jobs._db import failure_reason, utcnow
from regcast.jobs._rows import get_jobs, job_records
from regcast.jobs._workers import WorkerRows
from regcast.jobs.models import FINAL_STATES, JobState, job_targets, jobs
from regcast.jobs.records import Claim, JobRecord, TargetRecord, TargetUpdate, WorkerRecord
from regcast.jobs.store_ops import OpsQueries, settle_targets
from regcast.transfer.progress import TargetState

__all__ = [
    "CHANNEL",
    "Claim",
    "JobRecord",
    "JobStore",
    "TargetRecord",
    "TargetUpdate",
    "WorkerRecord",
    "failure_reason",
    "head_revision",
    "utcnow",
]


def _revision_chain() -> dict[str, str | None] | None:
    """Each revision of ``migrations/versions`` -> its ``down_revision``, read from the files' assignments
    (no Alembic import); None if a file holds something unexpected (a merge): Alembic decides then."""
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
            return None
        revisions[rev] = down
    return revisions


def head_revision() -> str | None:
    """The newest revision of ``migrations/versions`` read from the files' ``revision`` and
    ``down_revision`` assignments (no Alembic import); None unless they form one chain with one head."""
    revisions = _revision_chain()
    if revisions is None:
        return None
    heads = set(revisions) - {d for d in revisions.values() if d is not None}
    return heads.pop() if len(heads) == 1 else None


class JobStore(Claims, WorkerRows, OpsQueries):
    # -- schema and health ----------------------------------------------------------------------
    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision (safe to run on every start).

        A schema already at the newest revision is left alone without importing Alembic: its
        modules would stay in the service's memory for nothing (about 10 MB, #17).
        """
        if self._at_head():
            return
        self._known_schema()
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

    def _at_head(self, timeout: float | None = None) -> bool:
        head = head_revision()
        with self._tx(timeout) as conn:
            if head is None or not inspect(conn).has_table("alembic_version"):
                return False
            return [r[0] for r in conn.execute(text("SELECT version_num FROM alembic_version"))] == [head]

    def check_schema(self, timeout: float | None = None) -> str | None:
        """None when the schema is at this regcast's newest revision, else the older one found ("none":
        an empty database), to be migrated; ``SchemaUnknown`` if a newer regcast wrote it. Reads only."""
        if self._at_head(timeout):
            return None
        return self._known_schema(timeout)

    def _known_schema(self, timeout: float | None = None) -> str:
        with self._tx(timeout) as conn:
            found = (
                [str(r[0]) for r in conn.execute(text("SELECT version_num FROM alembic_version"))]
                if inspect(conn).has_table("alembic_version")
                else []
            )
        known = _revision_chain()
        unknown = [rev for rev in found if known is not None and rev not in known]
        if unknown:
            raise SchemaUnknown(
                f"database {self.label} has schema revision {', '.join(unknown)}, which this regcast "
                f"({__version__}) does not know: a newer regcast wrote it; run that version or a newer one"
            )
        return ", ".join(found) or "none"

    def check_writable(self) -> None:
        """A write that changes nothing: an SQLite file opened read-only (or on a read-only mount) fails
        here, at start, rather than in every heartbeat and claim after."""
        with self._tx() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = version_num"))

    def ping(self, timeout: float | None = None) -> None:
        with self._tx(timeout) as conn:
            conn.execute(select(func.count()).select_from(jobs).where(jobs.c.id == ""))

    # -- reading ---------------------------------------------------------------------------------
    def get(self, job_id: str) -> JobRecord | None:
        with self._tx() as conn:
            found = get_jobs(conn, [job_id], self.sql)
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
            return job_records(conn, rows, self.sql), int(total)

    @staticmethod
    def is_final(state: JobState | str) -> bool:
        return JobState(state) in FINAL_STATES

    # -- writing: API side ---------------------------------------------------------------------------
    def create(self, request: dict[str, Any], sealed: bytes | None, targets: list[tuple[str, str, str]]) -> str:
        job_id = str(uuid.uuid4())
        now = utcnow()
        with self._tx() as conn:
            conn.execute(
                self.sql.insert_job,
                {
                    "id": job_id,
                    "state": JobState.QUEUED.value,
                    "created_at": now,
                    "started_at": now,
                    "updated_at": now,
                    "request": request,
                    "secrets": sealed,
                    "attempts": 0,
                    "cancel_requested": False,
                },
            )
            if targets:  # an empty list would make SQLAlchemy run one bare INSERT
                conn.execute(
                    self.sql.insert_targets,
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
        return self.cancel_job(job_id)[0]

    def cancel_job(self, job_id: str) -> tuple[JobRecord | None, bool]:
        """``request_cancel``, and whether this call ended the job (QUEUED → CANCELLED here): only then is its
        notification the caller's (a second DELETE, or a worker concluding a cancel, must not notify again).

        The flag is set first, on a QUEUED or RUNNING row: that UPDATE waits for a worker's write in
        flight (a release, a retry for later, a reap: RUNNING → QUEUED) and takes the row as it then is,
        so either the flag stands on a RUNNING job or the next statement finds it QUEUED. Flagging RUNNING
        only, after trying QUEUED, lost the cancel on PostgreSQL when the job went back to the queue
        between the two (each statement read the row before the other's commit)."""
        now = utcnow()
        with self._tx() as conn:
            conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.state.in_([JobState.QUEUED.value, JobState.RUNNING.value]))
                .values(cancel_requested=True, updated_at=now)
            )
            cancelled = conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.state == JobState.QUEUED.value)
                .values(state=JobState.CANCELLED.value, finished_at=now, updated_at=now, error="cancelled by user")
            ).rowcount
            if cancelled:
                settle_targets(conn, [job_id], JobState.CANCELLED, None, now)
            found = get_jobs(conn, [job_id], self.sql)
        return (found[0] if found else None), bool(cancelled)
