"""ConnectionSlots: a request's clock starts once a pooled connection is free (its timeout never counts the
wait), a slot comes back with the response, and a long wait is said, not silent."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from regcast.registry import session
from regcast.registry.session import ConnectionSlots


class FakeResponse:
    released = 0

    def release(self) -> None:
        FakeResponse.released += 1


def test_a_slot_comes_back_with_its_response_and_a_long_wait_is_said(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(session, "SLOT_WAIT_WARNING", 0.05)
    slots = ConnectionSlots(1, "reg.example")

    async def answer() -> Any:
        return FakeResponse()

    async def go() -> None:
        first = await slots.send(answer)
        second = asyncio.ensure_future(slots.send(answer))
        await asyncio.sleep(0.12)  # two warnings' worth: the one connection is busy
        assert not second.done()
        first.release()  # the slot follows the connection
        (await asyncio.wait_for(second, 1)).release()
        third = await asyncio.wait_for(slots.send(answer), 1)  # released: free again, at once
        third.release()
        third.release()  # a second release gives nothing back twice

    with caplog.at_level(logging.WARNING, logger="regcast.registry"):
        asyncio.run(go())
    said = [r.getMessage() for r in caplog.records]
    assert said and said[0].startswith("registry reg.example: a request has waited ")
    assert said[0].endswith("s for one of its 1 connections")
    assert FakeResponse.released == 4
