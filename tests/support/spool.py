"""A spool budget whose disk fills up: writes raise ``OSError(ENOSPC)`` once ``room`` bytes are in.

Only the disk is faked (the registries and the network stay real): the fallback after a failed
spool write is what the tests check.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

from regcast.transfer.spool import Spool, SpoolBudget


class _FullDisk:
    """A file object that takes ``room`` bytes, then fails as a full disk does."""

    def __init__(self, file: Any, room: int, budget: DiskFullBudget) -> None:
        self._file = file
        self._room = room
        self._budget = budget

    def write(self, data: bytes) -> int:
        if len(data) > self._room:
            self._budget.failed_writes += 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._room -= len(data)
        return int(self._file.write(data))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)


class DiskFullBudget(SpoolBudget):
    """Every spool file it opens fails its writes past ``room`` bytes; it remembers the files."""

    def __init__(self, directory: str | Path, max_bytes: int, room: int) -> None:
        super().__init__(directory, max_bytes)
        self.room = room
        self.opened: list[Path] = []
        self.failed_writes = 0

    def open(self, size: int) -> Spool | None:
        spool = super().open(size)
        if spool is not None:
            self.opened.append(spool.path)
            spool._file = _FullDisk(spool._file, self.room, self)  # type: ignore[assignment]
        return spool
