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
