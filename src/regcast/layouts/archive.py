"""``oci-archive``: an OCI image layout in one uncompressed tar file (as skopeo writes it).

Reading: the tar's member headers are indexed once; a blob is read by seeking to its data, a
chunk at a time. Writing: blobs are staged as files in a hidden directory next to the archive;
``pack`` writes the new tar (the staged blobs, the members of the archive already there that
are still wanted, ``oci-layout`` and ``index.json``) under a temporary name and renames it over
the archive: an interrupted write leaves the old archive, or none, never a partial one.
"""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

from regcast._exceptions import InvalidReference, LayoutError
from regcast.layouts.files import file_errors, read_chunks, temporary_name
from regcast.layouts.index import INDEX_FILE, LAYOUT_FILE, LAYOUT_VERSION, MAX_INDEX_BYTES, LayoutIndex
from regcast.registry.digest import validate_digest
from regcast.registry.manifest import Descriptor


def _member_name(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name


def blob_member(digest: str) -> str:
    return "blobs/" + validate_digest(digest).replace(":", "/", 1)


def _wanted(name: str) -> bool:
    """A member regcast reads or carries over: ``index.json``, ``oci-layout`` or ``blobs/<alg>/<hex>`` of a
    valid digest. Any other name (``blobs/sha256/../../../x``, ``blobs/../etc``) is not indexed, so a rewrite
    never passes it on into the archive regcast writes (nor a ``blobs/..`` directory entry made of it)."""
    if name in (INDEX_FILE, LAYOUT_FILE):
        return True
    parts = name.split("/")
    if len(parts) != 3 or parts[0] != "blobs":
        return False
    try:
        return blob_member(f"{parts[1]}:{parts[2]}") == name
    except InvalidReference:
        return False


class ArchiveReader:
    """The members of an existing archive (regular files only), read by offset from the file indexed.

    The file stays open: a copy writing the same archive (``oci-archive:a.tar:v1`` to ``a.tar:v2``) renames
    a new one over the path while this reader may still stream blobs to slower targets; read by path,
    those reads landed at the old offsets in the new file (wrong bytes: the blob failed its digest)."""

    def __init__(self, path: Path, where: str) -> None:
        self.path = path
        self.where = where
        self.members: dict[str, tarfile.TarInfo] = {}
        with file_errors(where, "reading the archive"):
            self._file = open(path, "rb")  # noqa: SIM115 (kept open: closed by close())
        try:
            self._read_index(where)
        except BaseException:  # whatever refused the archive, its file is not left open
            self._file.close()
            raise

    def _read_index(self, where: str) -> None:
        with file_errors(where, "reading the archive"):
            try:
                with tarfile.open(fileobj=self._file, mode="r:") as tar:
                    for m in tar.getmembers():
                        if m.isreg() and _wanted(_member_name(m.name)):
                            self.members[_member_name(m.name)] = m
            except tarfile.TarError as exc:
                raise LayoutError(f"{where}: not an uncompressed tar archive ({exc})") from None
        if INDEX_FILE not in self.members:  # oci-layout is not required: a directory without it is read too
            raise LayoutError(f"{where}: not an OCI image layout (no {INDEX_FILE} in the archive)")
        self.index = LayoutIndex.parse(self.read_member(INDEX_FILE, MAX_INDEX_BYTES), where)

    def close(self) -> None:
        self._file.close()

    def has(self, digest: str) -> bool:
        return blob_member(digest) in self.members

    def read_member(self, name: str, limit: int) -> bytes:
        m = self.members.get(name)
        if m is None:
            raise LayoutError(f"{self.where}: {name} is not in the archive")
        if m.size > limit:
            raise LayoutError(f"{self.where}: {name} is {m.size} bytes, over the {limit} byte limit")
        with file_errors(self.where, f"reading {name}"):
            return os.pread(self._file.fileno(), m.size, m.offset_data)

    async def stream(self, blob: Descriptor) -> AsyncIterator[bytes]:
        name = blob_member(blob.digest)
        m = self.members.get(name)
        if m is None:
            raise LayoutError(f"{self.where}: {blob.digest} is not in the archive")
        at = _At(self._file, m.offset_data)
        async for chunk in read_chunks(at, min(m.size, blob.size + 1), self.where):
            yield chunk


def _info(name: str, size: int, directory: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = 0 if directory else size
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.mode = 0o755 if directory else 0o644
    info.mtime = 0  # the same content gives the same archive
    return info


def pack(archive: Path, staged: Path, index: LayoutIndex, old: ArchiveReader | None, where: str) -> None:
    """Write ``archive`` from the staged ``blobs/`` tree, the old archive's blobs and ``index``."""
    tmp = temporary_name(archive)
    with file_errors(where, "writing the archive"):
        try:
            with open(tmp, "wb") as raw, tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
                tar.addfile(_info(LAYOUT_FILE, len(LAYOUT_VERSION)), io.BytesIO(LAYOUT_VERSION))
                body = index.dumps()
                tar.addfile(_info(INDEX_FILE, len(body)), io.BytesIO(body))
                tar.addfile(_info("blobs", 0, directory=True))
                written: set[str] = set()
                blobs_dir = staged / "blobs"
                algorithms = sorted(p.name for p in blobs_dir.iterdir()) if blobs_dir.is_dir() else []
                old_algorithms = {n.split("/")[1] for n in old.members if n.startswith("blobs/")} if old else set()
                for algorithm in sorted(set(algorithms) | old_algorithms):
                    tar.addfile(_info(f"blobs/{algorithm}", 0, directory=True))
                for algorithm in algorithms:
                    for blob in sorted((blobs_dir / algorithm).iterdir()):
                        if blob.name.startswith("."):
                            continue  # an unfinished upload
                        name = f"blobs/{algorithm}/{blob.name}"
                        with open(blob, "rb") as f:
                            tar.addfile(_info(name, blob.stat().st_size), f)
                        written.add(name)
                if old is not None:
                    with open(old.path, "rb") as src:
                        for name, m in sorted(old.members.items()):
                            if name.startswith("blobs/") and name not in written:
                                src.seek(m.offset_data)
                                tar.addfile(_info(name, m.size), _Window(src, m.size))
                raw.flush()
                os.fsync(raw.fileno())
            os.replace(tmp, archive)
        finally:
            tmp.unlink(missing_ok=True)


class _At:
    """Sequential reads from ``offset`` of an open file, positional (``pread``): streams share the file."""

    def __init__(self, f: BinaryIO, offset: int) -> None:
        self.f = f
        self.offset = offset

    def read(self, n: int) -> bytes:
        data = os.pread(self.f.fileno(), n, self.offset)
        self.offset += len(data)
        return data


class _Window:
    """A file object over the next ``size`` bytes of ``f`` (tarfile reads it in chunks)."""

    def __init__(self, f: BinaryIO, size: int) -> None:
        self.f = f
        self.left = size

    def read(self, n: int = -1) -> bytes:
        if n < 0 or n > self.left:
            n = self.left
        data = self.f.read(n)
        self.left -= len(data)
        return data
