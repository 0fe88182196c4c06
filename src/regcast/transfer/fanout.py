"""Read once, write many: one source stream fans out to every target that needs the blob.

Each target has a bounded ``Channel`` (``transfer/channel.py``); chunks are shared ``bytes``
objects (no copies). With ``chunk_size`` the fan-out has a budget of ``depth x chunk_size`` bytes
split evenly between its channels (``channel_cap``): what a lagging target holds beyond the others
is its queue, so memory per blob in flight stays about that budget whether a target lags or not,
whatever the blob size. A slow target stalls the others only while its channel is full, and with
``detach_after`` set only for that long: then it is detached (``transfer/detach.py``) and
finishes the blob from a second read of the source, its upload session untouched (or, with a
spool, from the blob's bytes kept on disk during the main read: ``transfer/spool.py``). The last
chunk is held back until the whole blob has been hashed: a blob whose bytes do not match its
digest is never completed at any target.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final

from regcast._exceptions import ContentError, DigestMismatch, Failure, RegistryUnreachable
from regcast.registry.digest import hasher_for
from regcast.registry.manifest import Descriptor
from regcast.transfer.channel import END, Channel, Item
from regcast.transfer.detach import DetachPolicy
from regcast.transfer.spool import Spool

DETACHED_DEPTH: Final = 2  # chunks a detached channel queues: its read goes at its pace, more buys nothing
# Detaching by relative rate (FanOut._lagging; docs/decisions.md): constants, not settings.
RATE_RATIO: Final = 4  # a target taking under 1/4 of the fastest other's rate is a slow link, not a stall
RATE_WINDOW: Final = 0.5  # seconds of a consumer's working time its rate is measured over
RATE_HOLD: Final = 0.25  # seconds in a row the read must wait on it while outpaced
RATE_CHECK: Final = 0.05  # how often a waiting read looks at the rates


Sink = Callable[[Channel], Awaitable[None]]
__all__ = ["END", "Channel", "Item", "Sink", "broadcast", "channel_cap", "check_digest", "second_read"]


async def broadcast(
    source: AsyncIterator[bytes],
    descriptor: Descriptor,
    sinks: list[Sink],
    depth: int,
    stall_timeout: float | None = None,
    detach: DetachPolicy | None = None,
    attached_done: Callable[[], None] | None = None,
    chunk_size: int | None = None,
) -> list[BaseException | None]:
    """Stream ``source`` to every sink at once; returns each sink's error (None = success).

    A source error (or a digest mismatch) fails every sink still fed by that read; a sink error
    fails only that sink. A sink that takes nothing from its waiting channel for ``stall_timeout``
    seconds (a target that stopped reading its PUT body) is cut off alone, so the others go on.
    With ``detach``, a sink that is slow but moving is moved to a second read (see there);
    ``attached_done`` is told once the source read is over, a sink is done and others go on.
    With ``chunk_size`` each channel is capped in bytes too (``channel_cap``); a detached channel
    then holds one chunk's size at most.
    """
    cap = channel_cap(depth, chunk_size, len(sinks)) if chunk_size else None
    channels = [Channel(depth, cap) for _ in sinks]

    async def run_sink(sink: Sink, ch: Channel) -> None:
        try:
            await sink(ch)
        finally:
            ch.close()

    tasks = [asyncio.create_task(run_sink(s, ch)) for s, ch in zip(sinks, channels, strict=True)]
    stalled: set[int] = set()
    watchdog = asyncio.create_task(_watch(channels, tasks, stall_timeout, stalled)) if stall_timeout else None
    try:
        await _feed(FanOut(descriptor, channels, detach, chunk_size), source, tasks, attached_done)
        results = await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        if watchdog is not None:
            watchdog.cancel()
            await asyncio.gather(watchdog, return_exceptions=True)
    return _outcomes(channels, results, stalled, stall_timeout)


async def _feed(
    fanout: FanOut,
    source: AsyncIterator[bytes],
    tasks: list[asyncio.Task[None]],
    attached_done: Callable[[], None] | None,
) -> None:
    """The main read, then the detached channels' read; a failure is told to the channels it concerns."""
    second: list[asyncio.Task[None]] = []
    try:
        try:
            await fanout.produce(source)
        except BaseException as exc:
            for f in [*fanout.attached, *fanout.detached]:
                f.ch.fail(exc)
            raise
        second.append(asyncio.create_task(fanout.finish_detached()))
        if attached_done is not None and fanout.policy is not None:
            await _told_when_stragglers_left(fanout, tasks, attached_done)
        await second[0]
    except asyncio.CancelledError:
        for t in [*tasks, *second]:
            t.cancel()
        await asyncio.gather(*tasks, *second, return_exceptions=True)
        raise
    except BaseException:  # noqa: S110 - already told to the channels it concerns
        pass
    finally:
        fanout.close_spool()  # its last reader is done (or failed): the file goes


