"""The statements every job sends, built once per store with bound parameters (issue 17: a job's own CPU).

Building a SQLAlchemy statement coerces every clause and value, and executing a new statement
object walks it again for its cache key: for the claim that was ~0.6 ms of Python against ~0.05 ms
in SQLite. A statement object built once keeps its cache key, so running it again with new
parameters costs the execution only. Values (ids, times, states, errors) are always parameters,
never literals; the database's clock (``func.now()`` on PostgreSQL) stays inside the statement,
as ``Clock`` puts it there for every other query.

Used by the job path: create, claim, progress, finish and the reads of job rows (status GETs).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import DateTime, and_, bindparam, func, insert, or_, select, update
from sqlalchemy.sql.dml import Insert, Update
from sqlalchemy.sql.elements import BindParameter, ColumnElement
from sqlalchemy.sql.selectable import Select

from regcast.jobs.models import JobState, job_targets, jobs, workers

_HELD = (JobState.RUNNING.value, JobState.QUEUED.value)


def _now(postgres: bool) -> ColumnElement[dt.datetime]:
    """The liveness clock: the database's on PostgreSQL, the ``now`` parameter (this process's) on SQLite."""
    if postgres:
        return func.now()
    return bindparam("now", type_=DateTime(timezone=True))


def _fenced(**values: object) -> Update:
    """An UPDATE of the job row ``job_id`` that hits only while the claim of ``generation`` holds it
    (RUNNING, or QUEUED since: a requeue it takes back); ``updated_at`` is the ``updated`` parameter."""
    held = and_(
        jobs.c.id == bindparam("job_id"),
        jobs.c.claim_generation == bindparam("generation"),
        jobs.c.state.in_(_HELD),
    )
    return update(jobs).where(held).values(updated_at=bindparam("updated", type_=DateTime(timezone=True)), **values)


@dataclass(frozen=True)
class Statements:
    """One store's statements (the dialect decides where ``now`` comes from)."""

    insert_job: Insert
    insert_targets: Insert
    jobs_by_id: Select[tuple[object, ...]]  # parameter ``ids`` (a list)
    targets_of: Select[tuple[object, ...]]  # parameter ``ids`` (a list)
    claim: Update  # parameters ``claimer``, ``limit``, ``updated`` (+ ``now`` on SQLite)
    progress: Update  # parameters of ``_fenced`` + ``claimer`` (+ ``now``); answers ``cancel_requested``
    progress_digest: Update  # the same, and ``digest``
    finish: Update  # parameters of ``_fenced`` + ``new_state``, ``finished``, ``err``
    finish_digest: Update  # the same, and ``digest``

    @classmethod
    def build(cls, postgres: bool) -> Statements:
        now = _now(postgres)
        ids: BindParameter[str] = bindparam("ids", expanding=True)
        running = {"state": JobState.RUNNING.value, "worker_id": bindparam("claimer"), "heartbeat_at": now}
        progress = _fenced(**running).returning(jobs.c.cancel_requested)
        final = {
            "state": bindparam("new_state"),
            "worker_id": None,
            "finished_at": bindparam("finished", type_=DateTime(timezone=True)),
            "error": bindparam("err"),
        }
        finish = _fenced(**final)
        return cls(
            insert_job=insert(jobs),
            insert_targets=insert(job_targets),
            jobs_by_id=select(jobs).where(jobs.c.id.in_(ids)).order_by(jobs.c.created_at, jobs.c.id),
            targets_of=select(job_targets)
            .where(job_targets.c.job_id.in_(ids))
            .order_by(job_targets.c.job_id, job_targets.c.idx),
            claim=_claim(postgres, now),
            progress=progress,
            progress_digest=progress.values(source_digest=bindparam("digest")),
            finish=finish,
            finish_digest=finish.values(source_digest=bindparam("digest")),
        )


def _claim(postgres: bool, now: ColumnElement[dt.datetime]) -> Update:
    """Take up to ``limit`` of the oldest claimable QUEUED jobs for the registered worker ``claimer``,
    answering the rows as written (no SELECT of them again)."""
    candidates = (
        select(jobs.c.id)
        .where(jobs.c.state == JobState.QUEUED.value)
        .where(or_(jobs.c.not_before.is_(None), jobs.c.not_before <= now))
        .where(select(workers.c.id).where(workers.c.id == bindparam("claimer")).exists())
        .order_by(jobs.c.created_at)
        .limit(bindparam("limit"))
        .with_for_update(skip_locked=True)
        .cte("claimable")
    )
    if postgres:  # evaluated once: a rescanned LIMIT ... SKIP LOCKED subquery can return more rows
        candidates = candidates.prefix_with("MATERIALIZED")
    return (
        update(jobs)
        .where(jobs.c.id.in_(select(candidates.c.id)), jobs.c.state == JobState.QUEUED.value)
        .values(
            state=JobState.RUNNING.value,
            worker_id=bindparam("claimer"),
            heartbeat_at=now,
            running_at=now,
            updated_at=bindparam("updated", type_=DateTime(timezone=True)),
            not_before=None,
            attempts=jobs.c.attempts + 1,
            claim_generation=jobs.c.claim_generation + 1,
        )
        .returning(*jobs.c)
    )
