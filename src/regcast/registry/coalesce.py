"""Identical idempotent reads in flight are sent once (issue 17: N jobs of one image).

Twenty jobs copying the same image each HEAD the source manifest, GET it, HEAD every target's tag
and list its tags at the same moment. The clients of one pool entry (``pool.py``: same registry,
credentials and client options) share one ``InFlight``; a read whose key is already in flight there
is joined instead of sent again. Only the flight is shared, never a finished answer: the entry is
dropped when the read ends, so nothing is cached and nothing can go stale. Only small reads whose
whole answer is a value (a digest, a parsed manifest, a yes/no) go through it; blob GETs stream
and never do. Credentials are not part of the key because a pool entry already belongs to exactly
one set of credentials; keys hold method and URL only, never a secret, and are never logged.

The read runs in a task of its own that every caller awaits shielded: a caller cancelled mid-read
(its job cancelled) does not cancel the read the others wait for; once the last caller has gone,
the read is cancelled (nobody wants it, and it would go on retrying). Every joiner gets the same value
or the same (already translated) ``RegcastError``. Retries and their notes happen once, on the
client that started the read.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar

T = TypeVar("T")


class InFlight:
    """Reads under way, by key; ``joined`` counts reads that were another caller's (tests, metrics)."""

    def __init__(self) -> None:
        self._flights: dict[Hashable, asyncio.Future[Any]] = {}
        self._callers: dict[asyncio.Future[Any], int] = {}  # callers still awaiting each read
        self.joined = 0

    async def read(self, key: Hashable, make: Callable[[], Awaitable[T]]) -> T:
        """``await make()``, or the result of the identical read already under way."""
        task = self._flights.get(key)
        if task is None:
            task = asyncio.ensure_future(make())
            self._flights[key] = task
            task.add_done_callback(functools.partial(self._ended, key))
        else:
            self.joined += 1
        self._callers[task] = self._callers.get(task, 0) + 1
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.cancelled() and not _cancelling():
                # the read itself was cancelled (loop shutting down, not this caller): do it ourselves
                return await make()
            raise
        finally:
            self._left(task)

    def _left(self, task: asyncio.Future[Any]) -> None:
        """One caller is done with ``task``; the last one leaving a read under way cancels it."""
        left = self._callers[task] - 1
        if left:
            self._callers[task] = left
            return
        del self._callers[task]
        if not task.done():
            task.cancel()

    def _ended(self, key: Hashable, task: asyncio.Future[Any]) -> None:
        if self._flights.get(key) is task:
            del self._flights[key]
        if not task.cancelled():
            task.exception()  # retrieved: a read whose callers were all cancelled logs no warning

    def __len__(self) -> int:
        return len(self._flights)


def _cancelling() -> bool:
    current = asyncio.current_task()
    return current is not None and current.cancelling() > 0