def channel_cap(depth: int, chunk_size: int, channels: int) -> int:
    """Bytes one channel may hold: the fan-out's budget (``depth`` chunks) shared by its channels,
    at least one chunk. Chunks are shared, so the memory a blob's fan-out holds is about what its
    fullest channel holds; a lagging channel capped at its share holds no more than the budget."""
    return max(chunk_size, depth * chunk_size // max(1, channels))


def _outcomes(
    channels: list[Channel], results: list[Any], stalled: set[int], stall_timeout: float | None
) -> list[BaseException | None]:
    out: list[BaseException | None] = []
    for i, (ch, res) in enumerate(zip(channels, results, strict=True)):
        if i in stalled:
            out.append(
                RegistryUnreachable(
                    f"upload made no progress for {stall_timeout:.0f}s (the target stopped reading; "
                    "REGCAST_PROGRESS_TIMEOUT)",
                    failure=Failure.TIMEOUT,
                )
            )
        elif ch.error is not None:
            out.append(ch.error)  # the source's fault explains the sink's broken upload
        elif isinstance(res, BaseException):
            out.append(res)
        else:
            out.append(None)
    return out


async def _watch(
    channels: list[Channel], tasks: list[asyncio.Task[None]], stall_after: float, stalled: set[int]
) -> None:
    """Cut off every sink whose channel has waited ``stall_after`` seconds without being read."""
    while True:
        await asyncio.sleep(min(1.0, stall_after / 4))
        now = time.monotonic()
        for i, (ch, task) in enumerate(zip(channels, tasks, strict=True)):
            if task.done() or ch.closed or not ch.pending or now - ch.last_taken < stall_after:
                continue
            stalled.add(i)
            ch.close()  # the producer skips it from now on
            task.cancel()  # the stuck request goes with it


async def _told_when_stragglers_left(
    fanout: FanOut, tasks: list[asyncio.Task[None]], attached_done: Callable[[], None]
) -> None:
    """The source read is over: once one target is done with the blob, tell if others still go on
    (detached, or draining what their channel holds), so the caller can start its next blob."""
    running = [tasks[f.index] for f in fanout.attached if not tasks[f.index].done()]
    if running:
        await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
    if fanout.detached or any(not t.done() for t in running):
        attached_done()


class _Feed:
    """One channel as the producer sees it: how far it was fed, since when it has been full."""

    def __init__(self, index: int, ch: Channel) -> None:
        self.index = index
        self.ch = ch
        self.offset = 0  # bytes put into the channel so far
        self.held = 0.0  # net seconds the main read waited on this full channel (see FanOut._lagging)
        self.held_at = 0.0  # when that was last counted
        self.hasher: Any = None  # the digest state at ``offset`` once detached
        self.slow_held = 0.0  # seconds in a row the read waited on it while it was outpaced (_outpaced)
        self.why = "time"  # which rule detached it: "rate" or "time"


class FanOut:
    """The main read: hash, hold the last chunk back, feed every attached channel, detach laggards."""

    def __init__(
        self,
        descriptor: Descriptor,
        channels: list[Channel],
        detach: DetachPolicy | None,
        chunk_size: int | None = None,
    ) -> None:
        self.descriptor = descriptor
        self.detached_bytes = chunk_size  # a detached channel's byte cap (None: DETACHED_DEPTH items)
        self.attached = [_Feed(i, ch) for i, ch in enumerate(channels)]
        self.detached: list[_Feed] = []
        self.policy = detach
        self.spool: Spool | None = detach.spool.open(descriptor.size) if detach and detach.spool else None

    async def produce(self, source: AsyncIterator[bytes]) -> None:
        descriptor = self.descriptor
        hasher = hasher_for(descriptor.digest)  # covers every byte before ``pending``
        received = 0
        pending: bytes | None = None
        async for chunk in source:
            received += len(chunk)
            if received > descriptor.size:
                raise DigestMismatch(f"blob {descriptor.digest} is longer than its {descriptor.size} bytes")
            if self.spool is not None:
                self.spool.write(chunk)
            if pending is not None:
                before = hasher.copy() if self.policy else None
                hasher.update(pending)
                if not await self._deliver(pending, before):
                    return  # every target gave up, or was detached: stop reading
            pending = chunk
        before = hasher.copy() if self.policy else None
        if pending is not None:
            hasher.update(pending)
        check_digest(descriptor, received, hasher, "the source")
        if pending is not None:
            await self._deliver(pending, before)
        await self._deliver(END, hasher)

    async def finish_detached(self) -> None:
        """The detached channels' own, shared read (at most one per blob); its errors fail them only."""
        group = [f for f in self.detached if not f.ch.closed]
        if not group or self.policy is None:
            return
        reread, where = self.policy.reread, "a second source read"
        if self.spool is not None and self.spool.complete:
            reread, where = self.spool.read_from, "the spool"
        if self.policy.reading is not None:
            for f in group:
                self.policy.reading(f.index, where)
        try:
            await second_read(self.descriptor, group, self.policy, reread, where)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            for f in group:
                f.ch.fail(exc)
            raise

    def close_spool(self) -> None:
        if self.spool is not None:
            self.spool.close()

    async def _deliver(self, item: Item, before: Any) -> bool:
        """Put ``item`` into every attached channel; False once nobody is left to read."""
        for feed in list(self.attached):
            ch = feed.ch
            if ch.closed:
                continue
            if self.policy is not None and ch.full and await self._lagging(feed):
                self._detach(feed, before)
                continue
            if await ch.put(item):
                feed.offset += len(item) if isinstance(item, bytes) else 0
        attached = any(not f.ch.closed for f in self.attached)
        return attached or any(not f.ch.closed for f in self.detached)

    async def _lagging(self, feed: _Feed) -> bool:
        """Should ``feed``'s full channel, which holds the main read back, leave the shared stream?

        Only if another target could go on (detaching helps nobody otherwise), and then either
        (a) by relative rate: while the read waits on it, its consumer has taken bytes at under
        1/``RATE_RATIO`` of the fastest other one's rate (``Channel.rate`` over ``RATE_WINDOW`` of
        working time) for ``RATE_HOLD`` seconds of waiting in a row: a slow link is told from a
        loaded machine, where every target slows together, within a fraction of a second; or
        (b) by time, the upper bound: it has held the read back ``policy.after`` seconds, counted
        net (each wait adds its length, the read's time on anything else since takes as much off,
        so a target the read waits on most of the time gets there and one that is only now and
        then the slowest does not; a slow target takes a chunk every so often, its socket's buffer
        swallowing bursts, so no single wait is that long).
        """
        assert self.policy is not None
        loop = asyncio.get_running_loop()
        start = loop.time()
        feed.held = max(0.0, feed.held - (start - feed.held_at)) if feed.held_at else 0.0
        feed.held_at = start
        while feed.ch.full and not feed.ch.closed:
            remaining = self.policy.after - feed.held
            if remaining <= 0:
                return self._others_wait(feed)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(feed.ch.wait_writable(), min(remaining, RATE_CHECK))
            now = loop.time()
            waited, feed.held_at = now - feed.held_at, now
            feed.held += waited
            if not feed.ch.full:
                return False
            if self._outpaced(feed):
                feed.slow_held += waited
                if feed.slow_held >= RATE_HOLD and self._others_wait(feed):
                    feed.why = "rate"
                    return True
            else:
                feed.slow_held = 0.0
        return False

    def _others_wait(self, feed: _Feed) -> bool:
        """Is some other attached target waiting for ``feed`` (its channel has room)?"""
        return any(not f.ch.closed and not f.ch.full for f in self.attached if f is not feed)

    def _outpaced(self, feed: _Feed) -> bool:
        """Does ``feed``'s consumer take under 1/``RATE_RATIO`` of what the fastest other takes?"""
        mine = feed.ch.rate(RATE_WINDOW)
        if mine is None:
            return False
        rates = [f.ch.rate(RATE_WINDOW) for f in self.attached if f is not feed and not f.ch.closed]
        fastest = max((r for r in rates if r is not None), default=None)
        return fastest is not None and fastest > 0 and mine * RATE_RATIO < fastest

    def _detach(self, feed: _Feed, before: Any) -> None:
        assert self.policy is not None
        self.attached.remove(feed)
        feed.hasher = before
        # memory: its own read need not run ahead of a slow link
        if self.detached_bytes is None:
            feed.ch.shrink(DETACHED_DEPTH)
        else:
            feed.ch.shrink(feed.ch.depth, self.detached_bytes)
        self.detached.append(feed)
        if feed.why == "rate":
            why = (
                f"fell behind: its full buffer held the shared read back while it took under "
                f"1/{RATE_RATIO} of the fastest other target's rate for {RATE_HOLD:g}s"
            )
        else:
            why = (
                f"fell behind: its full buffer held the shared read back {self.policy.after:g}s "
                "while other targets waited"
            )
        self.policy.detached(feed.index, why, feed.offset)


async def second_read(
    descriptor: Descriptor,
    group: list[_Feed],
    policy: DetachPolicy,
    reread: Callable[[int], AsyncIterator[bytes]] | None = None,
    where: str = "a second source read",
) -> None:
    """Feed the detached channels from one more read, started where the furthest-behind one stopped.

    Each channel gets only the bytes after its own offset; the digest state saved when the
    first of them was detached is carried on, so the last chunk is again held back until the
    whole blob is verified (``reread`` is the source's by default, or the spool's). No detaching
    here: this read goes at the pace of its slowest reader.
    """
    first = min(group, key=lambda f: f.offset)
    hasher, position = first.hasher, first.offset
    pending: bytes | None = None

    if position < descriptor.size:
        async with contextlib.aclosing((reread or policy.reread)(position)) as source:  # type: ignore[type-var]
            async for chunk in source:
                if position + len(chunk) > descriptor.size:
                    raise DigestMismatch(f"blob {descriptor.digest} is longer than its {descriptor.size} bytes")
                if pending is not None:
                    hasher.update(pending)
                    if not await _feed_group(group, pending, position - len(pending)):
                        return
                pending = chunk
                position += len(chunk)
    if pending is not None:
        hasher.update(pending)
    check_digest(descriptor, position, hasher, where)
    if pending is not None:
        await _feed_group(group, pending, position - len(pending))
    for f in group:
        await f.ch.put(END)


async def _feed_group(group: list[_Feed], chunk: bytes, at: int) -> bool:
    """Give each channel the part of ``chunk`` (which starts at byte ``at``) beyond its own offset."""
    for f in group:
        if f.ch.closed or f.offset >= at + len(chunk):
            continue
        piece = chunk[f.offset - at :] if f.offset > at else chunk
        if await f.ch.put(piece):
            f.offset += len(piece)
    return any(not f.ch.closed for f in group)


def check_digest(descriptor: Descriptor, received: int, hasher: Any, where: str) -> None:
    actual = f"{descriptor.digest.split(':', 1)[0]}:{hasher.hexdigest()}"
    if actual == descriptor.digest and received != descriptor.size:  # the bytes are right, the manifest is not
        raise ContentError(
            f"blob {descriptor.digest} is {received} bytes, not the {descriptor.size} its manifest says; not committed"
        )
    if received != descriptor.size or actual != descriptor.digest:
        raise DigestMismatch(
            f"blob {descriptor.digest} from {where} has {received} bytes hashing to {actual}; not committed"
        )
