"""The job store on SQLite: schema = models, one exception boundary, enums, fencing, backoff."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import event

from regcast._exceptions import JobError, JobStoreUnavailable
from regcast.config import Settings
from regcast.jobs.models import JobState
from regcast.jobs.store import Claim, JobStore, TargetUpdate
from regcast.transfer.progress import TargetState
from tests.support.schema import schema_diff

TARGETS = [("http://127.0.0.1:1/v2", "a/b", "v1"), ("http://127.0.0.1:2/v2", "a/b", "v1")]


@pytest.fixture
def store(tmp_path: Path) -> JobStore:
    s = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    s.migrate()
    s.register_worker("w1", "host-a", 1)
    s.register_worker("w2", "host-a", 2)
    return s


def test_migrations_build_exactly_the_models(store: JobStore) -> None:
    assert schema_diff(store.engine) == []


def test_database_failures_leave_the_store_as_job_store_unavailable(tmp_path: Path) -> None:
    broken = JobStore(f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}")
    with pytest.raises(JobStoreUnavailable) as caught:
        broken.get("x")
    assert isinstance(caught.value, JobError)
    assert "database unavailable (OperationalError)" in str(caught.value)


def test_states_come_back_as_enums(store: JobStore) -> None:
    job = store.create({"source": {}, "targets": []}, None, TARGETS)
    rec = store.get(job)
    assert rec is not None
    assert rec.state is JobState.QUEUED
    assert [t.state for t in rec.targets] == [TargetState.PENDING, TargetState.PENDING]
    page, total = store.list_jobs(JobState.QUEUED)
    assert total == 1
    assert page[0].state is JobState.QUEUED


def test_retry_later_holds_the_job_until_not_before(store: JobStore) -> None:
    job = store.create({}, None, TARGETS)
    [rec] = store.claim("w1")
    claim = Claim(job, "w1", rec.claim_generation)
    failed = TargetUpdate(0, TargetState.PENDING, 0, 10, 1, "connection refused", 0, True)
    assert store.retry_later(claim, 3600, [failed])
    held = store.get(job)
    assert held is not None
    assert held.state is JobState.QUEUED
    assert held.not_before is not None
    assert held.not_before > held.updated_at + dt.timedelta(minutes=59)
    assert held.attempts == 1  # the attempt counted
    assert held.targets[0].error == "connection refused"
    assert store.claim("w2") == []  # not before its time
    assert store.retry_later(claim, -1)  # the same claim may still move it: claimable now
    [again] = store.claim("w2")
    assert again.attempts == 2
    assert again.not_before is None


def test_a_claim_taken_by_another_worker_is_fenced_out(store: JobStore) -> None:
    job = store.create({}, None, TARGETS)
    [rec] = store.claim("w1")
    mine = Claim(job, "w1", rec.claim_generation)
    # w1 stops heartbeating: the reaper forgets it and requeues its job, w2 claims it
    assert store.reap(None, 5, dead=["w1"]) == [job]
    [again] = store.claim("w2")
    theirs = Claim(job, "w2", again.claim_generation)
    assert again.claim_generation == rec.claim_generation + 1
    assert store.save_progress(mine, []) == (False, False)
    assert not store.finish(mine, JobState.FAILED, "late")
    assert store.finish(theirs, JobState.FINISHED)
    done = store.get(job)
    assert done is not None
    assert done.state is JobState.FINISHED
    assert done.error is None


def test_a_worker_requeued_only_for_an_outage_takes_its_job_back(store: JobStore) -> None:
    job = store.create({}, None, TARGETS)
    [rec] = store.claim("w1")
    mine = Claim(job, "w1", rec.claim_generation)
    assert store.reap(None, 5, dead=["w1"]) == [job]  # judged dead while it could not reach the database
    assert store.heartbeat("w1", "host-a", 1) is False  # back: registered again
    assert store.save_progress(mine, []) == (True, False)  # nobody claimed it since: taken back
    back = store.get(job)
    assert back is not None
    assert back.state is JobState.RUNNING
    assert back.worker_id == "w1"
    assert back.attempts == 1  # not a new run
    assert store.finish(mine, JobState.FINISHED)


def test_release_does_not_count_the_attempt(store: JobStore) -> None:
    job = store.create({}, None, TARGETS)
    [rec] = store.claim("w1")
    assert store.release(Claim(job, "w1", rec.claim_generation))
    back = store.get(job)
    assert back is not None
    assert back.state is JobState.QUEUED
    assert back.attempts == 0
    assert back.worker_id is None


def test_an_unregistered_worker_cannot_claim(store: JobStore) -> None:
    store.create({}, None, TARGETS)
    assert store.claim("ghost") == []
    assert len(store.claim("w1", limit=5)) == 1


def test_reaper_fails_a_job_after_max_attempts(store: JobStore) -> None:
    job = store.create({}, None, TARGETS)
    store.claim("w1")
    assert store.reap(None, 1, dead=["w1"]) == [job]
    rec = store.get(job)
    assert rec is not None
    assert rec.state is JobState.FAILED
    assert rec.error == "worker stopped responding; gave up after 1 attempts"


def test_default_timing_meets_the_takeover_goal() -> None:
    """A dead worker's job is requeued within stale_after + one reaper interval, claimed within a poll."""
    s = Settings()
    reaper_interval = min(s.heartbeat_interval, s.stale_after / 4)
    assert s.stale_after + reaper_interval + s.poll_interval <= 14.0


