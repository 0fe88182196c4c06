"""Worker liveness: a row per worker, heartbeats on the database's clock, and the reaper.

Timing (defaults ``heartbeat_interval`` 2 s, ``stale_after`` 10 s; see ``docs/decisions.md``):
a worker killed at *t* has its jobs requeued by another worker's reaper by
*t* + ``stale_after`` + one reaper interval, and NOTIFY wakes an idle worker to claim them.
A restarted process on the same machine does not wait: a row of this machine whose process no
longer exists is dead for certain, and its jobs are requeued at start.

The reaper judges others only after its own process has been connected to the database for a
full ``stale_after``: after an outage everyone's heartbeat is old, and live workers need that
long to refresh theirs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

from regcast._exceptions import JobStoreUnavailable
from regcast.config import Settings
from regcast.jobs.store import JobStore, failure_reason

log = logging.getLogger("regcast.worker")
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def host_identity() -> str:
    """This machine: hostname plus boot id (a pid means the same process only within one boot)."""
    try:
        boot = BOOT_ID.read_text().strip()
    except OSError:
        boot = "?"
    return f"{socket.gethostname()}/{boot}"[:255]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Liveness:
    """Registers the worker, keeps its heartbeat, and reaps the jobs of workers that died."""

    def __init__(
        self,
        store: JobStore,
        settings: Settings,
        worker_id: str,
        stopping: asyncio.Event,
        on_ended: Callable[[list[str]], None] | None = None,
    ) -> None:
        self.store = store
        self.on_ended = on_ended  # jobs the reaper ended (given up, or cancelled as asked): their notifications
        self.settings = settings
        self.id = worker_id
        self.host = host_identity()
        self.pid = os.getpid()
        self.stopping = stopping
        self.connected_since: float | None = None  # monotonic; None while the database is unreachable

    @property
    def connected(self) -> bool:
        return self.connected_since is not None

    def _seen(self, ok: bool) -> None:
        if not ok:
            self.connected_since = None
        elif self.connected_since is None:
            self.connected_since = time.monotonic()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)

    async def start(self) -> bool:
        """Register (retrying while the database is down), then requeue the jobs of this machine's
        dead processes. False if stopped first."""
        delay = 0.5
        while not self.stopping.is_set():
            try:
                await asyncio.to_thread(self.store.register_worker, self.id, self.host, self.pid)
                self._seen(True)
                dead = [
                    w.id
                    for w in await asyncio.to_thread(self.store.workers)
                    if w.host == self.host and w.id != self.id and (w.pid == self.pid or not pid_alive(w.pid))
                ]
                # no staleness judgement yet (not connected long enough): only certain deaths and orphans
                await self._reap(None, dead)
                return True
            except JobStoreUnavailable as exc:
                self._seen(False)
                why = failure_reason(exc)
                log.warning("worker %s: cannot register (%s: %s); retrying in %.1fs", self.id, exc, why, delay)
                await self._sleep(delay)
                delay = min(delay * 2, 5.0)
        return False

    async def heartbeats(self) -> None:
        interval = self.settings.heartbeat_interval
        while not self.stopping.is_set():
            try:
                known = await asyncio.to_thread(self.store.heartbeat, self.id, self.host, self.pid)
                if not known:
                    log.warning("worker %s: had been judged dead; registered again", self.id)
                self._seen(True)
            except JobStoreUnavailable as exc:
                if self.connected:
                    log.warning("worker %s: heartbeat failed (%s)", self.id, exc)
                self._seen(False)
            await self._sleep(interval)

    async def reaper(self) -> None:
        stale = self.settings.stale_after
        interval = max(0.2, min(self.settings.heartbeat_interval, stale / 4))
        while not self.stopping.is_set():
            since = self.connected_since
            if since is not None and time.monotonic() - since >= stale:
                try:
                    await self._reap(stale)
                except JobStoreUnavailable as exc:
                    log.warning("reaper: %s", exc)
                    self._seen(False)
            await self._sleep(interval)

    async def _reap(self, stale: float | None, dead: list[str] | None = None) -> None:
        ended: list[str] = []
        await asyncio.to_thread(self.store.reap, stale, self.settings.max_attempts, dead or (), ended)
        if ended and self.on_ended is not None:
            self.on_ended(ended)

    async def stop(self) -> None:
        """A clean stop deregisters: nobody has to wait for this worker to look stale."""
        try:
            await asyncio.to_thread(self.store.deregister_worker, self.id)
        except JobStoreUnavailable as exc:
            log.warning("worker %s: could not deregister (%s); it will be reaped as stale", self.id, exc)
