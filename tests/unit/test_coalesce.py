"""The in-flight read coalescer (registry/coalesce.py): joined, errors shared, a cancelled caller
does not cancel the read the others wait for, and nothing is kept once the read ended."""

from __future__ import annotations

import asyncio

import pytest

from regcast._exceptions import NotFound
from regcast.registry.coalesce import InFlight


def test_identical_reads_in_flight_are_sent_once() -> None:
    async def go() -> tuple[list[str], int, int, int]:
        reads, sent, gate = InFlight(), [0], asyncio.Event()

        async def head() -> str:
            sent[0] += 1
            await gate.wait()
            return "sha256:abc"

        callers = [asyncio.ensure_future(reads.read(("HEAD", "u"), head)) for _ in range(5)]
        await asyncio.sleep(0)
        gate.set()
        got = list(await asyncio.gather(*callers))
        after = await reads.read(("HEAD", "u"), head)  # ended: sent again, nothing cached
        assert after == "sha256:abc"
        return got, sent[0], reads.joined, len(reads)

    got, sent, joined, left = asyncio.run(go())
    assert (got, sent, joined, left) == (["sha256:abc"] * 5, 2, 4, 0)


def test_different_keys_are_not_joined() -> None:
    async def go() -> list[str]:
        reads = InFlight()

        async def value(v: str) -> str:
            await asyncio.sleep(0)
            return v

        return list(await asyncio.gather(reads.read("a", lambda: value("a")), reads.read("b", lambda: value("b"))))

    assert asyncio.run(go()) == ["a", "b"]


def test_every_joiner_gets_the_same_error() -> None:
    async def go() -> list[BaseException | str]:
        reads, gate = InFlight(), asyncio.Event()

        async def fail() -> str:
            await gate.wait()
            raise NotFound("registry r: GET /v2/a/manifests/v1 answered 404", registry="r", status=404)

        callers = [asyncio.ensure_future(reads.read("k", fail)) for _ in range(3)]
        await asyncio.sleep(0)
        gate.set()
        return list(await asyncio.gather(*callers, return_exceptions=True))

    errors = asyncio.run(go())
    assert all(isinstance(e, NotFound) for e in errors)
    assert {str(e) for e in errors} == {"registry r: GET /v2/a/manifests/v1 answered 404"}


def test_a_cancelled_leader_leaves_the_read_to_its_followers() -> None:
    async def go() -> tuple[bool, str, int]:
        reads, sent, gate = InFlight(), [0], asyncio.Event()

        async def get() -> str:
            sent[0] += 1
            await gate.wait()
            return "manifest"

        leader = asyncio.ensure_future(reads.read("k", get))
        await asyncio.sleep(0)
        follower = asyncio.ensure_future(reads.read("k", get))
        await asyncio.sleep(0)
        leader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await leader
        gate.set()
        return leader.cancelled(), await follower, sent[0]

    assert asyncio.run(go()) == (True, "manifest", 1)


def test_a_read_cancelled_itself_is_done_again_by_its_callers() -> None:
    async def go() -> tuple[list[str], int]:
        reads, sent = InFlight(), [0]
        started = asyncio.Event()

        async def get() -> str:
            sent[0] += 1
            if sent[0] == 1:
                started.set()
                await asyncio.sleep(3600)
            return "manifest"

        callers = [asyncio.ensure_future(reads.read("k", get)) for _ in range(2)]
        await started.wait()
        next(iter(reads._flights.values())).cancel()  # as a loop shutting down would
        return list(await asyncio.gather(*callers)), len(reads)

    got, left = asyncio.run(go())
    assert got == ["manifest"] * 2 and left == 0


def test_a_read_every_caller_left_is_cancelled() -> None:
    async def go() -> tuple[bool, int, int]:
        reads, started, ended = InFlight(), asyncio.Event(), asyncio.Event()
        cancelled = [False]

        async def get() -> str:
            started.set()
            try:
                await asyncio.sleep(3600)  # a read retrying on and on, as against a dead registry
            except asyncio.CancelledError:
                cancelled[0] = True
                raise
            finally:
                ended.set()
            return "manifest"

        callers = [asyncio.ensure_future(reads.read("k", get)) for _ in range(2)]
        await started.wait()
        callers[0].cancel()
        await asyncio.sleep(0.01)
        still_running = not ended.is_set()  # one caller left: the read goes on for it
        callers[1].cancel()
        await asyncio.gather(*callers, return_exceptions=True)
        await asyncio.wait_for(ended.wait(), 5)
        return still_running and cancelled[0], len(reads), len(reads._callers)

    assert asyncio.run(go()) == (True, 0, 0)
