"""One target's upload of one blob, fed from its fan-out channel: monolithic or chunked.

Either way nothing is committed before the whole blob was verified: the producer holds the last
chunk back until the digest matched, and only then can the monolithic PUT finish or the last
PATCH complete (after which the empty committing PUT is sent).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from regcast._exceptions import DigestMismatch
from regcast.registry import blobs
from regcast.registry.client import RegistryClient
from regcast.registry.manifest import Descriptor
from regcast.transfer.channel import Channel, Item, _End


async def upload_blob(
    client: RegistryClient,
    location: str,
    repository: str,
    blob: Descriptor,
    ch: Channel,
    on_bytes: Callable[[int], None],
) -> None:
    first = await ch.get()  # wait for the first verified bytes before opening any request
    if client.uploads.chunked:
        await _chunked(client, location, repository, blob, _Reader(ch, first), on_bytes)
    else:
        await blobs.put_monolithic(client, location, repository, blob.digest, blob.size, ch.body(first, on_bytes))


async def _chunked(
    client: RegistryClient,
    location: str,
    repository: str,
    blob: Descriptor,
    reader: _Reader,
    on_bytes: Callable[[int], None],
) -> None:
    cap = client.uploads.chunk_size(blob.size)
    offset = 0
    while offset < blob.size:
        n = min(cap, blob.size - offset)
        location = await blobs.patch_chunk(client, location, repository, offset, n, reader.take(n, on_bytes))
        offset += n
    await reader.end()
    await blobs.put_final(client, location, repository, blob.digest)


class _Reader:
    """Cuts the channel's chunks into request bodies of exact sizes."""

    def __init__(self, ch: Channel, first: Item) -> None:
        self.ch = ch
        self.buf: Item = first

    async def take(self, n: int, on_bytes: Callable[[int], None]) -> AsyncIterator[bytes]:
        while n > 0:
            if isinstance(self.buf, _End):
                raise DigestMismatch("blob ended before its announced size")
            if not self.buf:
                self.buf = await self.ch.get()
                continue
            if len(self.buf) > n:
                piece, self.buf = self.buf[:n], self.buf[n:]
            else:
                piece, self.buf = self.buf, b""
            n -= len(piece)
            yield piece
            on_bytes(len(piece))

    async def end(self) -> None:
        while isinstance(self.buf, bytes) and not self.buf:
            self.buf = await self.ch.get()
        if not isinstance(self.buf, _End):
            raise DigestMismatch("blob is longer than its announced size")
