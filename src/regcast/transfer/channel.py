"""The bounded queue between a blob's read and one target's upload (``transfer/fanout.py``).

Bounded in items and, given a byte cap, in bytes: a consumer that lags holds at most its cap,
whatever the size of the chunks it is fed (``chunk_size`` from the main read, smaller from a detached read).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Final


class _End:
    pass


RATE_HISTORY: Final = 2.0  # seconds of a consumer's working time its rate samples cover at most


END: Final = _End()
Item = bytes | _End


class Channel:
    """A bounded single-producer, single-consumer queue that can be failed from either side.

    Bounded by items (``depth``) and, with ``max_bytes``, by the bytes it holds: a channel never
    holds more than ``max_bytes`` (one item larger than that alone excepted), whatever the chunk
    sizes, so a lagging consumer holds at most its share of the fan-out's memory.
    """

    def __init__(self, depth: int, max_bytes: int | None = None) -> None:
        self._items: deque[Item] = deque()
        self._depth = max(1, depth)
        self._max_bytes = max_bytes
        self._bytes = 0  # held by the queued items
        self._last = 0  # size of the last item put: what "full" is measured against
        self._error: BaseException | None = None
        self.closed = False  # the consumer gave up
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self.last_taken = time.monotonic()  # the consumer's progress, for stall detection
        self._writable.set()
        # the consumer's drain rate (``rate``): bytes taken against its own working time
        self._taken = 0  # bytes taken so far
        self._starved = 0.0  # seconds the consumer waited in ``get`` for an item
        self._starved_since: float | None = None
        self._samples: deque[tuple[float, int]] = deque([(self._work(), 0)], maxlen=1024)

    def fits(self, size: int) -> bool:
        """Would an item of ``size`` bytes be queued now (an empty channel takes any one item)?"""
        if not self._items:
            return True
        if len(self._items) >= self._depth:
            return False
        return self._max_bytes is None or self._bytes + size <= self._max_bytes

    async def put(self, item: Item) -> bool:
        """Queue ``item``; False if the consumer has gone."""
        size = len(item) if isinstance(item, bytes) else 0
        while not self.fits(size) and not self.closed:
            self._writable.clear()
            await self._writable.wait()
        if self.closed:
            return False
        self._items.append(item)
        self._bytes += size
        self._last = size or self._last
        self._readable.set()
        return True

    @property
    def full(self) -> bool:
        """No room for another item like the last one."""
        return not self.fits(self._last)

    @property
    def depth(self) -> int:
        return self._depth

    @property
    def max_bytes(self) -> int | None:
        return self._max_bytes

    @property
    def held_bytes(self) -> int:
        """Bytes queued, not yet taken by the consumer."""
        return self._bytes

    async def wait_writable(self) -> None:
        """Until there is room (or the consumer has gone)."""
        while self.full and not self.closed:
            self._writable.clear()
            await self._writable.wait()

    def shrink(self, depth: int, max_bytes: int | None = None) -> None:
        """Queue at most ``depth`` items (and ``max_bytes``) from now on (those already queued stay)."""
        self._depth = max(1, min(self._depth, depth))
        if max_bytes is not None:
            self._max_bytes = max_bytes if self._max_bytes is None else min(self._max_bytes, max_bytes)

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
        if not self._items and self._error is None:
            self._starved_since = time.monotonic()
            try:
                while not self._items and self._error is None:
                    self._readable.clear()
                    await self._readable.wait()
            finally:
                self._starved += time.monotonic() - self._starved_since
                self._starved_since = None
        if self._error is not None:
            raise self._error
        item = self._items.popleft()
        size = len(item) if isinstance(item, bytes) else 0
        self._bytes -= size
        self._taken += size
        self.last_taken = time.monotonic()
        work = self._work()
        self._samples.append((work, self._taken))
        while len(self._samples) > 2 and self._samples[1][0] <= work - RATE_HISTORY:
            self._samples.popleft()  # bounded: ``rate`` looks back ``RATE_HISTORY`` at most
        self._writable.set()
        return item

    def _work(self, now: float | None = None) -> float:
        """The consumer's working clock: wall time less the time it waited for items."""
        now = time.monotonic() if now is None else now
        waiting = now - self._starved_since if self._starved_since is not None else 0.0
        return now - self._starved - waiting

    def rate(self, window: float) -> float | None:
        """Bytes per second the consumer took over its last ``window`` seconds of working time.

        Working time leaves out its waits for items, so a fast consumer the producer starves
        (as when the shared read waits on another, full channel) keeps the rate it showed while
        fed, and a consumer that stops taking (a full channel) sees its rate fall as time goes
        on. Under CPU load every consumer slows together, so rates compare across channels where
        seconds do not. None before any working time has passed. ``window`` <= ``RATE_HISTORY``.
        """
        work = self._work()
        while len(self._samples) > 1 and self._samples[1][0] <= work - window:
            self._samples.popleft()  # keep one sample at or before the window's start
        since, taken = self._samples[0]
        if work - since <= 0:
            return None
        return (self._taken - taken) / (work - since)

    async def body(self, first: Item, on_chunk: Callable[[int], None]) -> AsyncIterator[bytes]:
        """The request body for a target: ``first`` (already read) and every chunk until the end."""
        item: Item = first
        while not isinstance(item, _End):
            if item:
                yield item
                on_chunk(len(item))
            item = await self.get()
