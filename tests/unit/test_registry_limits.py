"""RegistryLimit without a network: slots, start rate and the RateLimit-Remaining gate."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from dataclasses import dataclass, field

from regcast.registry.limits import Limits, LimitSettings, RateWait, RegistryLimit


@dataclass
class Notes:
    """A client's ``note_retry`` as the limits call it: the lines, and the waits they announce."""

    lines: list[str] = field(default_factory=list)
    waits: list[RateWait] = field(default_factory=list)

    def __call__(self, what: str, status: int | None = None, wait: RateWait | None = None) -> None:
        self.lines.append(what)
        if wait is not None:
            self.waits.append(wait)


def test_requests_per_second_spaces_starts() -> None:
    limit = RegistryLimit("r", LimitSettings(requests_per_second=20))
    notes = Notes()

    async def go() -> list[float]:
        starts = []
        for _ in range(6):
            await limit.acquire(False, notes)
            starts.append(time.monotonic())
        return starts

    starts = asyncio.run(go())
    assert starts[-1] - starts[0] >= 5 / 20 * 0.9  # five gaps of 1/20 s at least
    assert notes.lines == []


def test_slots_bound_requests_in_flight() -> None:
    limit = RegistryLimit("r", LimitSettings(max_concurrency=2))
    in_flight = peak = 0

    async def one() -> None:
        nonlocal in_flight, peak
        slots = await limit.acquire(False, Notes())
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        assert len(slots) == 1
        slots[0].release()

    async def go() -> None:
        await asyncio.gather(*(one() for _ in range(10)))

    asyncio.run(go())
    assert peak == 2


def test_remaining_under_the_minimum_closes_the_gate_for_pulls_only() -> None:
    limit = RegistryLimit("hub", LimitSettings(rate_limit_min=5))
    limit.observe(200, {"ratelimit-remaining": "50;w=21600"})
    assert limit._gate_until == 0  # plenty left
    limit.observe(200, {"ratelimit-remaining": "3;w=0.3"})
    notes = Notes()

    async def go() -> float:
        await limit.acquire(False, notes)  # a HEAD is free: not gated, nothing to wait for
        assert notes.lines == []
        t = time.monotonic()
        await limit.acquire(True, notes)  # a pull waits for the window
        return time.monotonic() - t

    before = dt.datetime.now(dt.UTC)
    assert asyncio.run(go()) >= 0.2
    assert len(notes.lines) == 1
    assert "waiting" in notes.lines[0]
    assert "rate limit under 5" in notes.lines[0]
    (wait,) = notes.waits  # the status is told until when
    assert wait.registry == "hub"
    assert before < wait.until <= before + dt.timedelta(seconds=1)
    assert wait.shown().startswith("waiting for the rate limit of registry hub until ")
    assert wait.shown().endswith(": RateLimit-Remaining under 5, no pull started")
    limit.observe(429, {"Retry-After": "1"})
    assert limit._gate_until > time.monotonic() + 0.5


def test_limits_by_host() -> None:
    limits = Limits()
    limits.configure("Reg.Example:5000", LimitSettings(max_concurrency=3))
    limits.configure("other.example", LimitSettings())
    assert limits.for_host("reg.example:5000") is not None
    assert limits.for_host("other.example") is None  # nothing to limit


def test_downloads_never_hold_every_slot() -> None:
    """A streamed download takes one of max_concurrency - 1 reader slots too: however many downloads wait,
    one slot stays for the uploads (and HEADs) they feed, within one registry."""

    async def go() -> tuple[int, bool]:
        limit = RegistryLimit("r", LimitSettings(max_concurrency=3))
        held = [await limit.acquire(False, Notes(), reading=True) for _ in range(2)]
        third = asyncio.ensure_future(limit.acquire(False, Notes(), reading=True))
        await asyncio.sleep(0.01)
        upload = await asyncio.wait_for(limit.acquire(False, Notes()), 1)  # the slot downloads cannot take
        waiting = not third.done()
        for sem in upload + held[0]:
            sem.release()
        got = await asyncio.wait_for(third, 1)
        return len(got), waiting

    assert asyncio.run(go()) == (2, True)


def test_docker_hub_is_one_limit_under_any_of_its_names() -> None:
    """Plans name Hub docker.io, jobs its API host registry-1.docker.io, docker's config index.docker.io:
    one limit for all, or its max_concurrency doubled and a closed pull gate ignored by the other half."""
    limits = Limits()
    limits.configure("index.docker.io", LimitSettings(max_concurrency=2))
    hub = limits.for_host("docker.io")
    assert hub is not None
    assert limits.for_host("registry-1.docker.io") is hub and limits.for_host("Index.Docker.IO") is hub
    limits.configure("reg.example:5000", LimitSettings(max_concurrency=1))
    assert limits.for_host("reg.example:5000") is not hub
