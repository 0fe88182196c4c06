"""An OCI image layout as a ``Repository``: the engine copies to and from it as to a registry.

A directory (``oci:DIR``) is written in place: each blob under a temporary name renamed when
whole, then ``index.json`` (the layout's commit point, replaced atomically under a lock held
across processes) gains the tag. An archive (``oci-archive:FILE.tar``) stages blobs and tags next
to it and is rewritten under a temporary name by ``flush()``: the engine's ``commit()`` once a
target got everything, unless ``autocommit=False`` (many tags into one archive: one rewrite at
the end, see ``open_layout``).

Referrers are kept the tag-schema way (as regctl does): the ``<alg>-<hex>`` index and cosign's
``sha256-<hex>.sig`` are tagged entries of ``index.json``; a layout has no referrers API.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path

from regcast._exceptions import ContentError, LayoutError, UnsupportedManifest
from regcast.layouts.archive import ArchiveReader, pack
from regcast.layouts.files import BlobFiles, FileUpload, file_errors, locked, write_atomically
from regcast.layouts.index import INDEX_FILE, LAYOUT_FILE, LAYOUT_VERSION, MAX_INDEX_BYTES, LayoutIndex, tag_of
from regcast.layouts.reference import OCI, LayoutRef, parse_layout_reference
from regcast.registry.digest import digest_of
from regcast.registry.limits import RateWait
from regcast.registry.manifest import MAX_MANIFEST_BYTES, Descriptor, Manifest, parse_manifest
from regcast.registry.referrers import Held, Listing, Pushed, is_referrer_tag
from regcast.registry.retry import RetryPolicy


class LayoutRepository:
    """One OCI image layout, directory or archive; ``writable`` only for a target."""

    def __init__(
        self, ref: LayoutRef, *, writable: bool = False, autocommit: bool = True, unnamed_root: str | None = None
    ) -> None:
        self.ref = ref
        self.writable = writable
        self.unnamed_root = unnamed_root  # a target's root manifest put by this digest is listed without a name
        self.autocommit = autocommit
        self._where = ref.where
        self._lock = asyncio.Lock()
        self._loaded = False
        self._name: str | None = None  # skopeo's oci:DIR:NAME read as such (``_skopeo_name``)
        self._index = LayoutIndex()  # directory: the index.json; archive: the tags put since the last commit
        self._reader: ArchiveReader | None = None
        self._staging: Path | None = None
        if ref.kind == OCI:
            self._files = BlobFiles(ref.path, self._where)
        else:
            self._staging = ref.path.parent / f".{ref.path.name}.regcast-{uuid.uuid4().hex[:12]}"
            self._files = BlobFiles(self._staging, self._where)

    def __repr__(self) -> str:
        return f"LayoutRepository({self._where})"

    # -- identity --------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self._where

    @property
    def location(self) -> str:
        return f"{self.ref.kind}:{self.ref.path.resolve()}"

    @property
    def path(self) -> str:
        return ""  # a layout holds one repository

    @property
    def manifests_shared(self) -> bool:
        return False  # an archive's tags live in this object until it is packed

    @property
    def retry(self) -> RetryPolicy:
        return RetryPolicy(attempts=2, backoff=0.1)

    def watch_retries(
        self, callback: Callable[[str], None], on_wait: Callable[[RateWait], None] | None = None
    ) -> contextlib.AbstractContextManager[None]:
        """A layout is local files: nothing is ever retried, nor waits on a rate limit."""
        return contextlib.nullcontext()

    def secrets(self) -> tuple[str, ...]:
        return ()

    # -- reading ---------------------------------------------------------------------------------
    async def _load(self) -> None:
        if not self._loaded:
            await asyncio.to_thread(self._load_sync)
            self._loaded = True

    def _load_sync(self) -> None:
        if not self.writable and not self.ref.path.exists():
            self._skopeo_name()
        path = self.ref.path
        if self.ref.kind == OCI:
            index_file = path / INDEX_FILE
            if index_file.is_file():
                with file_errors(self._where, "reading index.json"):
                    self._index = LayoutIndex.parse(index_file.read_bytes()[:MAX_INDEX_BYTES], self._where)
            elif path.is_file():
                raise LayoutError(f"{self._where}: a file, not a directory (an archive is oci-archive:{path})")
            elif not self.writable:
                what = f"not an OCI image layout (no {INDEX_FILE})" if path.is_dir() else "no such directory"
                raise LayoutError(f"{self._where}: {what}")
        elif path.exists() or not self.writable:
            if path.is_dir():
                raise LayoutError(f"{self._where}: a directory, not an archive (a directory is oci:{path})")
            if not path.is_file():
                raise LayoutError(f"{self._where}: no such archive")
            self._reader = ArchiveReader(path, self._where)

    def _skopeo_name(self) -> None:
        """A source whose path is not there: the whole text may be the path (it holds a ``:``); else
        skopeo splits ``oci:DIR:NAME`` at the first ``:`` and NAME may be a full reference
        (``oci:dir:localhost/app:1.0``, the ``ref.name`` buildah and skopeo write). regcast reads a last
        ``:TAG``; a source whose path is not there is read skopeo's way when that path is, the image
        picked by its exact ``ref.name``."""
        text = str(self.ref.path) + (f":{self.ref.tag}" if self.ref.tag else "")
        if self.ref.tag and Path(text).exists():  # oci-archive:/srv/my:app.tar: a path with a ':', no tag
            self._read_at(replace(self.ref, path=Path(text), tag=None))
            return
        head, sep, name = text.partition(":")
        if sep and head and name and Path(head).exists():
            self._read_at(replace(self.ref, path=Path(head)))
            self._name = name

    def _read_at(self, ref: LayoutRef) -> None:
        self.ref = ref
        self._where = ref.where
        if ref.kind == OCI:
            self._files = BlobFiles(ref.path, self._where)

    def _find(self, ref: str) -> Descriptor | None:
        if self._name is not None and ref == self.ref.tag:
            return self._view().find_name(self._name)
        return self._view().find(ref, None if self.writable else self._where)

    def _view(self) -> LayoutIndex:
        """The tags as they stand: the archive's, with those put since under them."""
        return self._index.merged_over(self._reader.index) if self._reader else self._index

    async def tags(self) -> list[str]:
        await self._load()
        return self._view().tags()

    async def default_ref(self) -> str:
        """The layout reference's tag; without one, the layout's only image (else an error naming the tags)."""
        await self._load()  # first: a source's path may turn out to hold the ':TAG' (``_skopeo_name``)
        if self.ref.tag or self.ref.digest:
            return str(self.ref.tag or self.ref.digest)
        if self._name is not None:  # skopeo's oci:DIR:NAME, NAME without a tag: the image by its digest
            desc = self._view().find_name(self._name)
            if desc is None:
                tags = ", ".join(self._view().tags()) or "none"
                raise LayoutError(f"{self.ref.kind}:{self.ref.path} has no image named {self._name} (tags: {tags})")
            return desc.digest
        entries = self._view().entries
        # the signatures and SBOMs a copy brought along sit under their referrer tags: not images to pick among
        images = [e for e in entries if not is_referrer_tag(tag_of(e) or "")] or entries
        if len(images) == 1:
            return tag_of(images[0]) or str(images[0]["digest"])
        tags = ", ".join(self._view().tags()) or "none"
        unnamed = [str(e["digest"]) for e in entries if tag_of(e) is None]
        how = f"{self._where}:TAG" + (f" or {self._where}@DIGEST" if unnamed else "")
        also = f"; without a name: {', '.join(unnamed)}" if unnamed else ""
        raise LayoutError(f"{self._where} holds {len(entries)} images: name one as {how} (tags: {tags}{also})")

    async def head_manifest(self, ref: str) -> str | None:
        await self._load()
        if ":" in ref:
            return ref if await self.has_blob(ref) else None
        desc = self._find(ref)
        return desc.digest if desc and await self.has_blob(desc.digest) else None

    async def get_manifest(self, ref: str) -> Manifest:
        await self._load()
        media_type, digest = "", ref
        if ":" not in ref:
            desc = self._find(ref)
            if desc is None:
                tags = ", ".join(self._view().tags()) or "none"
                if self._name is not None and ref == self.ref.tag:
                    raise LayoutError(f"{self.ref.kind}:{self.ref.path} has no image named {self._name} (tags: {tags})")
                raise LayoutError(f"{self._where} has no tag {ref} (tags: {tags})")
            media_type, digest = desc.media_type, desc.digest
        if not await self.has_blob(digest):
            raise LayoutError(f"{self._where}: manifest {digest} is missing")
        raw = await asyncio.to_thread(self._read_bytes, digest)
        try:
            return parse_manifest(raw, media_type, digest)
        except ContentError as exc:
            raise type(exc)(f"{self._where}: manifest {ref}: {exc}") from None

    async def get_manifest_bytes(self, ref: str) -> bytes:
        return (await self.get_manifest(ref)).raw  # its own files: what the tag names is what it holds

    def _read_bytes(self, digest: str) -> bytes:
        if self._files.has(digest) or self._reader is None:
            return self._files.read_bytes(digest, MAX_MANIFEST_BYTES)
        return self._reader.read_member("blobs/" + digest.replace(":", "/", 1), MAX_MANIFEST_BYTES)

    async def has_blob(self, digest: str) -> bool:
        await self._load()
        return self._files.has(digest) or (self._reader is not None and self._reader.has(digest))

    async def holds_no_tags(self) -> bool:
        return False  # a blob check here is a file lookup: nothing to save

    async def read_blob(self, blob: Descriptor) -> AsyncIterator[bytes]:
        await self._load()
        stream = self._reader.stream(blob) if self._reader and not self._files.has(blob.digest) else None
        async for chunk in stream or self._files.stream(blob):
            yield chunk

    # -- writing ---------------------------------------------------------------------------------
    def _writing(self) -> None:
        if not self.writable:
            raise LayoutError(f"refusing to write to source {self._where}")

    async def start_upload(self, mount: str | None = None, mount_from: str | None = None) -> FileUpload:
        self._writing()
        await self._load()
        return self._files.upload()

    def learn_from_refusal(self, exc: BaseException) -> bool:
        return False

    async def put_manifest(self, ref: str, raw: bytes, media_type: str, digest: str | None = None) -> str:
        self._writing()
        await self._load()
        algorithm = (ref if ":" in ref else digest or "sha256").split(":", 1)[0]
        digest = digest_of(raw, algorithm)
        if not await self.has_blob(digest):
            await asyncio.to_thread(self._files.write_bytes, digest, raw)
        unnamed = ref == self.unnamed_root
        if ":" not in ref or unnamed:
            async with self._lock:
                if unnamed:
                    self._index.put_unnamed(digest, media_type, len(raw))
                else:
                    self._index.put(ref, digest, media_type, len(raw))
                if self.ref.kind == OCI:
                    await asyncio.to_thread(self._write_index)
        return digest

    def _write_index(self) -> None:
        """Merge our tags into index.json as it is on disk now (another writer may have added some)."""
        root = self.ref.path
        with file_errors(self._where, "writing index.json"):
            root.mkdir(parents=True, exist_ok=True)
            with locked(root):
                index_file = root / INDEX_FILE
                current = LayoutIndex.parse(index_file.read_bytes(), self._where) if index_file.is_file() else None
                merged = self._index.merged_over(current) if current else self._index
                write_atomically(root / LAYOUT_FILE, LAYOUT_VERSION)
                write_atomically(index_file, merged.dumps())
                self._index = merged

    async def commit(self) -> None:
        """The engine's commit point (a target got everything): ``flush()`` unless autocommit is off."""
        if self.autocommit:
            await self.flush()

    async def flush(self) -> None:
        """Write the archive with every tag put so far (a directory is always up to date)."""
        async with self._lock:
            if self.ref.kind != OCI and self._index.entries:
                await asyncio.to_thread(self._pack)

    def referrer_access(self) -> LayoutReferrers:
        return LayoutReferrers(self)

    def _pack(self) -> None:
        archive = self.ref.path
        assert self._staging is not None
        with file_errors(self._where, "writing the archive"):
            archive.parent.mkdir(parents=True, exist_ok=True)
            with locked(archive.parent):  # another writer may have replaced the archive meanwhile
                current = ArchiveReader(archive, self._where) if archive.is_file() else None
                try:
                    merged = self._index.merged_over(current.index) if current else self._index
                    pack(archive, self._staging, merged, current, self._where)
                finally:
                    if current is not None:
                        current.close()
            if self._reader is not None:
                self._reader.close()
            self._reader = ArchiveReader(archive, self._where)
            self._index = LayoutIndex()
            shutil.rmtree(self._staging, ignore_errors=True)

    async def close(self) -> None:
        """Drop what was staged and not committed (an archive is only ever replaced whole)."""
        if self._reader is not None:
            self._reader.close()
        if self._staging is not None:
            await asyncio.to_thread(shutil.rmtree, self._staging, True)


