"""How one registry takes blob uploads, learnt from its refusals; owned by its client.

Monolithic PUT refused (405/413/501) → chunked. PATCH too large (413/416) → halve the chunk
cap (GHCR refuses bodies over 4 MiB). PATCH not supported (405/501) → monolithic. A strategy
the user set is kept; only the chunk size adapts. The number of changes is bounded, so a
registry that refuses everything cannot make regcast flip between strategies forever.
"""

from __future__ import annotations

import logging

from regcast._exceptions import RegistryResponseError

log = logging.getLogger("regcast.registry")
MIN_CHUNK_CAP = 1024 * 1024
MAX_CHANGES = 6


class UploadStrategy:
    """``chunked`` or not, and how large a chunk may be; ``learn()`` is the only way it changes."""

    def __init__(self, registry: str, mode: str = "auto", chunk_cap: int | None = None) -> None:
        self.registry = registry
        self.fixed = mode != "auto"
        self.chunked = mode == "chunked"
        self.chunk_cap = chunk_cap
        self.chunk_min = 0  # OCI-Chunk-Min-Length, told by the registry when an upload starts
        self.changes = 0

    @property
    def mode(self) -> str:
        return "chunked" if self.chunked else "monolithic"

    def chunk_size(self, blob_size: int) -> int:
        """Bytes per PATCH for a blob of ``blob_size``: the cap, but never under the registry's minimum."""
        return max(self.chunk_cap or blob_size, self.chunk_min)

    def note_min_length(self, header: str | None) -> None:
        """Remember ``OCI-Chunk-Min-Length`` from an upload start."""
        if header and header.isdigit():
            self.chunk_min = int(header)

    def learn(self, exc: BaseException) -> bool:
        """Adapt after the registry refused an upload; True if the next try should differ."""
        if not isinstance(exc, RegistryResponseError) or self.changes >= MAX_CHANGES or not self._adapt(exc):
            return False
        self.changes += 1
        log.warning(
            "registry %s refused the upload (%s %s); switching to %s uploads%s",
            self.registry,
            exc.method,
            exc.status,
            self.mode,
            f" of at most {self.chunk_cap} bytes per chunk" if self.chunked else "",
        )
        return True

    def _adapt(self, exc: RegistryResponseError) -> bool:
        method, status = exc.method, exc.status
        if not self.fixed and not self.chunked and method == "PUT" and status in (405, 413, 501):
            self.chunked = True
            self.chunk_cap = self.chunk_cap or 4 * MIN_CHUNK_CAP
            return True
        if self.chunked and method == "PATCH" and status in (413, 416):
            cap = self.chunk_cap or 8 * MIN_CHUNK_CAP
            if cap <= MIN_CHUNK_CAP:
                return False
            self.chunk_cap = max(MIN_CHUNK_CAP, cap // 2)
            return True
        if not self.fixed and self.chunked and method == "PATCH" and status in (405, 501):
            self.chunked = False
            return True
        return False
