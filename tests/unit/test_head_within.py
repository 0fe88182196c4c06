"""``_head_within``: a send given up on never keeps its answer (and so its pooled connection) unreleased."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from regcast.registry.request import _head_within, _Sent


class _Answer:
    def __init__(self) -> None:
        self.released = False

    def release(self) -> None:
        self.released = True


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield b""


def test_an_answer_arriving_as_its_caller_is_cancelled_is_released() -> None:
    """The send completes and, in the same turn, the caller is cancelled (a job cancel, a deadline): the
    answer nobody will read was left holding its connection until garbage collection."""

    async def run() -> tuple[_Answer, bool]:
        answer, gate = _Answer(), asyncio.Event()

        async def send() -> _Answer:
            await gate.wait()
            return answer

        body = _Sent(_nothing())
        body.ended.set()
        task = asyncio.ensure_future(_head_within(send, 30, body))
        for _ in range(3):  # the task now waits on the shielded send
            await asyncio.sleep(0)
        gate.set()
        await asyncio.sleep(0)  # the send returns; the shield's wake-up is queued, not run
        task.cancel()
        cancelled = False
        try:
            await task
        except asyncio.CancelledError:
            cancelled = True
        return answer, cancelled

    answer, cancelled = asyncio.run(run())
    assert cancelled
    assert answer.released


def test_a_send_outliving_its_deadline_is_stopped_and_waited_for() -> None:
    async def run() -> tuple[bool, bool]:
        stopped = asyncio.Event()

        async def send() -> _Answer:
            try:
                await asyncio.sleep(60)
            finally:
                await asyncio.sleep(0)  # unwinding takes a turn: the caller must wait for it
                stopped.set()
            return _Answer()

        body = _Sent(_nothing())
        body.ended.set()
        timed_out = False
        try:
            await _head_within(send, 0.05, body)
        except TimeoutError:
            timed_out = True
        return timed_out, stopped.is_set()

    assert asyncio.run(run()) == (True, True)
