"""The fan-out without a network: bounded buffers, digest gate, per-sink failure."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator

import pytest

from regcast._exceptions import DigestMismatch
from regcast.registry.manifest import Descriptor
from regcast.transfer.fanout import END, Channel, broadcast


def desc(data: bytes) -> Descriptor:
    return Descriptor("x", "sha256:" + hashlib.sha256(data).hexdigest(), len(data))


async def chunks(data: bytes, size: int, produced: list[int] | None = None) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        if produced is not None:
            produced.append(i)
        yield data[i : i + size]
        await asyncio.sleep(0)


def collector(out: list[bytes]):  # type: ignore[no-untyped-def]
    async def sink(ch: Channel) -> None:
        first = await ch.get()
        async for c in ch.body(first, lambda n: None):
            out.append(c)

    return sink


def test_every_sink_gets_every_byte_in_order() -> None:
    data = bytes(range(256)) * 1000
    outs: list[list[bytes]] = [[], [], []]
    errors = asyncio.run(broadcast(chunks(data, 1000), desc(data), [collector(o) for o in outs], depth=2))
    assert errors == [None, None, None]
    assert all(b"".join(o) == data for o in outs)


def test_empty_blob() -> None:
    out: list[bytes] = []
    assert asyncio.run(broadcast(chunks(b"", 10), desc(b""), [collector(out)], depth=1)) == [None]
    assert out == []


def test_bad_bytes_never_reach_the_end() -> None:
    data = b"x" * 10_000
    wrong = desc(b"y" * 10_000)
    outs: list[list[bytes]] = [[], []]
    errors = asyncio.run(broadcast(chunks(data, 1000), wrong, [collector(o) for o in outs], depth=4))
    assert all(isinstance(e, DigestMismatch) for e in errors)
    # the last chunk was held back: no sink saw the whole blob
    assert all(len(b"".join(o)) < len(data) for o in outs)


def test_too_long_source_is_stopped() -> None:
    data = b"z" * 5000
    errors = asyncio.run(broadcast(chunks(data + b"extra", 1000), desc(data), [collector([])], depth=4))
    assert isinstance(errors[0], DigestMismatch)


def test_failing_sink_does_not_stop_others() -> None:
    data = b"q" * 50_000

    async def broken(ch: Channel) -> None:
        await ch.get()
        raise OSError("target went away")

    good: list[bytes] = []
    errors = asyncio.run(broadcast(chunks(data, 1000), desc(data), [broken, collector(good)], depth=2))
    assert isinstance(errors[0], OSError)
    assert errors[1] is None
    assert b"".join(good) == data


def test_slow_sink_bounds_how_far_the_source_reads_ahead() -> None:
    """Memory stays bounded: with a stalled sink the producer stops after depth + 1 chunks."""
    data = b"m" * 100_000
    produced: list[int] = []
    release = asyncio.Event()

    async def stalled(ch: Channel) -> None:
        await release.wait()
        first = await ch.get()
        async for _ in ch.body(first, lambda n: None):
            pass

    async def go() -> tuple[int, list[BaseException | None]]:
        task = asyncio.create_task(broadcast(chunks(data, 1000, produced), desc(data), [stalled], depth=3))
        for _ in range(200):
            await asyncio.sleep(0)
        seen = len(produced)
        release.set()
        errors = await task
        return seen, errors

    seen, errors = asyncio.run(go())
    assert seen <= 3 + 2  # depth queued + one held back + one being read
    assert errors == [None]


@pytest.mark.parametrize("depth", [1, 4])
def test_channel_fail_wakes_consumer(depth: int) -> None:
    async def go() -> None:
        ch = Channel(depth)
        waiter = asyncio.create_task(ch.get())
        await asyncio.sleep(0)
        ch.fail(DigestMismatch("x"))
        with pytest.raises(DigestMismatch):
            await waiter
        ch2 = Channel(depth)
        await ch2.put(END)
        assert await ch2.get() is END

    asyncio.run(go())
