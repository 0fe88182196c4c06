"""The optional on-disk spool of a blob (issue 19): detached targets read it, not the source again.

While the main read fans a blob out, its bytes are also written to a temporary file in the spool
directory (``REGCAST_SPOOL_DIR``, else the system's temporary directory), if the blob fits in what
is left of ``REGCAST_SPOOL_MAX_BYTES`` (shared by every blob of every job of the process). Whether a
copy spools is its own choice (a job's ``spool``, a mirror's, ``copy --spool``). Detached targets
then finish from that file: one source read per blob, for sources whose egress is costly or
rate-limited. A blob that does not fit, or a spool that fails to write (deleted at once, its room
given back), falls back to the second source read. The digest is checked again on the spool read
(the hash state carries on, so the last chunk is held back until it matched); the file is deleted
when its blob's fan-out is over, whatever the outcome.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

from regcast.registry.session import READ_CHUNK

log = logging.getLogger("regcast.transfer")


class SpoolBudget:
    """Disk room for spool files: at most ``max_bytes`` reserved at once, in ``directory``."""

    def __init__(self, directory: str | Path, max_bytes: int, chunk_size: int = READ_CHUNK) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.chunk_size = chunk_size
        self.used = 0

    def open(self, size: int) -> Spool | None:
        """A spool file for a blob of ``size`` bytes, or None when it does not fit (or cannot be made)."""
        if self.used + size > self.max_bytes:
            return None
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix="regcast-spool-", dir=self.directory)
        except OSError as exc:
            log.warning("spool not used: cannot create a file in %s: %s", self.directory, exc)
            return None
        self.used += size
        return Spool(self, Path(name), os.fdopen(fd, "w+b"), size)

    def release(self, size: int) -> None:
        self.used -= size


class Spool:
    """One blob's spool file: written during the main read, read by its detached targets, then deleted."""

    def __init__(self, budget: SpoolBudget, path: Path, file: BinaryIO, size: int) -> None:
        self.budget = budget
        self.path = path
        self._file: BinaryIO | None = file
        self.size = size
        self.written = 0
        self.broken = False  # a write failed: the detached targets read the source again instead

    def write(self, chunk: bytes) -> None:
        if self._file is None or self.broken:
            return
        try:
            self._file.write(chunk)
            self.written += len(chunk)
        except OSError as exc:  # disk full, I/O error: the file goes now, its room with it
            log.warning("spool %s not used: %s", self.path, exc)
            self.broken = True
            self.close()

    @property
    def complete(self) -> bool:
        """Every byte of the blob is in the file (the main read ran to its end and wrote it all)."""
        if self._file is None or self.broken or self.written != self.size:
            return False
        try:
            self._file.flush()
        except OSError:
            return False
        return True

    async def read_from(self, offset: int) -> AsyncIterator[bytes]:
        """The spooled bytes from ``offset`` on (the caller verifies them against the digest)."""
        with self.path.open("rb") as f:
            f.seek(offset)
            while chunk := f.read(self.budget.chunk_size):
                yield chunk

    def close(self) -> None:
        """Delete the file and give its room back (once; safe to call again)."""
        if self._file is None:
            return
        file, self._file = self._file, None
        with contextlib.suppress(OSError):
            file.close()
        with contextlib.suppress(OSError):
            self.path.unlink(missing_ok=True)
        self.budget.release(self.size)
