"""A target's progress crosses three boundaries: live status -> update -> row -> record -> live status.

Each has one mapping (``TargetUpdate.of``, ``_rows.target_values``, ``_rows.target_record``,
``TargetRecord.status``); a field added to the store's types and left out of any of them loses
its value here, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from regcast.config import load_settings
from regcast.jobs.store import Claim, JobStore, TargetRecord, TargetUpdate
from regcast.transfer.progress import TargetState, TargetStatus

# Every persisted field set to a value none of the mappings would give by default.
LIVE = TargetStatus(
    "http://a:5000/v2",
    state=TargetState.FAILED,
    error="connection refused",
    reason="tag-differs",
    bytes_total=300,
    bytes_done=200,
    blobs_detached=2,
    detached_reason="lagged 1.5 s behind",
    finished_at=dt.datetime(2026, 11, 29, 12, 0, 1, 500, tzinfo=dt.UTC),
    attempts=3,
    retries=4,
    retryable=False,
    referrers=5,
    referrers_left_out=["sha256:aa: too large"],
    waiting="waiting for the rate limit of registry a:5000 until 2026-11-29T12:00:31+00:00: GET ... answered 429",
    waiting_until=dt.datetime(2026, 11, 29, 12, 0, 31, tzinfo=dt.UTC),
)
PERSISTED = [f.name for f in dataclasses.fields(TargetUpdate) if f.name != "idx"]


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobStore]:
    url = f"sqlite:///{tmp_path / 'jobs.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    s = JobStore(load_settings(database_url=url).database_url)
    s.migrate()
    s.register_worker("w1", "host", 1)
    yield s
    s.close()


def stored_back(store: JobStore) -> TargetRecord:
    job_id = store.create({"source": {}, "targets": []}, None, [("http://a:5000/v2", "img", "v1")])
    [record] = store.claim("w1")
    assert store.save_progress(Claim(job_id, "w1", record.claim_generation), [TargetUpdate.of(0, LIVE)]) == (
        True,
        False,
    )
    job = store.get(job_id)
    assert job is not None
    return job.targets[0]


def test_the_store_s_types_carry_every_persisted_field() -> None:
    names = {f.name for f in dataclasses.fields(TargetRecord)}
    assert set(PERSISTED) <= names
    assert set(PERSISTED) <= {f.name for f in dataclasses.fields(TargetStatus)}


@pytest.mark.parametrize("name", PERSISTED)
def test_a_live_status_comes_back_from_the_store_unchanged(store: JobStore, name: str) -> None:
    back = stored_back(store).status()
    assert getattr(back, name) == getattr(LIVE, name)


def test_a_requeued_target_is_stored_pending_with_the_rest_kept() -> None:
    update = TargetUpdate.of(1, LIVE, TargetState.PENDING)
    assert (update.idx, update.state, update.error, update.bytes_done) == (1, "PENDING", "connection refused", 200)
