"""Blobs as files (``blobs/<alg>/<hex>``), written under a temporary name and renamed when whole.

Every file operation runs in a thread (``asyncio.to_thread``) so a slow disk never stalls the
event loop, and reads and writes move one chunk at a time: memory stays bounded whatever the
blob size. ``OSError`` becomes ``LayoutError`` here, naming the layout.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

from regcast._exceptions import DigestMismatch, LayoutError
from regcast.registry.digest import validate_digest
from regcast.registry.manifest import Descriptor
from regcast.transfer.channel import Channel

CHUNK = 1024 * 1024


@contextlib.contextmanager
def file_errors(where: str, what: str) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise LayoutError(f"{where}: {what}: {exc.strerror or exc}") from None


def temporary_name(final: Path) -> Path:
    """A sibling of ``final`` that no reader takes for a finished file (leading dot, random)."""
    return final.with_name(f".{final.name}.regcast-{uuid.uuid4().hex[:12]}.tmp")


def write_atomically(final: Path, data: bytes) -> None:
    """``final`` holds ``data`` entirely or is untouched (fsync, then rename)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(final)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def locked(directory: Path) -> Iterator[None]:
    """An exclusive lock on ``directory`` (flock on its descriptor), across processes."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


class BlobFiles:
    """The ``blobs/`` tree under ``root``; ``where`` names the layout in messages."""

    def __init__(self, root: Path, where: str) -> None:
        self.root = root
        self.where = where

    def path(self, digest: str) -> Path:
        algorithm, hexpart = validate_digest(digest).split(":", 1)  # validated: safe as a path
        return self.root / "blobs" / algorithm / hexpart

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def read_bytes(self, digest: str, limit: int) -> bytes:
        with file_errors(self.where, f"reading {digest}"), open(self.path(digest), "rb") as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise LayoutError(f"{self.where}: {digest} is over the {limit} byte limit for a manifest")
        return data

    def write_bytes(self, digest: str, data: bytes) -> None:
        with file_errors(self.where, f"writing {digest}"):
            write_atomically(self.path(digest), data)

    async def stream(self, blob: Descriptor) -> AsyncIterator[bytes]:
        path = self.path(blob.digest)
        with file_errors(self.where, f"reading {blob.digest}"):
            f = await asyncio.to_thread(open, path, "rb")
        try:
            async for chunk in read_chunks(f, blob.size + 1, self.where):
                yield chunk
        finally:
            f.close()

    def upload(self) -> FileUpload:
        return FileUpload(self)


class Reads(Protocol):
    """What ``read_chunks`` reads from: a file, or an archive member read by offset."""

    def read(self, n: int, /) -> bytes: ...


async def read_chunks(f: Reads, limit: int, where: str) -> AsyncIterator[bytes]:
    """Up to ``limit`` bytes of ``f`` from where it stands, a chunk at a time."""
    left = limit
    while left > 0:
        with file_errors(where, "reading"):
            chunk = await asyncio.to_thread(f.read, min(CHUNK, left))
        if not chunk:
            return
        left -= len(chunk)
        yield chunk


class FileUpload:
    """One blob into ``BlobFiles``: a temporary file, renamed to its digest once the stream ended.

    The fan-out holds the last chunk back until the digest matched, so a blob whose bytes are
    wrong never reaches its final name.
    """

    def __init__(self, files: BlobFiles) -> None:
        self.files = files
        self.tmp: Path | None = None

    async def write(self, blob: Descriptor, ch: Channel, on_bytes: Callable[[int], None]) -> None:
        first = await ch.get()
        final = self.files.path(blob.digest)
        self.tmp = temporary_name(final)
        where = self.files.where
        with file_errors(where, f"writing {blob.digest}"):
            await asyncio.to_thread(final.parent.mkdir, parents=True, exist_ok=True)
            f = await asyncio.to_thread(open, self.tmp, "wb")
        written = 0
        try:
            async for chunk in ch.body(first, on_bytes):
                with file_errors(where, f"writing {blob.digest}"):
                    await asyncio.to_thread(f.write, chunk)
                written += len(chunk)
            with file_errors(where, f"writing {blob.digest}"):
                await asyncio.to_thread(_sync_close, f)
        finally:
            f.close()
        if written != blob.size:
            raise DigestMismatch(f"{where}: {blob.digest} ended after {written} of {blob.size} bytes")
        with file_errors(where, f"writing {blob.digest}"):
            await asyncio.to_thread(os.replace, self.tmp, final)
        self.tmp = None

    async def cancel(self) -> None:
        if self.tmp is not None:
            with contextlib.suppress(OSError):
                self.tmp.unlink(missing_ok=True)
            self.tmp = None


def _sync_close(f: BinaryIO) -> None:
    f.flush()
    os.fsync(f.fileno())
    f.close()
