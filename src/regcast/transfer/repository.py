"""What the copy engine needs from a repository, named once: ``Repository`` and ``BlobUpload``.

The engine depends on these protocols only. A repository in a registry (``transfer/remote.py``)
is one implementation; an OCI image layout directory or archive (``layouts/``) is another. The
engine never asks which kind it holds: a blob stream read once fans out to every target's
``BlobUpload`` whatever is behind it.

``location`` groups repositories that share blob storage (one registry): the engine streams a
blob once per location and mounts it into the other repositories there (``start_upload(mount=...)``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractContextManager
from typing import Protocol

from regcast.registry.limits import RateWait
from regcast.registry.manifest import Descriptor, Manifest
from regcast.registry.retry import RetryPolicy
from regcast.transfer.channel import Channel


class BlobUpload(Protocol):
    """One open upload of one blob into one repository."""

    async def write(self, blob: Descriptor, ch: Channel, on_bytes: Callable[[int], None]) -> None:
        """Consume ``ch`` to its end and commit the blob (only after the producer verified it)."""
        ...

    async def cancel(self) -> None:
        """Drop an upload that will not be completed (best effort, never raises)."""
        ...


class Repository(Protocol):
    """One repository regcast reads from or writes to: manifests, tags and blob streams."""

    @property
    def name(self) -> str:
        """What it is, for messages: ``registry host[:port]`` or ``oci-archive:/path``."""
        ...

    @property
    def location(self) -> str:
        """Blob storage this repository shares with others (a registry's base URL)."""
        ...

    @property
    def path(self) -> str:
        """The repository's path within its location (mount source for others there)."""
        ...

    @property
    def manifests_shared(self) -> bool:
        """Does every object for this location and path see a manifest the moment one is put (a registry)?
        Then copies of one process may share a PUT; a layout object keeps its tags until it commits."""
        ...

    @property
    def retry(self) -> RetryPolicy:
        """The retry policy value of this repository's requests (and of the engine's re-uploads)."""
        ...

    def watch_retries(
        self, callback: Callable[[str], None], on_wait: Callable[[RateWait], None] | None = None
    ) -> AbstractContextManager[None]:
        """Tell ``callback`` about every retried request while the block runs (job status), ``on_wait``
        about every wait on a registry's rate limit (until when: the status shows it)."""
        ...

    def secrets(self) -> tuple[str, ...]:
        """Every secret held, for scrubbing free text."""
        ...

    async def head_manifest(self, ref: str) -> str | None:
        """The digest held at ``ref`` (tag or digest), or None."""
        ...

    async def get_manifest(self, ref: str) -> Manifest:
        """The manifest bytes exactly as stored, verified against their digest."""
        ...

    async def get_manifest_bytes(self, ref: str) -> bytes:
        """The bytes held at ``ref`` now, unchecked against any header or cache (what a tag really holds)."""
        ...

    async def put_manifest(self, ref: str, raw: bytes, media_type: str, digest: str | None = None) -> str | None:
        """Store manifest bytes unchanged at ``ref``; the digest the store announced, if any. ``digest``
        is the source's name for the bytes: a store that files them by digest itself (a layout) keeps
        its algorithm (sha512 stays sha512 under a tag)."""
        ...

    async def has_blob(self, digest: str) -> bool: ...

    async def holds_no_tags(self) -> bool:
        """Surely no tag here (never pushed to)? Then the engine skips its blob HEADs (mounts are still
        tried). False when in doubt."""
        ...

    def read_blob(self, blob: Descriptor) -> AsyncIterator[bytes]:
        """Every byte of ``blob`` as one stream (the caller verifies the digest)."""
        ...

    async def start_upload(self, mount: str | None = None, mount_from: str | None = None) -> BlobUpload | None:
        """Open an upload; None when ``mount`` (a digest) was mounted from ``mount_from`` instead."""
        ...

    def learn_from_refusal(self, exc: BaseException) -> bool:
        """Adapt after an upload was refused; True if the next try will differ."""
        ...

    async def commit(self) -> None:
        """A target got everything: make it visible (a registry: nothing to do; an archive is written)."""
        ...

    async def close(self) -> None: ...


__all__ = ["BlobUpload", "Repository"]
