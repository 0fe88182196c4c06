"""Per-registry request limits shared by every client of a process (all jobs, all passes).

``RegistryLimit`` holds three things for one registry: at most ``max_concurrency`` requests in
flight (a slot is held until the response is released, so streamed bodies count), at most
``requests_per_second`` started (a token bucket), and a gate on pulls (manifest GETs, what
Docker Hub counts) that closes while ``RateLimit-Remaining`` is under ``rate_limit_min``, until
the window resets. Waiting is never a failure: the client notes it (logs, job status) and goes on.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from regcast.registry._transport import parse_retry_after
from regcast.registry.reference import canonical_registry
from regcast.registry.session import release_also
from regcast.registry.tls import aiohttp

DEFAULT_WINDOW = 60.0  # seconds to wait when a registry gives no window or Retry-After


@dataclass(frozen=True)
class RateWait:
    """Requests to a registry held back by its rate limit (a 429's ``Retry-After``, the
    ``RateLimit-Remaining`` gate) until ``until``: what a job's or a mirror run's status shows, so a
    copy that waits does not look stuck. ``why`` is secret-free (redacted URL, no header)."""

    registry: str
    until: dt.datetime
    why: str

    @classmethod
    def after(cls, registry: str, seconds: float, why: str) -> RateWait:
        return cls(registry, dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds), why)

    def shown(self) -> str:
        """One line for a status: what it waits for, and until when (UTC, to the second)."""
        until = self.until.astimezone(dt.UTC).isoformat(timespec="seconds")
        return f"waiting for the rate limit of registry {self.registry} until {until}: {self.why}"


class Note(Protocol):
    """``RegistryClient.note_retry``: a retry or a wait, told to the client's watchers."""

    def __call__(self, what: str, status: int | None = None, wait: RateWait | None = None) -> None: ...


@dataclass(frozen=True)
class LimitSettings:
    max_concurrency: int | None = None
    requests_per_second: float | None = None
    rate_limit_min: int | None = None

    @property
    def any(self) -> bool:
        return bool(self.max_concurrency or self.requests_per_second or self.rate_limit_min is not None)


def _remaining(headers: Mapping[str, str]) -> tuple[int, float | None] | None:
    """``RateLimit-Remaining: 12;w=21600`` -> (12, 21600.0)."""
    raw = headers.get("ratelimit-remaining") or headers.get("RateLimit-Remaining")
    if not raw:
        return None
    left, _, rest = raw.partition(";")
    try:
        count = int(left.strip())
    except ValueError:
        return None
    window = None
    for part in rest.split(";"):
        key, _, value = part.strip().partition("=")
        if key == "w":
            try:
                window = float(value)
            except ValueError:
                window = None
    return count, window


class RegistryLimit:
    """The limits of one registry; safe to share between the tasks of one event loop."""

    def __init__(self, name: str, settings: LimitSettings) -> None:
        self.name = name
        self.settings = settings
        self._slots, self._readers = _semaphores(settings.max_concurrency)
        self._next_start = 0.0
        self._gate_until = 0.0
        self.waits = 0  # times a request waited for the rate-limit gate

    def update(self, settings: LimitSettings) -> None:
        """New settings (a document changed); the concurrency bound only grows a fresh semaphore when idle."""
        if settings == self.settings:
            return
        if settings.max_concurrency != self.settings.max_concurrency:
            self._slots, self._readers = _semaphores(settings.max_concurrency)
        self.settings = settings

    async def acquire(self, pull: bool, note: Note, reading: bool = False) -> list[asyncio.Semaphore]:
        """Wait for the gate (pulls), a start token and a slot; returns the semaphores to release.

        A streamed download (``reading``) also takes one of ``max_concurrency - 1`` reader slots, so
        downloads never hold every slot: a download within one registry (a copy whose mount was refused)
        feeds an upload that needs a slot of its own, and with every slot held by downloads each waited
        for the others for ever. At ``max_concurrency: 1`` a download gives its slot back once its
        headers are in (``send_within``): that copy needs two requests at once, or it cannot be made."""
        if pull and self.settings.rate_limit_min is not None:
            while (wait := self._gate_until - time.monotonic()) > 0:
                self.waits += 1
                why = f"RateLimit-Remaining under {self.settings.rate_limit_min}, no pull started"
                note(
                    f"registry {self.name}: rate limit under {self.settings.rate_limit_min} remaining; "
                    f"waiting {wait:.0f}s before pulling",
                    wait=RateWait.after(self.name, wait, why),
                )
                await asyncio.sleep(wait)
        if self.settings.requests_per_second:
            now = time.monotonic()
            start = max(now, self._next_start)
            self._next_start = start + 1.0 / self.settings.requests_per_second
            if start > now:
                await asyncio.sleep(start - now)
        held: list[asyncio.Semaphore] = []
        for sem in (self._readers if reading else None, self._slots):
            if sem is None:
                continue
            try:
                await sem.acquire()
            except BaseException:
                for h in held:
                    h.release()
                raise
            held.append(sem)
        return held

    @property
    def single(self) -> bool:
        """``max_concurrency: 1``: a download keeps no slot once its headers are in (see ``acquire``)."""
        return self.settings.max_concurrency == 1

    def observe(self, status: int, headers: Mapping[str, str]) -> None:
        """Close the pull gate when the registry says few pulls are left (or a 429 says none)."""
        if self.settings.rate_limit_min is None:
            return
        found = _remaining(headers)
        if found is None and status != 429:
            return
        left, window = found if found else (0, None)
        if left >= self.settings.rate_limit_min and status != 429:
            return
        wait = parse_retry_after(headers.get("Retry-After")) or window or DEFAULT_WINDOW
        self._gate_until = max(self._gate_until, time.monotonic() + wait)


class Limits:
    """Every registry's ``RegistryLimit`` in one process, by host[:port] as references name it: Docker Hub
    is one registry whichever of its names a document, a plan or a job uses (``canonical_registry``)."""

    def __init__(self) -> None:
        self._by_host: dict[str, RegistryLimit] = {}

    def configure(self, host: str, settings: LimitSettings) -> None:
        key = canonical_registry(host)
        if key in self._by_host:
            self._by_host[key].update(settings)
        elif settings.any:
            self._by_host[key] = RegistryLimit(key, settings)

    def for_host(self, host: str) -> RegistryLimit | None:
        return self._by_host.get(canonical_registry(host))


async def send_within(
    limit: RegistryLimit | None,
    pull: bool,
    note: Note,
    send: Callable[[], Awaitable[aiohttp.ClientResponse]],
    reading: bool = False,
) -> aiohttp.ClientResponse:
    """``send()`` within ``limit``: its slots are held until the caller releases the response (a streamed
    download's, ``reading``: see ``RegistryLimit.acquire``)."""
    if limit is None:
        return await send()
    held = await limit.acquire(pull, note, reading)
    try:
        resp = await send()
    except BaseException:
        for sem in held:
            sem.release()
        raise
    limit.observe(resp.status, resp.headers)
    if reading and limit.single and held:
        held.pop().release()  # the one slot: the upload this download may feed needs it
    for sem in held:
        release_also(resp, sem.release)
    return resp


def _semaphores(max_concurrency: int | None) -> tuple[asyncio.Semaphore | None, asyncio.Semaphore | None]:
    """The slots of ``max_concurrency`` and the reader slots within them (``RegistryLimit.acquire``)."""
    if not max_concurrency:
        return None, None
    return asyncio.Semaphore(max_concurrency), asyncio.Semaphore(max(max_concurrency - 1, 1))
