"""Detaching by relative rate (issue 19): a target far slower than the others leaves the shared
stream long before the time grace; targets of equal speed with random stalls never do.

Fake sinks paced by ``asyncio.sleep``; no network. The grace (``after``) is set far beyond the
test's length, so only the rate rule can detach: under the old, time-only rule the quick case
fails (no detach, the read paced to the slow sink).
"""

from __future__ import annotations

import asyncio
import hashlib
import random

from regcast.registry.manifest import Descriptor
from regcast.transfer.channel import END as END_ITEM
from regcast.transfer.detach import DetachPolicy
from regcast.transfer.fanout import RATE_RATIO, Channel, broadcast

DATA = bytes(range(256)) * 4000  # 1,024,000 bytes
CHUNK = 10_000
FAR = 600.0  # the time grace: never reached here


def desc() -> Descriptor:
    return Descriptor("x", "sha256:" + hashlib.sha256(DATA).hexdigest(), len(DATA))


async def chunks(data: bytes):  # type: ignore[no-untyped-def]
    for i in range(0, len(data), CHUNK):
        yield data[i : i + CHUNK]
        await asyncio.sleep(0)


class Run:
    def __init__(self) -> None:
        self.detached: list[tuple[int, str]] = []
        self.rereads: list[int] = []
        self.ended: list[str] = []
        self.got: dict[str, bytes] = {}

    def reread(self, offset: int):  # type: ignore[no-untyped-def]
        self.rereads.append(offset)
        return _from(offset)

    def policy(self) -> DetachPolicy:
        return DetachPolicy(FAR, self.reread, lambda i, why, at: self.detached.append((i, why)))

    def sink(self, name: str, pace, slow_until_detached: bool = False):  # type: ignore[no-untyped-def]
        async def run(ch: Channel) -> None:
            out = bytearray()
            first = await ch.get()
            async for c in ch.body(first, lambda n: None):
                out += c
                # once detached the slow one goes at the others' pace (keeps the test short)
                await asyncio.sleep(0.005 if slow_until_detached and self.detached else pace())
            self.got[name] = bytes(out)
            self.ended.append(name)

        return run


async def _from(offset: int):  # type: ignore[no-untyped-def]
    for i in range(offset, len(DATA), CHUNK):
        yield DATA[i : i + CHUNK]
        await asyncio.sleep(0)


def test_a_sink_twenty_times_slower_is_detached_by_rate_long_before_the_grace() -> None:
    async def go() -> tuple[Run, list[BaseException | None]]:
        r = Run()
        sinks = [
            r.sink("fast1", lambda: 0.005),
            r.sink("fast2", lambda: 0.005),
            r.sink("slow", lambda: 0.1, slow_until_detached=True),  # 20x slower until detached
        ]
        errors = await broadcast(chunks(DATA), desc(), sinks, depth=4, detach=r.policy())
        return r, errors

    r, errors = asyncio.run(go())
    assert errors == [None, None, None]
    assert [i for i, _ in r.detached] == [2]
    assert f"1/{RATE_RATIO}" in r.detached[0][1]  # the rate rule, not the (unreached) grace
    assert r.ended.index("slow") == 2  # the fast ones finished first
    assert all(r.got[n] == DATA for n in ("fast1", "fast2", "slow"))
    assert len(r.rereads) == 1


def test_equal_sinks_with_random_stalls_are_never_detached() -> None:
    async def go() -> tuple[Run, list[BaseException | None]]:
        r = Run()
        rng = random.Random(19)

        def pace() -> float:
            return 0.1 if rng.random() < 0.05 else 0.004  # a stall now and then, at random

        sinks = [r.sink(f"t{i}", pace) for i in range(3)]
        errors = await broadcast(chunks(DATA), desc(), sinks, depth=4, detach=r.policy())
        return r, errors

    r, errors = asyncio.run(go())
    assert errors == [None, None, None]
    assert r.detached == []
    assert r.rereads == []
    assert all(r.got[f"t{i}"] == DATA for i in range(3))


def test_channel_rate_leaves_out_waits_for_items() -> None:
    async def go() -> tuple[float | None, float | None]:
        ch = Channel(4)

        async def consume() -> None:
            while True:
                item = await ch.get()
                if not isinstance(item, bytes):
                    return
                await asyncio.sleep(0.01)  # 1000 bytes per 0.01 s of work: 100 kB/s

        task = asyncio.create_task(consume())
        for _ in range(10):
            await ch.put(b"x" * 1000)
        await asyncio.sleep(0.3)  # the consumer starves: its rate must not fall
        starved = ch.rate(0.5)
        await ch.put(END_ITEM)
        await task
        return starved, ch.rate(0.5)

    starved, _ = asyncio.run(go())
    assert starved is not None
    assert starved > 30_000  # ~100 kB/s measured over its working time; the 0.3 s wait would give < 35 kB/s
