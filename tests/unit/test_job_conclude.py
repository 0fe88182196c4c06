"""A job whose copy ends while its monitor waits for more progress to join a write is concluded at
once, not after that wait (#17: up to ``PROGRESS_COALESCE`` of every small job's wall). A real
store; the copy itself is a stand-in that changes a status just before it ends."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from regcast.config import Settings
from regcast.jobs import worker as worker_module
from regcast.jobs.runner import JobRun
from regcast.jobs.secrets import SecretBox
from regcast.jobs.store import JobStore
from regcast.jobs.worker import Worker
from regcast.transfer.progress import TargetState


def test_a_job_ending_during_the_progress_pause_is_concluded_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker_module, "PROGRESS_COALESCE", 5.0)  # a pause no job here waits out
    store = JobStore(f"sqlite:///{tmp_path / 'regcast.db'}")
    store.migrate()
    store.register_worker("w", "host", 1)
    worker = Worker(store, Settings(poll_interval=300), SecretBox(b"k" * 32), worker_id="w")
    store.create({"source": {}, "targets": []}, None, [("http://127.0.0.1:9/v2", "img", "v1")])
    (record,) = store.claim("w", 1)
    marks: dict[str, float] = {}

    async def copy(run: JobRun) -> None:
        await asyncio.sleep(0.05)
        for st in run.statuses.values():
            st.state = TargetState.FINISHED
        run.changed_now()  # the monitor wakes, then waits for more changes to join its write
        await asyncio.sleep(0.05)
        marks["ended"] = asyncio.get_running_loop().time()

    conclude = worker._conclude

    async def concluded(*args: object) -> None:
        marks["concluded"] = asyncio.get_running_loop().time()
        await conclude(*args)  # type: ignore[arg-type]

    worker.runner.run = copy  # type: ignore[method-assign]
    worker._conclude = concluded  # type: ignore[method-assign,assignment]
    asyncio.run(worker.execute(record))

    assert marks["concluded"] - marks["ended"] < 2.0
    job = store.get(record.id)
    assert job is not None and job.state.value == "FINISHED"


class _Events:
    metrics = None

    def __init__(self) -> None:
        self.ended: list[tuple[str, str, str | None]] = []

    def ended_elsewhere(self, job_ids: list[str]) -> None:
        raise AssertionError(f"no reaper here: {job_ids}")

    def job_ended(self, run: JobRun, state: str, error: str | None) -> None:
        self.ended.append((run.record.id, state, error))


def test_a_cancel_asked_as_an_attempt_goes_back_for_a_retry_is_said_counted_and_notified(tmp_path: Path) -> None:
    """The cancel lands after the last progress flush of an attempt whose target failed retryably: the store
    ends the job CANCELLED as it goes back to the queue, and the worker logged 'retrying' and notified nobody."""
    store = JobStore(f"sqlite:///{tmp_path / 'regcast.db'}")
    store.migrate()
    store.register_worker("w", "host", 1)
    events = _Events()
    worker = Worker(store, Settings(poll_interval=300), SecretBox(b"k" * 32), worker_id="w", events=events)  # type: ignore[arg-type]
    job = store.create({"source": {}, "targets": []}, None, [("http://127.0.0.1:9/v2", "img", "v1")])
    (record,) = store.claim("w", 1)

    async def copy(run: JobRun) -> None:
        for st in run.statuses.values():
            st.state, st.error, st.retryable = TargetState.FAILED, "connection refused", True
        store.request_cancel(job)  # the user's DELETE, between the last flush and the end

    worker.runner.run = copy  # type: ignore[method-assign]
    asyncio.run(worker.execute(record))

    ended = store.get(job)
    assert ended is not None and ended.state.value == "CANCELLED"
    assert events.ended == [(job, "CANCELLED", "cancelled by user")]


def test_only_the_call_that_cancels_a_queued_job_says_it_ended_it(tmp_path: Path) -> None:
    """Two DELETEs at once (a double click, a client retrying): each read the job QUEUED, and each notified."""
    store = JobStore(f"sqlite:///{tmp_path / 'regcast.db'}")
    store.migrate()
    job = store.create({"source": {}, "targets": []}, None, [("http://127.0.0.1:9/v2", "img", "v1")])
    first, second = store.cancel_job(job), store.cancel_job(job)
    assert first[0] is not None and first[0].state.value == "CANCELLED" and first[1] is True
    assert second[0] is not None and second[0].state.value == "CANCELLED" and second[1] is False
