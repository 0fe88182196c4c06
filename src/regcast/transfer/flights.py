"""One upload per blob and registry at a time across every copy of a process (single flight).

Two jobs that need the same blob at the same registry would otherwise both read the source and
both upload. The first claims the (registry, digest) flight and streams; the others wait for it,
then HEAD (same repository: present) or mount (another repository there). Across processes
nothing is shared: two replicas may both upload, which content addressing makes harmless.
"""

from __future__ import annotations

import asyncio


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
