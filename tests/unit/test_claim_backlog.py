"""A freed slot claims again at once only when the last claim filled every slot (#17: an empty
claim per job is a database transaction for nothing). A real store; the job itself is a no-op."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from regcast.config import Settings
from regcast.jobs.records import JobRecord
from regcast.jobs.secrets import SecretBox
from regcast.jobs.store import JobStore
from regcast.jobs.worker import Worker


class CountingStore(JobStore):
    claims = 0

    def claim(self, worker_id: str, limit: int = 1) -> list[JobRecord]:
        CountingStore.claims += 1
        return super().claim(worker_id, limit)


async def _until(predicate: Any, timeout: float = 60) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.01)


def _worker(tmp_path: Path, in_flight: int, done: list[str]) -> tuple[Worker, CountingStore]:
    store = CountingStore(f"sqlite:///{tmp_path / 'regcast.db'}")
    store.migrate()
    store.register_worker("w", "host", 1)
    worker = Worker(store, Settings(jobs_in_flight=in_flight, poll_interval=300), SecretBox(b"k" * 32), worker_id="w")

    async def execute(record: JobRecord) -> None:
        done.append(record.id)

    worker.execute = execute  # type: ignore[method-assign]
    return worker, store


def _queue(store: JobStore) -> str:
    return store.create({"source": {}, "targets": []}, None, [])


def test_a_claim_that_got_fewer_jobs_than_slots_is_not_repeated_when_a_job_ends(tmp_path: Path) -> None:
    async def main() -> None:
        done: list[str] = []
        worker, store = _worker(tmp_path, 4, done)
        CountingStore.claims = 0
        first = _queue(store)
        loop = asyncio.create_task(worker._claim_loop())
        await _until(lambda: done == [first])
        await asyncio.sleep(0.5)  # room for a claim that should not come
        assert CountingStore.claims == 1
        second = _queue(store)
        worker.wake()  # what a POST in this process does
        await _until(lambda: done == [first, second])
        assert CountingStore.claims == 2
        worker.stopping.set()
        worker._wake.set()
        await loop

    asyncio.run(main())


def test_a_full_claim_is_followed_at_once_when_a_slot_frees(tmp_path: Path) -> None:
    async def main() -> None:
        done: list[str] = []
        worker, store = _worker(tmp_path, 1, done)
        ids = [_queue(store) for _ in range(3)]
        loop = asyncio.create_task(worker._claim_loop())
        await _until(lambda: done == ids)  # one slot, three jobs: well before the 300 s poll
        worker.stopping.set()
        worker._wake.set()
        await loop

    asyncio.run(main())
