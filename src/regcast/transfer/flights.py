"""One upload per blob and registry at a time across every copy of a process (single flight).

Two jobs that need the same blob at the same registry would otherwise both read the source and
both upload. The first claims the (registry, digest) flight and streams; the others wait for it,
then HEAD (same repository: present) or mount (another repository there). Across processes
nothing is shared: two replicas may both upload, which content addressing makes harmless.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict


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


class KnownBlobs:
    """Where a blob was last seen per location (registry), so later copies can mount instead of upload.

    Each entry carries the sequence number of its last ``add``: a copy that HEADed a blob can tell
    whether another copy of the process put it there since (``seen_since``), and look again
    instead of uploading it a second time (issue 17).
    """

    def __init__(self, capacity: int = 100_000) -> None:
        self._entries: OrderedDict[tuple[str, str], tuple[str, int]] = OrderedDict()
        self._capacity = capacity
        self.seq = 0  # increases with every add

    def add(self, location: str, digest: str, path: str) -> None:
        self.seq += 1
        self._entries[(location, digest)] = (path, self.seq)
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
