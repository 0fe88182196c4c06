"""All SQL of stored mirrors and their runs, beside the job store (same database, same engine).

Starting a run is one transaction: insert the run under its unique key (mirror + due time;
a second replica's insert of the same key fails and it moves on), then take the mirror's lease
(``active_run IS NULL``). A mirror whose lease is held gets a SKIPPED run for that due time
instead, so a run still going is never started twice. ``settle`` ends runs whose jobs are all
final and gives the lease back; concurrent settles of one run end it once (a compare-and-set on
its state), so only one caller reports it.

Every method runs through the job store's ``Database.tx`` (``jobs/_db.py``): bounded by its
deadline, raising only ``JobStoreUnavailable`` / ``JobError``, never a SQLAlchemy error. Reads
return the records of ``mirrors/records.py`` (states as enums).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Connection

from regcast._exceptions import StoreConflict
from regcast.jobs._db import Database, as_utc, utcnow
from regcast.jobs._rows import stored_state, target_record
from regcast.jobs.models import FINAL_STATES, JobState, job_targets, jobs
from regcast.mirrors.models import RunState, Trigger, mirror_run_jobs, mirror_runs, mirrors
from regcast.mirrors.records import MirrorRecord, RunRecord, StoredMirror

__all__ = ["MirrorRecord", "MirrorStore", "RunRecord", "StoredMirror", "utcnow"]


KEY_LENGTH = 300  # mirror_runs.run_key
PUT_ATTEMPTS = 3  # a put that met another replica's new row of the same name is tried again
PLANNING_TIMEOUT = dt.timedelta(minutes=15)  # a planner that died: its run fails, the lease is freed
ENDED = (RunState.FINISHED, RunState.FAILED, RunState.SKIPPED)


class MirrorStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- mirrors ------------------------------------------------------------------------------------
    def put(self, items: list[StoredMirror]) -> None:
        """Create or replace each mirror by name, all in one transaction.

        Two replicas storing one new name at once: the later INSERT meets the other's row
        (``StoreConflict``, which the API answered as a 503 "database unavailable"); the whole put is
        tried again and now replaces it, the last writer winning as for a mirror stored before.
        """
        for attempt in range(PUT_ATTEMPTS):
            try:
                self._put(items)
                return
            except StoreConflict:
                if attempt == PUT_ATTEMPTS - 1:
                    raise

    def _put(self, items: list[StoredMirror]) -> None:
        now = utcnow()
        with self.db.tx() as conn:
            for it in items:
                values = {
                    "document": it.document,
                    "sealed": it.sealed,
                    "schedule": it.schedule,
                    "interval_seconds": it.interval_seconds,
                    "updated_at": now,
                }
                done = conn.execute(update(mirrors).where(mirrors.c.name == it.name).values(**values))
                if done.rowcount == 0:
                    conn.execute(insert(mirrors).values(name=it.name, created_at=now, **values))

    @staticmethod
    def _mirror(m: Any) -> MirrorRecord:
        created, updated = as_utc(m["created_at"]), as_utc(m["updated_at"])
        assert created and updated
        return MirrorRecord(
            m["name"],
            m["document"],
            m["sealed"],
            m["schedule"],
            m["interval_seconds"],
            m["active_run"],
            created,
            updated,
        )

    def get(self, name: str) -> MirrorRecord | None:
        with self.db.tx() as conn:
            row = conn.execute(select(mirrors).where(mirrors.c.name == name)).first()
        return self._mirror(row._mapping) if row else None

    def all(self) -> list[MirrorRecord]:
        with self.db.tx() as conn:
            rows = conn.execute(select(mirrors).order_by(mirrors.c.name)).all()
        return [self._mirror(r._mapping) for r in rows]

    def delete(self, name: str) -> bool:
        with self.db.tx() as conn:
            return bool(conn.execute(delete(mirrors).where(mirrors.c.name == name)).rowcount)

    # -- runs ---------------------------------------------------------------------------------------------
    def start_run(
        self, name: str, trigger: Trigger | str, owner: str, due_at: dt.datetime | None = None
    ) -> tuple[str | None, RunRecord | None]:
        """Take the run key and the mirror's lease: (run id, None) when this caller runs it.

        (None, None): the key was taken (another replica has this due time) or the mirror is gone.
        (None, active): the lease is held by ``active`` (for a due time, a SKIPPED run records it).
        """
        run_id = str(uuid.uuid4())
        key = f"{name}@{due_at.isoformat()}" if due_at else f"{name}@manual-{run_id}"
        now = utcnow()
        row = {
            "id": run_id,
            "mirror": name,
            "run_key": key,
            "trigger": Trigger(trigger).value,
            "due_at": due_at,
            "state": RunState.PLANNING.value,
            "created_at": now,
            "owner": owner,
            "images_selected": 0,
            "images_up_to_date": 0,
            "images_skipped": 0,
            "images_failed": 0,
        }
        lease = update(mirrors).where(mirrors.c.name == name, mirrors.c.active_run.is_(None)).values(active_run=run_id)
        try:
            with self.db.tx() as conn:
                holder = conn.execute(select(mirrors.c.active_run).where(mirrors.c.name == name)).first()
                if holder is None:
                    return None, None
                if due_at is None:  # on demand: nothing recorded while another run goes on
                    if not conn.execute(lease).rowcount:
                        return None, self._run(conn, holder[0])
                    conn.execute(insert(mirror_runs).values(**row))
                    return run_id, None
                conn.execute(insert(mirror_runs).values(**row))  # the unique key: one replica gets here
                if conn.execute(lease).rowcount:
                    return run_id, None
                going = conn.execute(select(mirrors.c.active_run).where(mirrors.c.name == name)).scalar_one()
                conn.execute(
                    update(mirror_runs)
                    .where(mirror_runs.c.id == run_id)
                    .values(state=RunState.SKIPPED.value, finished_at=now, error=f"run {going} still going")
                )
                return None, self._run(conn, going) if going else None
        except StoreConflict:
            return None, None

    def start_push_run(self, name: str, key: str, owner: str, pushed_at: dt.datetime | None) -> str | None:
        """Take the run key of one pushed tag (``key``: ``<tag>@<digest>``): the run id, or None when
        the tag's latest push run has that digest already (the same push delivered again) or the
        mirror is gone.

        The tag's latest push only: a tag moved back to a digest it held before (a rollback) is a new
        push, and starts a run (``#<n>`` counts the tag's pushes); it used to be taken for a repeat,
        so the targets kept the digest rolled back from. Replicas racing on one push insert the
        same key, and one wins. A push run takes no lease: a scheduled pass still going must not hold
        back a release tag, and the two only ever copy the same digests. ``due_at`` keeps the push
        time (for the lag).
        """
        tag, _, version = key.rpartition("@")
        run_id = str(uuid.uuid4())
        row = {
            "id": run_id,
            "mirror": name,
            "run_key": "",
            "trigger": Trigger.PUSH.value,
            "due_at": pushed_at,
            "state": RunState.PLANNING.value,
            "created_at": utcnow(),
            "owner": owner,
            "images_selected": 0,
            "images_up_to_date": 0,
            "images_skipped": 0,
            "images_failed": 0,
        }
        try:
            with self.db.tx() as conn:
                if conn.execute(select(mirrors.c.name).where(mirrors.c.name == name)).first() is None:
                    return None
                run_key = self._push_key(conn, name, tag, version)
                if run_key is None:
                    return None
                conn.execute(insert(mirror_runs).values(**{**row, "run_key": run_key}))
        except StoreConflict:
            return None
        return run_id

    @staticmethod
    def _push_key(conn: Connection, name: str, tag: str, version: str) -> str | None:
        """The run key of a push of ``tag`` at ``version``, or None when the tag's latest push run was
        of that version. Keys count the tag's pushes (``#<n>`` after the first) and are computed from
        one read: replicas racing on one push compute the same key and the unique index keeps one.
        A long version is hashed, so the key fits its column with the tag's prefix whole."""
        prefix = f"{name}@push-{tag}@"
        if len(prefix) + len(version) > KEY_LENGTH - 12:
            version = "h-" + hashlib.sha256(version.encode()).hexdigest()[:40]
        if len(prefix) + len(version) > KEY_LENGTH - 12:  # a tag no registry accepts: one key per version
            return (prefix + version)[:KEY_LENGTH]
        column = mirror_runs.c.run_key
        latest = conn.execute(
            select(column)
            .where(mirror_runs.c.mirror == name, func.substr(column, 1, len(prefix)) == prefix)
            .order_by(mirror_runs.c.created_at.desc())
            .limit(1)
        ).scalar()
        if latest is None:
            return prefix + version
        held, _, count = latest[len(prefix) :].partition("#")
        if held == version:
            return None
        return f"{prefix}{version}#{int(count) + 1 if count.isdigit() else 1}"

    def link_job(self, run_id: str, job_id: str, tag: str) -> None:
        with self.db.tx() as conn:
            conn.execute(insert(mirror_run_jobs).values(run_id=run_id, job_id=job_id, tag=tag))

    def planned(
        self, run_id: str, *, selected: int, up_to_date: int, skipped: int, failed: int, error: str | None
    ) -> None:
        """Planning is over: the run's jobs are queued. Ending it is ``settle``'s, called by
        ``MirrorService.settle`` (so a run with no job still reaches ``on_run_ended``), never from here.
        Only a run still PLANNING moves on: one that settle already failed (its planner took longer
        than the planning timeout, its lease freed) stays ended, not RUNNING again with nobody to end it."""
        with self.db.tx() as conn:
            conn.execute(
                update(mirror_runs)
                .where(mirror_runs.c.id == run_id, mirror_runs.c.state == RunState.PLANNING.value)
                .values(
                    state=RunState.RUNNING.value,
                    planned_at=utcnow(),
                    images_selected=selected,
                    images_up_to_date=up_to_date,
                    images_skipped=skipped,
                    images_failed=failed,
                    error=error,
                )
            )

    def note_wait(self, run_id: str, waiting: str, until: dt.datetime) -> None:
        """The planner waits on a registry's rate limit until ``until`` (shown while the run plans)."""
        with self.db.tx() as conn:
            conn.execute(
                update(mirror_runs)
                .where(mirror_runs.c.id == run_id, mirror_runs.c.state == RunState.PLANNING.value)
                .values(waiting=waiting, waiting_until=until)
            )

    def settle(self) -> list[str]:
        """End runs whose jobs are all final (or whose planner died); free their mirrors' leases."""
        now = utcnow()
        ended: list[str] = []
        cols = (mirror_runs.c.mirror, mirror_runs.c.id, mirror_runs.c.state, mirror_runs.c.created_at)
        with self.db.tx() as conn:
            held = conn.execute(select(*cols).join(mirrors, mirror_runs.c.id == mirrors.c.active_run)).all()
            pushed = conn.execute(  # push runs hold no lease
                select(*cols).where(
                    mirror_runs.c.trigger == Trigger.PUSH.value,
                    mirror_runs.c.state.in_([RunState.PLANNING.value, RunState.RUNNING.value]),
                )
            ).all()
            for name, run_id, state, created in [*held, *pushed]:
                if self._settle_one(conn, run_id, RunState(state), as_utc(created) or now, now):
                    conn.execute(
                        update(mirrors)
                        .where(mirrors.c.name == name, mirrors.c.active_run == run_id)
                        .values(active_run=None)
                    )
                    ended.append(run_id)
        return ended

    def _settle_one(
        self, conn: Connection, run_id: str, state: RunState, created: dt.datetime, now: dt.datetime
    ) -> bool:
        """Write the final state of one run when it has one; True when this call ended it (it was still
        ``state``), False when it goes on or another settle ended it first."""
        if state is RunState.PLANNING:
            if created > now - PLANNING_TIMEOUT:
                return False
            final, error = RunState.FAILED.value, "the planning process stopped"
        else:
            states = self._job_states(conn, run_id)
            if any(s not in FINAL_STATES for s in states.values()):
                return False
            run = self._run(conn, run_id)
            bad = run is not None and (run.images_failed or run.error)
            failed = bad or any(s is not JobState.FINISHED for s in states.values())
            final, error = (RunState.FAILED.value if failed else RunState.FINISHED.value), None
        values: dict[str, Any] = {"state": final, "finished_at": now}
        if error:
            values["error"] = error
        # compare-and-set on the state read above: the rows were read without a lock, and settle runs
        # concurrently (every plan, every push-lag poll, every process's tick). On PostgreSQL the loser
        # waits on the winner's row lock, then finds the state changed: one end, one notification.
        ended = conn.execute(
            update(mirror_runs).where(mirror_runs.c.id == run_id, mirror_runs.c.state == state.value).values(**values)
        )
        return ended.rowcount == 1

    # -- reading runs ---------------------------------------------------------------------------------------
    @staticmethod
    def _job_states(conn: Connection, run_id: str) -> dict[str, JobState]:
        rows = conn.execute(
            select(jobs.c.id, jobs.c.state)
            .join(mirror_run_jobs, mirror_run_jobs.c.job_id == jobs.c.id)
            .where(mirror_run_jobs.c.run_id == run_id)
        ).all()
        return {r[0]: stored_state(JobState, r[1], JobState.QUEUED) for r in rows}

    def _run(self, conn: Connection, run_id: str) -> RunRecord | None:
        row = conn.execute(select(mirror_runs).where(mirror_runs.c.id == run_id)).first()
        return self._run_record(conn, row._mapping) if row else None

    def _run_record(self, conn: Connection, m: Any) -> RunRecord:
        created = as_utc(m["created_at"])
        assert created
        rec = RunRecord(
            m["id"],
            m["mirror"],
            Trigger(m["trigger"]),
            as_utc(m["due_at"]),
            RunState(m["state"]),
            created,
            as_utc(m["planned_at"]),
            as_utc(m["finished_at"]),
            m["images_selected"],
            m["images_up_to_date"],
            m["images_skipped"],
            m["images_failed"],
            m["owner"],
            m["error"],
        )
        rec.jobs = self._job_states(conn, rec.id)
        if rec.jobs and rec.trigger is Trigger.PUSH:
            rec.jobs_finished_at = as_utc(
                conn.execute(select(func.max(jobs.c.finished_at)).where(jobs.c.id.in_(list(rec.jobs)))).scalar()
            )
        if rec.jobs:
            total = conn.execute(
                select(func.coalesce(func.sum(job_targets.c.bytes_done), 0)).where(
                    job_targets.c.job_id.in_(list(rec.jobs))
                )
            ).scalar_one()
            rec.bytes = int(total)
        rec.waiting = self._waiting(conn, rec, m)
        return rec

    @staticmethod
    def _waiting(conn: Connection, rec: RunRecord, m: Any) -> str | None:
        """What holds the run back now: its planner's wait while it plans, else its jobs' latest one."""
        now = utcnow()
        if rec.state is RunState.PLANNING:
            until = as_utc(m["waiting_until"])
            return m["waiting"] if until is not None and until > now else None
        if rec.state is not RunState.RUNNING or not rec.jobs:
            return None
        held = job_targets.c.waiting_until.is_not(None)
        rows = conn.execute(select(job_targets).where(job_targets.c.job_id.in_(list(rec.jobs)), held)).all()
        waits = [(t.waiting_until, w) for t in map(target_record, rows) if (w := t.waiting_now(now)) is not None]
        return max(waits)[1] if waits else None

    def get_run(self, run_id: str) -> RunRecord | None:
        with self.db.tx() as conn:
            return self._run(conn, run_id)

    def runs(self, name: str, limit: int = 50) -> list[RunRecord]:
        """Newest first."""
        with self.db.tx() as conn:
            rows = conn.execute(
                select(mirror_runs)
                .where(mirror_runs.c.mirror == name)
                .order_by(mirror_runs.c.created_at.desc(), mirror_runs.c.id)
                .limit(limit)
            ).all()
            return [self._run_record(conn, r._mapping) for r in rows]

    def last_due(self, name: str) -> dt.datetime | None:
        with self.db.tx() as conn:
            value = conn.execute(
                select(func.max(mirror_runs.c.due_at)).where(
                    mirror_runs.c.mirror == name, mirror_runs.c.trigger == Trigger.SCHEDULE.value
                )
            ).scalar()
        return as_utc(value)

    def run_of_job(self, job_id: str) -> str | None:
        """The run a job belongs to (None for jobs posted directly)."""
        with self.db.tx() as conn:
            return conn.execute(select(mirror_run_jobs.c.run_id).where(mirror_run_jobs.c.job_id == job_id)).scalar()

    def ended_runs(self) -> dict[RunState, int]:
        """Ended runs by state, for the metrics (read at scrape time: every replica answers the same)."""
        with self.db.tx() as conn:
            rows = conn.execute(
                select(mirror_runs.c.state, func.count())
                .where(mirror_runs.c.state.in_([s.value for s in ENDED]))
                .group_by(mirror_runs.c.state)
            )
            return {RunState(r[0]): int(r[1]) for r in rows}
