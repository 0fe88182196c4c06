"""Rows <-> records of the job store: one mapping each way, so a new column is mapped in one place.

``jobs`` / ``job_targets`` rows become ``JobRecord`` / ``TargetRecord`` (timestamps made aware,
unknown target states read as PENDING); a ``TargetUpdate`` becomes the values of its row.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Any, TypeVar

from sqlalchemy.engine import Connection, Row

from regcast.jobs._db import as_utc
from regcast.jobs._statements import Statements
from regcast.jobs.models import JobState
from regcast.jobs.records import JobRecord, TargetRecord, TargetUpdate
from regcast.transfer.progress import TargetState

S = TypeVar("S", bound=enum.StrEnum)


def stored_state(kind: type[S], value: str, unknown: S) -> S:
    """A state column as its enum; a value this code does not know (a newer writer's) reads as ``unknown``.

    The one reader of stored states: target rows here (unknown: PENDING), job states of a mirror run
    (``mirrors/store.py``, unknown: QUEUED)."""
    return kind(value) if value in kind.__members__ else unknown


def job_record(row: Row[Any], targets: list[TargetRecord]) -> JobRecord:
    m = row._mapping
    created, started, updated = as_utc(m["created_at"]), as_utc(m["started_at"]), as_utc(m["updated_at"])
    assert created and started and updated
    return JobRecord(
        id=m["id"],
        state=JobState(m["state"]),
        created_at=created,
        started_at=started,
        running_at=as_utc(m["running_at"]),
        finished_at=as_utc(m["finished_at"]),
        updated_at=updated,
        request=m["request"],
        secrets=m["secrets"],
        source_digest=m["source_digest"],
        attempts=m["attempts"],
        worker_id=m["worker_id"],
        heartbeat_at=as_utc(m["heartbeat_at"]),
        cancel_requested=bool(m["cancel_requested"]),
        error=m["error"],
        targets=targets,
        not_before=as_utc(m["not_before"]),
        claim_generation=m["claim_generation"],
        notifications=list(m["notifications"] or []),
    )


def target_record(row: Row[Any]) -> TargetRecord:
    m = row._mapping
    return TargetRecord(
        m["idx"],
        m["endpoint"],
        m["repository"],
        m["ref"],
        stored_state(TargetState, m["state"], TargetState.PENDING),
        bytes_done=m["bytes_done"],
        bytes_total=m["bytes_total"],
        attempts=m["attempts"],
        error=m["error"],
        retries=m["retries"],
        retryable=bool(m["retryable"]),
        reason=m["reason"],
        referrers=m["referrers"],
        referrers_left_out=list(m["referrers_left_out"] or []),
        finished_at=as_utc(m["finished_at"]),
        blobs_detached=m["blobs_detached"] or 0,
        detached_reason=m["detached_reason"],
        waiting=m["waiting"],
        waiting_until=as_utc(m["waiting_until"]),
        tag_pushed=bool(m["tag_pushed"]),
    )


def target_values(u: TargetUpdate) -> dict[str, Any]:
    """The ``job_targets`` columns a progress write sets (``updated_at`` is the writer's)."""
    return {
        "state": u.state.value,
        "bytes_done": u.bytes_done,
        "bytes_total": u.bytes_total,
        "attempts": u.attempts,
        "error": u.error,
        "retries": u.retries,
        "retryable": u.retryable,
        "reason": u.reason,
        "referrers": u.referrers,
        "referrers_left_out": list(u.referrers_left_out) or None,
        "finished_at": u.finished_at,
        "blobs_detached": u.blobs_detached,
        "detached_reason": u.detached_reason,
        "waiting": u.waiting,
        "waiting_until": u.waiting_until,
        "tag_pushed": u.tag_pushed,
    }


def job_records(conn: Connection, rows: Sequence[Row[Any]], sql: Statements) -> list[JobRecord]:
    """Records of these ``jobs`` rows, in their order, with their targets (one query for all)."""
    ids = [r._mapping["id"] for r in rows]
    targets: dict[str, list[TargetRecord]] = {i: [] for i in ids}
    if ids:
        for r in conn.execute(sql.targets_of, {"ids": ids}):
            targets[r._mapping["job_id"]].append(target_record(r))
    return [job_record(r, targets[r._mapping["id"]]) for r in rows]


def get_jobs(conn: Connection, ids: list[str], sql: Statements) -> list[JobRecord]:
    """The records of these jobs, oldest first (absent ids left out)."""
    return job_records(conn, conn.execute(sql.jobs_by_id, {"ids": ids}).all(), sql)
