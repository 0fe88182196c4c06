"""ManifestFlights: copies pushing the same manifest to the same ref at once send one PUT (issue 17)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from regcast.transfer.flights import ManifestFlights

KEY = ("http://reg", "team/app", "v1", "sha256:1")


def test_followers_take_the_leaders_success_and_push_themselves_after_a_failure_or_a_cancel() -> None:
    async def go() -> None:
        flights = ManifestFlights()
        sent: list[str] = []
        gate = asyncio.Event()

        def putter(name: str, fail: bool = False) -> Callable[[], Awaitable[None]]:
            async def put() -> None:
                sent.append(name)
                if name == "leader":
                    await gate.wait()
                if fail:
                    raise RuntimeError("refused")

            return put

        # success: the followers send nothing
        leader = asyncio.create_task(flights.push(KEY, putter("leader")))
        await asyncio.sleep(0)
        followers = [asyncio.create_task(flights.push(KEY, putter(f"f{i}"))) for i in range(3)]
        await asyncio.sleep(0)
        gate.set()
        await asyncio.gather(leader, *followers)
        assert (sent, flights.joined) == (["leader"], 3)

        # failure: each follower sends its own
        sent.clear()
        gate.clear()
        leader = asyncio.create_task(flights.push(KEY, putter("leader", fail=True)))
        await asyncio.sleep(0)
        follower = asyncio.create_task(flights.push(KEY, putter("f")))
        await asyncio.sleep(0)
        gate.set()
        with pytest.raises(RuntimeError):
            await leader
        await follower
        assert sent == ["leader", "f"]

        # cancelled leader: the follower sends its own
        sent.clear()
        gate.clear()
        leader = asyncio.create_task(flights.push(KEY, putter("leader")))
        await asyncio.sleep(0)
        follower = asyncio.create_task(flights.push(KEY, putter("f")))
        await asyncio.sleep(0)
        leader.cancel()
        await follower
        assert sent == ["leader", "f"]
        assert leader.cancelled()

        # a push that ended is never shared: the next one is sent
        sent.clear()
        await flights.push(KEY, putter("later"))
        assert sent == ["later"]

    asyncio.run(go())
