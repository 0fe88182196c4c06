"""The job store on SQLite (the default database): every state change a worker and the API make."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from regcast.jobs.models import JobState
from regcast.jobs.store import Claim, JobStore, TargetUpdate
from regcast.transfer.progress import TargetState

TARGETS = [("http://a:5000/v2", "img", "v1"), ("http://b:5000/v2", "img/copy", "prod")]


def request(image: str = "img") -> dict[str, object]:
    return {"source": {"endpoint": "http://src:5000/v2", "image": image, "ref": "v1"}, "targets": []}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[JobStore]:
    s = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    s.migrate()
    for w in ("w1", "w2", "w3"):
        s.register_worker(w, "host", 1)
    yield s
    s.close()


def test_a_created_job_is_queued_with_its_targets(store: JobStore) -> None:
    job_id = store.create(request(), b"sealed", TARGETS)
    job = store.get(job_id)
    assert job is not None
    assert job.state == JobState.QUEUED
    assert job.secrets == b"sealed"
    assert job.attempts == 0
    assert [(t.idx, t.endpoint, t.repository, t.ref, t.state) for t in job.targets] == [
        (0, "http://a:5000/v2", "img", "v1", "PENDING"),
        (1, "http://b:5000/v2", "img/copy", "prod", "PENDING"),
    ]
    assert store.get("no-such-job") is None


def claim(store: JobStore, worker: str) -> Claim:
    [record] = store.claim(worker)
    return Claim(record.id, worker, record.claim_generation)


def test_claim_takes_the_oldest_queued_job_once(store: JobStore) -> None:
    first = store.create(request(), None, TARGETS)
    second = store.create(request(), None, TARGETS)
    [claimed] = store.claim("w1")
    assert claimed.id == first
    assert claimed.state == JobState.RUNNING
    assert claimed.worker_id == "w1"
    assert claimed.attempts == 1
    [again] = store.claim("w2")
    assert again.id == second
    assert store.claim("w3") == []


def test_progress_is_saved_only_by_the_owner_and_reports_cancel(store: JobStore) -> None:
    job_id = store.create(request(), None, TARGETS)
    mine = claim(store, "w1")
    update = TargetUpdate(0, TargetState.RUNNING, 10, 100, 1, None, retries=2)
    intruder = Claim(job_id, "intruder", mine.generation + 1)
    assert store.save_progress(intruder, [update]) == (False, False)
    assert store.save_progress(mine, [update], source_digest="sha256:" + "a" * 64) == (True, False)
    job = store.get(job_id)
    assert job is not None
    assert job.source_digest == "sha256:" + "a" * 64
    assert (job.targets[0].state, job.targets[0].bytes_done, job.targets[0].retries) == ("RUNNING", 10, 2)
    store.request_cancel(job_id)
    assert store.save_progress(mine, []) == (True, True)


def test_cancel_ends_a_queued_job_at_once_and_flags_a_running_one(store: JobStore) -> None:
    queued = store.create(request(), None, TARGETS)
    cancelled = store.request_cancel(queued)
    assert cancelled is not None
    assert cancelled.state == JobState.CANCELLED
    assert {t.state for t in cancelled.targets} == {"CANCELLED"}
    running = store.create(request(), None, TARGETS)
    assert store.claim("w1") != []
    flagged = store.request_cancel(running)
    assert flagged is not None
    assert flagged.state == JobState.RUNNING
    assert flagged.cancel_requested is True


def test_finish_settles_the_targets_not_yet_done(store: JobStore) -> None:
    job_id = store.create(request(), None, TARGETS)
    mine = claim(store, "w1")
    store.save_progress(mine, [TargetUpdate(0, TargetState.FINISHED, 100, 100, 1, None)])
    assert store.finish(Claim(job_id, "intruder", mine.generation - 1), JobState.FAILED, "nope") is False
    assert store.finish(mine, JobState.FAILED, "b failed") is True
    job = store.get(job_id)
    assert job is not None
    assert job.state == JobState.FAILED
    assert job.error == "b failed"
    assert job.finished_at is not None
    assert [t.state for t in job.targets] == ["FINISHED", "FAILED"]
    assert store.is_final(job.state)


def test_release_requeues_without_counting_the_attempt(store: JobStore) -> None:
    job_id = store.create(request(), None, TARGETS)
    assert store.release(claim(store, "w1")) is True
    job = store.get(job_id)
    assert job is not None
    assert job.state == JobState.QUEUED
    assert job.attempts == 0
    assert job.worker_id is None


def test_a_silent_worker_loses_its_job_then_the_job_fails_after_max_attempts(store: JobStore) -> None:
    job_id = store.create(request(), None, TARGETS)
    claim(store, "w1")
    assert store.reap(None, max_attempts=2, dead=["w1"]) == [job_id]
    requeued = store.get(job_id)
    assert requeued is not None
    assert requeued.state == JobState.QUEUED
    claim(store, "w2")
    assert store.reap(-1.0, max_attempts=2) == [job_id]  # every heartbeat is "older than 1 s in the future"
    failed = store.get(job_id)
    assert failed is not None
    assert failed.state == JobState.FAILED
    assert "gave up after 2 attempts" in (failed.error or "")


def test_list_is_newest_first_filtered_and_paged(store: JobStore) -> None:
    ids = [store.create(request(f"img{i}"), None, TARGETS) for i in range(5)]
    store.request_cancel(ids[1])
    page, total = store.list_jobs(limit=2, offset=1)
    assert total == 5
    assert [j.id for j in page] == [ids[3], ids[2]]
    cancelled, n = store.list_jobs(JobState.CANCELLED.value)
    assert n == 1
    assert [j.id for j in cancelled] == [ids[1]]
    by_image, n = store.list_jobs(image="img4")
    assert [j.id for j in by_image] == [ids[4]]
