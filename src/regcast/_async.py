"""Small asyncio helpers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def gather_all(*aws: Awaitable[T]) -> list[T]:
    """Like ``asyncio.gather`` but always waits for every child, even when cancelled or when one fails.

    Plain ``gather`` resolves as soon as one child is cancelled and leaves the rest running, so
    cleanup (cancelling upload sessions) would outlive the copy; this re-raises the first error
    only once all children are done.
    """
    results = await asyncio.gather(*aws, return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException):
            raise r
    return results  # type: ignore[return-value]
