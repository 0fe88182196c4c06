"""A repository in a registry: the ``Repository`` protocol over a ``RegistryClient``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import AbstractContextManager

from regcast.registry import blobs
from regcast.registry.client import RegistryClient
from regcast.registry.limits import RateWait
from regcast.registry.manifest import Descriptor, Manifest
from regcast.registry.retry import RetryPolicy
from regcast.transfer.channel import Channel
from regcast.transfer.upload import upload_blob

log = logging.getLogger("regcast.transfer")
SECOND_READ_SIZE = 64 * 1024  # a detached read's chunks and response buffer (aiohttp pauses at 2x)


class RegistryRepository:
    """``repository`` at the registry ``client`` talks to. Closing it closes the client."""

    def __init__(self, client: RegistryClient, repository: str) -> None:
        self.client = client
        self.repository = repository

    def __repr__(self) -> str:
        return f"RegistryRepository({self.client.name}/{self.repository})"

    @property
    def name(self) -> str:
        return f"registry {self.client.name}"

    @property
    def location(self) -> str:
        return self.client.endpoint.base

    @property
    def path(self) -> str:
        return self.repository

    @property
    def manifests_shared(self) -> bool:
        return True

    @property
    def retry(self) -> RetryPolicy:
        return self.client.options.retry

    def watch_retries(
        self, callback: Callable[[str], None], on_wait: Callable[[RateWait], None] | None = None
    ) -> AbstractContextManager[None]:
        return self.client.watch_retries(callback, on_wait)

    def secrets(self) -> tuple[str, ...]:
        return self.client.secrets()

    async def head_manifest(self, ref: str) -> str | None:
        return await self.client.head_manifest(self.repository, ref)

    async def get_manifest(self, ref: str) -> Manifest:
        return await self.client.get_manifest(self.repository, ref)

    async def get_manifest_bytes(self, ref: str) -> bytes:
        return await self.client.get_manifest_bytes(self.repository, ref)

    async def put_manifest(self, ref: str, raw: bytes, media_type: str, digest: str | None = None) -> str | None:
        """Put at ``ref``; by a digest, at the manifest's own (``digest``), as a layout does: the root of a
        platform-filtered copy is put by the source's digest that its DST kept (``ManifestPush``)."""
        at = digest if digest and ":" in ref else ref
        return await self.client.put_manifest(self.repository, at, raw, media_type)

    async def has_blob(self, digest: str) -> bool:
        return await blobs.blob_exists(self.client, self.repository, digest)

    async def holds_no_tags(self) -> bool:
        return await blobs.holds_no_tags(self.client, self.repository)

    def read_blob(self, blob: Descriptor) -> AsyncIterator[bytes]:
        body = blobs.read_blob(self.client, self.repository, blob.digest, blob.size)
        return _counted(self.client, body) if self.client.options.observer is not None else body

    def read_blob_from(self, blob: Descriptor, offset: int) -> AsyncIterator[bytes]:
        """From ``offset`` on (``Range``): the second read of a detached target (``transfer/detach.py``),
        in small reads with a small response buffer: it goes at a slow target's pace, so a 1 MiB
        buffer would only hold memory while that target catches up (bench x, issue 19)."""
        body = blobs.read_blob(
            self.client, self.repository, blob.digest, blob.size, start=offset, read_size=SECOND_READ_SIZE
        )
        return _counted(self.client, body) if self.client.options.observer is not None else body

    async def start_upload(self, mount: str | None = None, mount_from: str | None = None) -> RegistryUpload | None:
        location = await blobs.start_upload(self.client, self.repository, mount=mount, mount_from=mount_from)
        return None if location is None else RegistryUpload(self.client, self.repository, location)

    def learn_from_refusal(self, exc: BaseException) -> bool:
        return self.client.uploads.learn(exc)

    async def commit(self) -> None:
        return None  # the tag put last already made the image visible

    async def close(self) -> None:
        await self.client.close()


class RegistryUpload:
    """One upload session (its Location) at a registry."""

    def __init__(self, client: RegistryClient, repository: str, location: str) -> None:
        self.client = client
        self.repository = repository
        self.location = location

    async def write(self, blob: Descriptor, ch: Channel, on_bytes: Callable[[int], None]) -> None:
        await upload_blob(self.client, self.location, self.repository, blob, ch, on_bytes)

    async def cancel(self) -> None:
        """Shielded: a cancelled job still drops its open sessions."""
        try:
            await asyncio.shield(blobs.cancel_upload(self.client, self.location, self.repository))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # best effort: the registry expires stale uploads anyway
            log.debug("could not cancel upload: %s", exc)


__all__ = ["RegistryRepository", "RegistryUpload"]


async def _counted(client: RegistryClient, body: AsyncGenerator[bytes, None]) -> AsyncIterator[bytes]:
    """The blob stream, its bytes told to the client's observer (metrics) as they are read."""
    observer = client.options.observer
    async with contextlib.aclosing(body):  # closing this stream early closes the download too
        async for chunk in body:
            if observer is not None:
                observer.bytes_read(client.name, len(chunk))
            yield chunk
