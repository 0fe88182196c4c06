"""RegistryLimit without a network: slots, start rate and the RateLimit-Remaining gate."""

from __future__ import annotations

import asyncio
import time

from regcast.registry.limits import Limits, LimitSettings, RegistryLimit


def test_requests_per_second_spaces_starts() -> None:
    limit = RegistryLimit("r", LimitSettings(requests_per_second=20))
    notes: list[str] = []

    async def go() -> list[float]:
        starts = []
        for _ in range(6):
            await limit.acquire(False, notes.append)
            starts.append(time.monotonic())
        return starts

    starts = asyncio.run(go())
    assert starts[-1] - starts[0] >= 5 / 20 * 0.9  # five gaps of 1/20 s at least
    assert notes == []


def test_slots_bound_requests_in_flight() -> None:
    limit = RegistryLimit("r", LimitSettings(max_concurrency=2))
    in_flight = peak = 0

    async def one() -> None:
        nonlocal in_flight, peak
        slots = await limit.acquire(False, lambda _m: None)
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        assert slots is not None
        slots.release()

    async def go() -> None:
        await asyncio.gather(*(one() for _ in range(10)))

    asyncio.run(go())
    assert peak == 2


def test_remaining_under_the_minimum_closes_the_gate_for_pulls_only() -> None:
    limit = RegistryLimit("hub", LimitSettings(rate_limit_min=5))
    limit.observe(200, {"ratelimit-remaining": "50;w=21600"})
    assert limit._gate_until == 0  # plenty left
    limit.observe(200, {"ratelimit-remaining": "3;w=0.3"})
    notes: list[str] = []

    async def go() -> float:
        await limit.acquire(False, notes.append)  # a HEAD is free: not gated, nothing to wait for
        assert notes == []
        t = time.monotonic()
        await limit.acquire(True, notes.append)  # a pull waits for the window
        return time.monotonic() - t

    assert asyncio.run(go()) >= 0.2
    assert len(notes) == 1
    assert "waiting" in notes[0]
    assert "rate limit under 5" in notes[0]
    limit.observe(429, {"Retry-After": "1"})
    assert limit._gate_until > time.monotonic() + 0.5


def test_limits_by_host() -> None:
    limits = Limits()
    limits.configure("Reg.Example:5000", LimitSettings(max_concurrency=3))
    limits.configure("other.example", LimitSettings())
    assert limits.for_host("reg.example:5000") is not None
    assert limits.for_host("other.example") is None  # nothing to limit
