"""One upload per blob and registry at a time across every copy of a process (single flight).

Two jobs that need the same blob at the same registry would otherwise both read the source and
both upload. The first claims the (registry, digest) flight and streams; the others wait for it,
then HEAD (same repository: present) or mount (another repository there). Across processes
nothing is shared: two replicas may both upload, which content addressing makes harmless.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable


class BlobFlights:
    def __init__(self) -> None:
        self._flights: dict[tuple[str, str], asyncio.Event] = {}
        self.waited = 0  # times a copy waited for another's upload (for tests and metrics)

    def claim(self, location: str, digest: str) -> asyncio.Event | None:
        """None: the caller now owns the flight (and must call ``done``); else the event to wait for."""
        event = self._flights.get((location, digest))
        if event is not None:
            self.waited += 1
            return event
        self._flights[(location, digest)] = asyncio.Event()
        return None

    def done(self, location: str, digest: str) -> None:
        event = self._flights.pop((location, digest), None)
        if event is not None:
            event.set()


class ManifestFlights:
    """One PUT of a manifest to one ref of one repository at a time across the copies of a process.

    Copies pushing the same bytes to the same ref at the same moment (N jobs of one image) wait for the
    one under way and take its success as theirs: it is the PUT they were about to send (issue 17).
    Only a push in flight is shared, never one that ended (the tag may have moved since). A push that
    failed or was cancelled leaves every waiting copy to send its own.
    """

    def __init__(self) -> None:
        self._flights: dict[tuple[str, str, str, str], asyncio.Future[bool]] = {}
        self.joined = 0  # pushes that were another copy's (for tests and metrics)

    async def push(self, key: tuple[str, str, str, str], put: Callable[[], Awaitable[None]]) -> None:
        """``put()``, or wait for the same one under way; ``key``: (location, repository, ref, digest)."""
        flight = self._flights.get(key)
        if flight is not None:
            if await asyncio.shield(flight):
                self.joined += 1
                return
            await put()  # the leader's failed: this copy's own push, and its own error if it fails too
            return
        flight = asyncio.get_running_loop().create_future()
        self._flights[key] = flight
        ok = False
        try:
            await put()
            ok = True
        finally:
            del self._flights[key]
            flight.set_result(ok)


class KnownBlobs:
    """Where a blob was last seen per location (registry), so later copies can mount instead of upload.

    Each entry carries the sequence number of its last ``add``: a copy that HEADed a blob can tell
    whether another copy of the process put it there since (``seen_since``), and look again
    instead of uploading it a second time (issue 17). An entry younger than a few seconds lets a copy
    skip the HEAD in that repository (``trusted``); ``forget`` drops a repository's entries when a
    registry says one of them is gone after all (a manifest PUT answered BLOB_UNKNOWN).
    """

    def __init__(self, capacity: int = 100_000) -> None:
        self._entries: OrderedDict[tuple[str, str], tuple[str, int, float]] = OrderedDict()
        self._capacity = capacity
        self.seq = 0  # increases with every add

    def add(self, location: str, digest: str, path: str) -> None:
        self.seq += 1
        self._entries[(location, digest)] = (path, self.seq, time.monotonic())
        self._entries.move_to_end((location, digest))
        while len(self._entries) > self._capacity:
            self._entries.popitem(last=False)

    def get(self, location: str, digest: str) -> str | None:
        entry = self._entries.get((location, digest))
        return entry[0] if entry else None

    def seen_since(self, location: str, digest: str, seq: int) -> bool:
        """Was the blob seen at ``location`` after ``seq`` (a value of ``self.seq`` read earlier)?"""
        entry = self._entries.get((location, digest))
        return entry is not None and entry[1] > seq

    def trusted(self, location: str, digest: str, path: str, seconds: float) -> bool:
        """Was the blob put or confirmed in repository ``path`` at ``location`` in the last ``seconds``?"""
        entry = self._entries.get((location, digest))
        return entry is not None and entry[0] == path and time.monotonic() - entry[2] <= seconds

    def forget(self, location: str, path: str) -> None:
        """Drop every entry of repository ``path`` at ``location``."""
        for key in [k for k, e in self._entries.items() if k[0] == location and e[0] == path]:
            del self._entries[key]
