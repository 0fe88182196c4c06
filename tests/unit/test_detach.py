"""Detaching a lagging sink (issue 19) without a network: order of completion, bytes, reads, digest."""

from __future__ import annotations

import asyncio
import hashlib
import io
from collections.abc import AsyncIterator

from rich.console import Console

from regcast._exceptions import DigestMismatch
from regcast.console.progress import Lines
from regcast.registry.manifest import Descriptor
from regcast.transfer.detach import DetachPolicy, read_from
from regcast.transfer.fanout import Channel, broadcast

DATA = bytes(range(256)) * 400  # 102,400 bytes in 1,000-byte chunks


def desc(data: bytes) -> Descriptor:
    return Descriptor("x", "sha256:" + hashlib.sha256(data).hexdigest(), len(data))


async def chunks(data: bytes, size: int = 1000) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]
        await asyncio.sleep(0)


class Harness:
    """Sinks that record what they got and when they ended; a re-read that counts its calls."""

    def __init__(self, data: bytes = DATA, reread_data: bytes | None = None) -> None:
        self.data = data
        self.reread_data = data if reread_data is None else reread_data
        self.rereads: list[int] = []
        self.detached: list[tuple[int, int]] = []
        self.ended: list[str] = []
        self.got: dict[str, bytes] = {}
        self.fast_done = asyncio.Event()

    def reread(self, offset: int) -> AsyncIterator[bytes]:
        self.rereads.append(offset)
        return chunks(self.reread_data[offset:], 700)

    def policy(self) -> DetachPolicy:
        return DetachPolicy(0.01, self.reread, lambda i, why, at: self.detached.append((i, at)))

    def sink(self, name: str, wait: asyncio.Event | None = None):  # type: ignore[no-untyped-def]
        async def run(ch: Channel) -> None:
            if wait is not None:
                await wait.wait()  # stalls until the others are done: only detaching lets them finish
            out = bytearray()
            first = await ch.get()
            async for c in ch.body(first, lambda n: None):
                out += c
            self.got[name] = bytes(out)
            self.ended.append(name)
            if len(self.ended) == 2 and wait is None:
                self.fast_done.set()

        return run


def test_a_stalled_sink_is_detached_and_the_others_finish_first() -> None:
    async def go() -> tuple[Harness, list[BaseException | None]]:
        h = Harness()
        sinks = [h.sink("slow", h.fast_done), h.sink("a"), h.sink("b")]
        errors = await broadcast(chunks(h.data), desc(h.data), sinks, depth=3, detach=h.policy())
        return h, errors

    h, errors = asyncio.run(go())
    assert errors == [None, None, None]
    assert h.ended == ["a", "b", "slow"]  # the fast ones did not wait for the stalled one
    assert all(v == DATA for v in h.got.values())
    assert [i for i, _ in h.detached] == [0]
    offset = h.detached[0][1]
    assert 0 < offset < len(DATA)
    assert h.rereads == [offset]  # one more read, from where it stopped


def test_two_laggards_share_one_second_read() -> None:
    async def go() -> Harness:
        h = Harness()
        late = asyncio.Event()
        fast: list[str] = []

        def fast_sink(name: str):  # type: ignore[no-untyped-def]
            inner = h.sink(name)

            async def run(ch: Channel) -> None:
                await inner(ch)
                fast.append(name)
                late.set()

            return run

        sinks = [h.sink("slow1", late), fast_sink("a"), h.sink("slow2", late)]
        errors = await broadcast(chunks(h.data), desc(h.data), sinks, depth=2, detach=h.policy())
        assert errors == [None, None, None]
        return h

    h = asyncio.run(go())
    assert h.ended[0] == "a"
    assert sorted(i for i, _ in h.detached) == [0, 2]
    assert len(h.rereads) == 1 and h.rereads[0] == min(at for _, at in h.detached)
    assert h.got["slow1"] == DATA and h.got["slow2"] == DATA


def test_corrupt_second_read_never_completes_the_detached_sink() -> None:
    bad = bytearray(DATA)
    bad[-10] ^= 0xFF

    async def go() -> tuple[Harness, list[BaseException | None]]:
        h = Harness(reread_data=bytes(bad))
        sinks = [h.sink("slow", h.fast_done), h.sink("a"), h.sink("b")]
        errors = await broadcast(chunks(h.data), desc(h.data), sinks, depth=3, detach=h.policy())
        return h, errors

    h, errors = asyncio.run(go())
    assert errors[1:] == [None, None]
    assert isinstance(errors[0], DigestMismatch)
    assert "slow" not in h.got  # its last chunk was held back: never the whole blob


def test_no_detach_when_every_sink_is_slow() -> None:
    """Detaching helps only if someone waits: a lone slow sink (or all slow) keeps the one read."""

    async def go() -> Harness:
        h = Harness()

        async def slow(ch: Channel) -> None:
            first = await ch.get()
            async for _ in ch.body(first, lambda n: None):
                await asyncio.sleep(0.002)

        errors = await broadcast(chunks(h.data), desc(h.data), [slow, slow], depth=2, detach=h.policy())
        assert errors == [None, None]
        return h

    h = asyncio.run(go())
    assert h.detached == [] and h.rereads == []


