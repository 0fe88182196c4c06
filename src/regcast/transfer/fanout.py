"""Read once, write many: one source stream fans out to every target that needs the blob.

Each target has a bounded ``Channel``; chunks are shared ``bytes`` objects (no copies), so memory
is about ``depth x chunk size`` per blob in flight, whatever the blob size. A slow target stalls
the others only once its channel is full. The last chunk is held back until the whole blob has
been hashed: a blob whose bytes do not match its digest is never completed at any target.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final

from regcast._exceptions import DigestMismatch, Failure, RegistryUnreachable
from regcast.registry.digest import hasher_for
from regcast.registry.manifest import Descriptor


class _End:
    pass


END: Final = _End()
Item = bytes | _End


class Channel:
    """A bounded single-producer, single-consumer queue that can be failed from either side."""

    def __init__(self, depth: int) -> None:
        self._items: deque[Item] = deque()
        self._depth = max(1, depth)
        self._error: BaseException | None = None
        self.closed = False  # the consumer gave up
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self.last_taken = time.monotonic()  # the consumer's progress, for stall detection
        self._writable.set()

    async def put(self, item: Item) -> bool:
        """Queue ``item``; False if the consumer has gone."""
        while len(self._items) >= self._depth and not self.closed:
            self._writable.clear()
            await self._writable.wait()
        if self.closed:
            return False
        self._items.append(item)
        self._readable.set()
        return True

    def fail(self, exc: BaseException) -> None:
        """The producer failed: the consumer raises ``exc`` on its next read."""
        self._error = exc
        self._readable.set()

    @property
    def error(self) -> BaseException | None:
        return self._error

    @property
    def pending(self) -> int:
        """Items waiting for the consumer."""
        return len(self._items)

    def close(self) -> None:
        """The consumer stops reading; the producer skips this channel from now on."""
        self.closed = True
        self._writable.set()

    async def get(self) -> Item:
        while not self._items and self._error is None:
            self._readable.clear()
            await self._readable.wait()
        if self._error is not None:
            raise self._error
        item = self._items.popleft()
        self.last_taken = time.monotonic()
        self._writable.set()
        return item

    async def body(self, first: Item, on_chunk: Callable[[int], None]) -> AsyncIterator[bytes]:
        """The request body for a target: ``first`` (already read) and every chunk until the end."""
        item: Item = first
        while not isinstance(item, _End):
            if item:
                yield item
                on_chunk(len(item))
            item = await self.get()


Sink = Callable[[Channel], Awaitable[None]]


async def broadcast(
    source: AsyncIterator[bytes],
    descriptor: Descriptor,
    sinks: list[Sink],
    depth: int,
    stall_timeout: float | None = None,
) -> list[BaseException | None]:
    """Stream ``source`` to every sink at once; returns each sink's error (None = success).

    A source error (or a digest mismatch) fails every sink; a sink error fails only that sink. A
    sink that takes nothing from its waiting channel for ``stall_timeout`` seconds (a target that
    stopped reading its PUT body) is cut off alone, so the others go on.
    """
    channels = [Channel(depth) for _ in sinks]

    async def run_sink(sink: Sink, ch: Channel) -> None:
        try:
            await sink(ch)
        finally:
            ch.close()

    tasks = [asyncio.create_task(run_sink(s, ch)) for s, ch in zip(sinks, channels, strict=True)]
    stalled: set[int] = set()
    watchdog = asyncio.create_task(_watch(channels, tasks, stall_timeout, stalled)) if stall_timeout else None
    try:
        try:
            await _produce(source, descriptor, channels)
        except BaseException as exc:
            for ch in channels:
                ch.fail(exc)
            if isinstance(exc, asyncio.CancelledError):
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise
        results = await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        if watchdog is not None:
            watchdog.cancel()
            await asyncio.gather(watchdog, return_exceptions=True)
    return _outcomes(channels, results, stalled, stall_timeout)


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


async def _produce(source: AsyncIterator[bytes], descriptor: Descriptor, channels: list[Channel]) -> None:
    hasher = hasher_for(descriptor.digest)
    received = 0
    pending: bytes | None = None

    async def deliver(item: Item) -> bool:
        alive = False
        for ch in channels:
            if not ch.closed and await ch.put(item):
                alive = True
        return alive

    async for chunk in source:
        received += len(chunk)
        if received > descriptor.size:
            raise DigestMismatch(f"blob {descriptor.digest} is longer than its {descriptor.size} bytes")
        hasher.update(chunk)
        if pending is not None and not await deliver(pending):
            return  # every target gave up: stop reading
        pending = chunk
    actual = f"{descriptor.digest.split(':', 1)[0]}:{hasher.hexdigest()}"
    if received != descriptor.size or actual != descriptor.digest:
        raise DigestMismatch(
            f"blob {descriptor.digest} from the source has {received} bytes hashing to {actual}; not committed"
        )
    if pending is not None:
        await deliver(pending)
    await deliver(END)
