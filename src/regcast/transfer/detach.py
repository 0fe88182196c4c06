"""Detaching a lagging target from a blob's shared stream (issue 19): the policy and the second read.

A target whose fan-out channel stays full longer than ``after`` seconds while others wait is
moved off the shared stream; the others go on at their pace. The detached targets of a blob
share one more read of the source, from the offset the furthest-behind of them reached (a
``Range`` request where the source can, else a full read whose prefix is skipped), so their
upload sessions continue rather than restart: at most two source reads per blob.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from regcast.registry.manifest import Descriptor
from regcast.transfer.spool import SpoolBudget


@dataclass(frozen=True)
class DetachPolicy:
    """For one blob's fan-out: the grace, how to read again from an offset, whom to tell."""

    after: float  # seconds a channel may stay full before its target is detached
    reread: Callable[[int], AsyncIterator[bytes]]  # the blob's bytes from an offset on
    detached: Callable[[int, str, int], None]  # (sink index, why, offset reached)
    spool: SpoolBudget | None = None  # keep the blob on disk for detached targets (the job spools)
    reading: Callable[[int, str], None] | None = None  # (sink index, where its detached read comes from)


@dataclass
class Stragglers:
    """How many blobs of a run went on with detached targets only, out of their slot (capped)."""

    cap: int
    count: int = 0


class Slot:
    """A place among ``blobs_in_flight`` that can be handed over early: once only detached targets
    are left on a blob, the next blob starts for the others. At most ``stragglers.cap`` blobs go
    on that way at once (memory stays bounded: each holds a channel per detached target)."""

    def __init__(self, slots: asyncio.Semaphore, stragglers: Stragglers) -> None:
        self._slots = slots
        self._stragglers = stragglers
        self._held = False
        self._straggling = False

    async def __aenter__(self) -> Slot:
        await self._slots.acquire()
        self._held = True
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._held:
            self._held = False
            self._slots.release()
        if self._straggling:
            self._straggling = False
            self._stragglers.count -= 1

    def hand_over(self) -> None:
        """Give the slot back now if the run may have one more straggling blob (else keep it)."""
        if self._held and self._stragglers.count < self._stragglers.cap:
            self._stragglers.count += 1
            self._straggling = True
            self._held = False
            self._slots.release()


@runtime_checkable
class RangedSource(Protocol):
    """A source that can start a blob's stream at an offset (a registry: ``Range``)."""

    def read_blob_from(self, blob: Descriptor, offset: int) -> AsyncIterator[bytes]: ...


class _Source(Protocol):
    def read_blob(self, blob: Descriptor) -> AsyncIterator[bytes]: ...


def read_from(source: _Source, blob: Descriptor, offset: int) -> AsyncIterator[bytes]:
    """``blob``'s bytes from ``offset`` on: ranged where the source can, else skipping the prefix."""
    if isinstance(source, RangedSource):
        return source.read_blob_from(blob, offset)
    return _skip(source.read_blob(blob), offset)


async def _skip(stream: AsyncIterator[bytes], offset: int) -> AsyncIterator[bytes]:
    try:
        async for chunk in stream:
            if offset >= len(chunk):
                offset -= len(chunk)
                continue
            yield chunk[offset:] if offset else chunk
            offset = 0
    finally:
        close = getattr(stream, "aclose", None)
        if close is not None:
            await close()  # stopping early closes the download too