def test_read_from_skips_the_prefix_without_range() -> None:
    class Plain:
        def read_blob(self, blob: Descriptor) -> AsyncIterator[bytes]:
            return chunks(DATA, 1000)

    async def go() -> bytes:
        return b"".join([c async for c in read_from(Plain(), desc(DATA), 2500)])

    assert asyncio.run(go()) == DATA[2500:]


def test_progress_lines_show_a_detached_target_its_rate_and_why() -> None:
    out = io.StringIO()
    lines = Lines(Console(file=out, width=200), ["fast", "slow"], 60)
    lines.update("fast", "RUNNING", 0, 100)
    lines.update("slow", "RUNNING", 0, 100)
    lines.update("fast", "FINISHED", 100, 100)
    lines.update("slow", "RUNNING", 40, 100, "fell behind: its buffer stayed full for 2s while other targets waited")
    lines.print_lines()
    fast, slow = out.getvalue().splitlines()
    assert fast == "progress fast FINISHED 100 B/100 B (100%)"
    assert slow.startswith("progress slow RUNNING 40 B/100 B (40%) [detached at ")
    assert slow.endswith("/s: fell behind: its buffer stayed full for 2s while other targets waited]")


def test_attached_done_is_told_before_the_detached_sink_ends() -> None:
    """The engine frees the blob's slot then: the next blob starts for the fast targets."""

    async def go() -> Harness:
        h = Harness()

        def told() -> None:
            h.ended.append("attached-done")
            h.fast_done.set()

        sinks = [h.sink("slow", h.fast_done), h.sink("a"), h.sink("b")]
        errors = await broadcast(chunks(h.data), desc(h.data), sinks, depth=3, detach=h.policy(), attached_done=told)
        assert errors == [None, None, None]
        return h

    h = asyncio.run(go())
    assert h.ended[0] == "a" and h.ended[-1] == "slow" and "attached-done" in h.ended
    assert h.got["slow"] == DATA


def test_a_sink_that_moves_but_slowly_is_detached() -> None:
    """Taking a chunk more often than the grace is still lagging: what counts is how long the main
    read waited on it in all since it last caught up, not the longest single wait."""

    async def go() -> tuple[Harness, list[BaseException | None]]:
        h = Harness()
        policy = DetachPolicy(0.2, h.reread, lambda i, why, at: h.detached.append((i, at)))

        async def trickle(ch: Channel) -> None:  # one chunk every 0.05 s: a quarter of the grace
            out = bytearray()
            first = await ch.get()
            async for c in ch.body(first, lambda n: None):
                out += c
                await asyncio.sleep(0.05)
            h.got["slow"] = bytes(out)
            h.ended.append("slow")

        sinks = [trickle, h.sink("a"), h.sink("b")]
        errors = await broadcast(chunks(h.data, 5000), desc(h.data), sinks, depth=3, detach=policy)
        return h, errors

    h, errors = asyncio.run(go())
    assert errors == [None, None, None]
    assert [i for i, _ in h.detached] == [0]  # before: never (each wait was shorter than the grace)
    assert h.ended == ["a", "b", "slow"] and all(v == DATA for v in h.got.values())
    assert h.rereads == [h.detached[0][1]]


def test_a_detached_channel_queues_two_chunks_at_most_once_drained() -> None:
    """Memory: the detached read goes at its slow reader's pace, so its queue need not be deep."""
    most: list[int] = []

    async def go() -> tuple[Harness, list[BaseException | None]]:
        h = Harness()

        async def slow(ch: Channel) -> None:
            await h.fast_done.wait()
            out = bytearray()
            first = await ch.get()
            async for c in ch.body(first, lambda n: None):
                out += c
                if len(out) > 20_000:  # what the main read queued is drained by now
                    most.append(ch.pending)
                await asyncio.sleep(0)
            h.got["slow"] = bytes(out)

        sinks = [slow, h.sink("a"), h.sink("b")]
        errors = await broadcast(chunks(h.data), desc(h.data), sinks, depth=8, detach=h.policy())
        return h, errors

    h, errors = asyncio.run(go())
    assert errors == [None, None, None]
    assert h.got == {"slow": DATA, "a": DATA, "b": DATA}
    assert [i for i, _ in h.detached] == [0] and most and max(most) <= 2


def test_blobs_detached_at_once_each_give_one_reason() -> None:
    """Two blobs of one target detached together: its reason says once where the last one finished from."""
    from types import SimpleNamespace

    from regcast.transfer.blobcopy import BlobCopy
    from regcast.transfer.progress import TargetStatus

    status = TargetStatus(key="t")
    targets = [SimpleNamespace(key="fast", status=TargetStatus(key="fast")), SimpleNamespace(key="t", status=status)]
    run = SimpleNamespace(
        engine=SimpleNamespace(options=SimpleNamespace(detach_after=1.0)),
        listener=SimpleNamespace(changed=lambda _s: None),
        source=None,
        spool=None,
    )
    first = BlobCopy._detach_policy(run, desc(b"a"), targets)  # type: ignore[arg-type]
    second = BlobCopy._detach_policy(run, desc(b"b"), targets)  # type: ignore[arg-type]
    assert first is not None and second is not None and first.reading and second.reading
    first.detached(1, "full buffer for 1.0 s", 10)
    second.detached(1, "full buffer for 1.0 s", 20)
    first.reading(1, "a second source read")
    second.reading(1, "a second source read")
    assert status.blobs_detached == 2
    assert status.detached_reason == "full buffer for 1.0 s; finished from a second source read"