def test_finish_writes_the_source_digest_with_the_outcome(store: JobStore) -> None:
    job = store.create({}, None, TARGETS)
    [rec] = store.claim("w1")
    digest = "sha256:" + "b" * 64
    assert store.finish(Claim(job, "w1", rec.claim_generation), JobState.FINISHED, None, [], digest)
    done = store.get(job)
    assert done is not None
    assert done.source_digest == digest


def test_a_final_write_sends_every_target_row_in_one_statement(store: JobStore) -> None:
    """Issue 17 (a job's own CPU): one executemany of one statement, not a statement per target."""
    three = [*TARGETS, ("http://127.0.0.1:3/v2", "a/b", "v1")]
    job = store.create({}, None, three)
    [rec] = store.claim("w1")
    sent: list[tuple[str, bool]] = []

    def seen(_conn: object, _cursor: object, statement: str, _params: object, _ctx: object, many: bool) -> None:
        sent.append((statement, many))

    finished = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    updates = [
        TargetUpdate(0, TargetState.FINISHED, 10, 10, 1, None, finished_at=finished),
        TargetUpdate(1, TargetState.FAILED, 3, 20, 2, "no space", retries=4, retryable=False, reason="disk"),
        TargetUpdate(2, TargetState.SKIPPED, 0, 0, 1, None, referrers=2, referrers_left_out=("sha256:x",)),
    ]
    event.listen(store.engine, "before_cursor_execute", seen)
    try:
        assert store.finish(Claim(job, "w1", rec.claim_generation), JobState.FAILED, "one failed", updates)
    finally:
        event.remove(store.engine, "before_cursor_execute", seen)
    progress = [
        many for statement, many in sent if statement.startswith("UPDATE job_targets") and "bytes_done" in statement
    ]
    assert progress == [True]
    done = store.get(job)
    assert done is not None
    first, second, third = done.targets
    assert (first.state, first.bytes_done, first.finished_at) == (TargetState.FINISHED, 10, finished)
    assert (second.state, second.error, second.retries, second.retryable, second.reason) == (
        TargetState.FAILED,
        "no space",
        4,
        False,
        "disk",
    )
    assert (third.state, third.referrers, third.referrers_left_out) == (TargetState.SKIPPED, 2, ["sha256:x"])


