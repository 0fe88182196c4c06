"""Byte caps on fan-out channels (issue 19): a lagging target holds its share of the budget, no more."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator

from regcast.registry.manifest import Descriptor
from regcast.transfer.channel import END, Channel
from regcast.transfer.detach import DetachPolicy
from regcast.transfer.fanout import broadcast, channel_cap

DATA = bytes(range(256)) * 400  # 102,400 bytes


def desc(data: bytes) -> Descriptor:
    return Descriptor("x", "sha256:" + hashlib.sha256(data).hexdigest(), len(data))


async def chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]
        await asyncio.sleep(0)


def test_the_budget_is_shared_by_the_channels_at_least_one_chunk_each() -> None:
    assert channel_cap(8, 1000, 1) == 8000  # one target: the whole budget, as before
    assert channel_cap(8, 1000, 3) == 2666
    assert channel_cap(8, 1000, 16) == 1000  # never below one chunk: it could not move at all


def test_a_channel_never_holds_more_than_its_cap_whatever_the_chunk_sizes() -> None:
    async def go() -> tuple[list[int], bytes]:
        ch = Channel(depth=100, max_bytes=2500)
        held: list[int] = []
        sizes = [700, 1300, 100, 2500, 900, 900, 900, 3000, 1, 50] * 5  # 3000 > cap: alone in the channel

        async def produce() -> None:
            for i, n in enumerate(sizes):
                await ch.put(bytes([i % 256]) * n)
                held.append(ch.held_bytes)
            await ch.put(END)

        task = asyncio.create_task(produce())
        out = bytearray()
        while True:
            for _ in range(5):  # a slow consumer: the producer runs ahead as far as it may
                await asyncio.sleep(0)
            held.append(ch.held_bytes)
            item = await ch.get()
            if not isinstance(item, bytes):
                break
            out += item
        await task
        return held, bytes(out)

    held, out = asyncio.run(go())
    assert len(out) == sum([700, 1300, 100, 2500, 900, 900, 900, 3000, 1, 50]) * 5  # nothing lost
    assert max(h for h in held if h != 3000) <= 2500
    assert 3000 in held  # the oversize item went through, alone


def test_a_lagging_target_holds_at_most_its_share_while_the_others_go_on() -> None:
    """Without detaching: the slow target's channel is capped at budget / targets in bytes."""

    async def go() -> tuple[list[int], list[int | None], list[bytes]]:
        held: list[int] = []
        caps: list[int | None] = []
        outs: list[bytes] = [b"", b"", b""]

        def sink(i: int, slow: bool):  # type: ignore[no-untyped-def]
            async def run(ch: Channel) -> None:
                caps.append(ch.max_bytes)
                out = bytearray()
                while True:
                    if slow:
                        for _ in range(20):
                            await asyncio.sleep(0)
                        held.append(ch.held_bytes)
                    item = await ch.get()
                    if not isinstance(item, bytes):
                        break
                    out += item
                outs[i] = bytes(out)

            return run

        sinks = [sink(0, True), sink(1, False), sink(2, False)]
        errors = await broadcast(chunks(DATA, 1000), desc(DATA), sinks, depth=8, chunk_size=1000)
        assert errors == [None, None, None]
        return held, caps, outs

    held, caps, outs = asyncio.run(go())
    assert outs == [DATA, DATA, DATA]
    assert caps == [2666, 2666, 2666]
    assert max(held) <= 2666  # before byte caps it held queue_depth (8) chunks: 8000 bytes
    assert max(held) >= 2000  # it did lag: the cap, not luck, bounded it


def test_a_detached_channel_is_capped_at_one_chunk_for_its_second_read() -> None:
    async def go() -> tuple[list[int], list[tuple[int, int]], bytes]:
        fast_done = asyncio.Event()
        detached: list[tuple[int, int]] = []
        after: list[int] = []
        got = bytearray()

        async def slow(ch: Channel) -> None:
            await fast_done.wait()  # stalls until the fast one is done: only detaching lets it finish
            while True:
                for _ in range(20):
                    await asyncio.sleep(0)
                after.append(ch.held_bytes)
                item = await ch.get()
                if not isinstance(item, bytes):
                    break
                got.extend(item)

        async def fast(ch: Channel) -> None:
            while isinstance(await ch.get(), bytes):
                pass
            fast_done.set()

        policy = DetachPolicy(0.01, lambda at: chunks(DATA[at:], 300), lambda i, why, at: detached.append((i, at)))
        errors = await broadcast(chunks(DATA, 1000), desc(DATA), [slow, fast], depth=8, detach=policy, chunk_size=1000)
        assert errors == [None, None]
        return after, detached, bytes(got)

    after, detached, got = asyncio.run(go())
    assert got == DATA
    assert [i for i, _ in detached] == [0]
    tail = after[10:]  # what the main read had queued before the detach is drained by then
    assert tail and max(tail) <= 1000