class LayoutReferrers:
    """Referrers in a layout: no API to ask (discovery falls back to the tag schema), the tag-schema
    index read and written as a tagged manifest, no ``OCI-Subject`` (the index is always kept)."""

    def __init__(self, layout: LayoutRepository) -> None:
        self.layout = layout

    async def list_referrers(
        self, digest: str, artifact_type: str | None, spend: Callable[[int], None] | None = None
    ) -> Listing | None:
        return None

    async def tag_names(self) -> frozenset[str] | None:
        return None  # each tag is a lookup in the index already read: nothing to save

    async def read_index(self, tag: str) -> Held | None:
        if await self.layout.head_manifest(tag) is None:
            return None
        manifest = await self.layout.get_manifest(tag)
        if not manifest.is_index:
            raise UnsupportedManifest(f"{self.layout.name}: {tag} is not an index")
        return Held(manifest, None)

    async def put(self, ref: str, raw: bytes, media_type: str, if_match: str | None = None) -> Pushed:
        return Pushed(await self.layout.put_manifest(ref, raw, media_type), subject_kept=False)


def open_layout(text: str, *, writable: bool = False, autocommit: bool = True) -> LayoutRepository:
    """The layout named by ``oci:DIR[:TAG]`` or ``oci-archive:FILE.tar[:TAG]``.

    For many tags into one archive (a mirror set's layout target): ``autocommit=False``, one
    ``engine.copy`` per tag with a ``Target(key, layout, tag)``, then ``await layout.flush()``
    and ``await layout.close()``. Nothing touches the disk before the first write.
    """
    return LayoutRepository(parse_layout_reference(text), writable=writable, autocommit=autocommit)