def test_a_claim_reads_its_jobs_from_the_update_not_again(store: JobStore) -> None:
    """Issue 17: the claimed rows come back from ``UPDATE ... RETURNING``, oldest first, with their targets."""
    first = store.create({"n": 1}, None, TARGETS)
    second = store.create({"n": 2}, None, TARGETS[:1])
    sent: list[str] = []

    def seen(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        sent.append(" ".join(statement.split()))

    event.listen(store.engine, "before_cursor_execute", seen)
    try:
        claimed = store.claim("w1", 5)
    finally:
        event.remove(store.engine, "before_cursor_execute", seen)
    assert [s.split(" ", 1)[0] for s in sent] == ["WITH", "SELECT"]  # the claim, then the targets of both
    assert "FROM job_targets" in sent[1]
    assert [(r.id, r.request, r.state, r.attempts, r.worker_id) for r in claimed] == [
        (first, {"n": 1}, JobState.RUNNING, 1, "w1"),
        (second, {"n": 2}, JobState.RUNNING, 1, "w1"),
    ]
    assert [[t.endpoint for t in r.targets] for r in claimed] == [[e for e, _, _ in TARGETS], [TARGETS[0][0]]]
    assert claimed[0].claim_generation == 1
    assert claimed[0].running_at is not None
    assert claimed[0].running_at.tzinfo is not None


def test_a_job_path_sends_statements_built_once(store: JobStore) -> None:
    """Issue 17 (a job's own CPU): create, claim, progress, finish and the status read send the same
    statement objects job after job (their cache keys kept), with the values as parameters."""

    def one_job(digest: str | None) -> list[int]:
        sent: list[int] = []

        def seen(_conn: object, clause: object, *_: object) -> None:
            sent.append(id(clause))

        event.listen(store.engine, "before_execute", seen)
        try:
            job = store.create({"n": digest}, None, TARGETS)
            [rec] = store.claim("w1", 2)
            claim = Claim(job, "w1", rec.claim_generation)
            update = TargetUpdate(0, TargetState.RUNNING, 1, 10, 1, None)
            assert store.save_progress(claim, [update], digest) == (True, False)
            assert store.finish(claim, JobState.FINISHED, None, [update], digest)
            assert store.get(job) is not None
            assert store.claim("w1", 2) == []
        finally:
            event.remove(store.engine, "before_execute", seen)
        return sent

    for digest in (None, "sha256:" + "c" * 64):
        first, second = one_job(digest), one_job(digest)
        assert len(first) >= 8
        assert first == second
    done = store.list_jobs(JobState.FINISHED)[0]
    assert [j.source_digest for j in done] == ["sha256:" + "c" * 64, "sha256:" + "c" * 64, None, None]
    assert all(j.worker_id is None and j.finished_at is not None for j in done)


def test_a_database_url_is_named_with_only_its_harmless_query_values() -> None:
    """Messages name the database: libpq reads secrets from the query too (``sslpassword``, the key's
    passphrase), so every value not known to be harmless is hidden, not only a few known secret names."""
    from regcast.jobs._db import database_label

    label = database_label(
        "postgresql://u:pa55@db.example:5432/app?sslmode=verify-full&password=Sekr1t-a&sslpassword=Sekr1t-b"
        "&Some_Driver_Key=Sekr1t-c&application_name=regcast"
    )
    assert "Sekr1t" not in label and "pa55" not in label
    assert label.startswith("postgresql://u:***@db.example:5432/app?")
    assert "sslmode=verify-full" in label and "application_name=regcast" in label
    assert "sslpassword=REDACTED" in label and "Some_Driver_Key=REDACTED" in label


@pytest.mark.parametrize("back", ["reaped", "released", "retried later"])
def test_a_job_whose_cancel_was_asked_is_not_queued_again(
    store: JobStore, back: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The cancel was asked while it ran, and its worker died (reaped), stopped (released) or gave the
    attempt up for later before it saw the request: back in the queue, the next worker copied it again."""
    job = store.create({}, None, TARGETS)
    [rec] = store.claim("w1")
    claim = Claim(job, "w1", rec.claim_generation)
    asked = store.request_cancel(job)
    assert asked is not None and asked.state is JobState.RUNNING and asked.cancel_requested
    if back == "reaped":
        assert store.reap(None, 5, dead=["w1"]) == [job]
        assert f"job {job}: its worker is gone; CANCELLED, as asked" in caplog.text
    elif back == "released":
        assert store.release(claim)
    else:
        assert store.retry_later(claim, -1)
    assert store.claim("w2") == []
    ended = store.get(job)
    assert ended is not None
    assert ended.state is JobState.CANCELLED
    assert ended.finished_at is not None
    assert ended.error == "cancelled by user"
    assert [t.state for t in ended.targets] == [TargetState.CANCELLED, TargetState.CANCELLED]
    assert store.save_progress(claim, []) == (False, False)  # a worker only cut off from the database stops


def test_a_job_whose_cancel_was_asked_and_whose_worker_died_on_its_last_attempt_is_cancelled(store: JobStore) -> None:
    """The reaper's give-up (FAILED after the last attempt) came before its cancel check: a job the user had
    cancelled ended FAILED and fired the 'failed' hook."""
    job = store.create({}, None, TARGETS)
    store.claim("w1")
    store.request_cancel(job)
    assert store.reap(None, 1, dead=["w1"]) == [job]
    ended = store.get(job)
    assert ended is not None and ended.state is JobState.CANCELLED and ended.error == "cancelled by user"
