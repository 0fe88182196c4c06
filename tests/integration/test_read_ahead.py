"""A blob read holds no read-ahead while its caller is away (registry/blobs.py ``_hold_socket``, issue 19).

A fan-out waiting on a slow target's full channel is such a caller: without the hold, aiohttp
would buffer up to 2x ``read_bufsize`` per response in the meantime, memory a slow target costs
and a fast one does not. Measured with tracemalloc around a real registry's response; the bytes
read afterwards must still be the whole blob, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import tracemalloc

from regcast.registry.blobs import read_blob
from tests.support import images
from tests.support.clients import client_for
from tests.support.registry import RegistryServer

MiB = 1024 * 1024
AWAY = 1.0  # seconds the caller keeps a chunk: ample for a loopback registry to send megabytes


def test_a_read_whose_caller_is_away_buffers_nothing_and_resumes_intact(src_reg: RegistryServer, repo: str) -> None:
    layer = os.urandom(12 * MiB)
    img = images.image([layer]).push(src_reg.http(), repo, "v1")
    digest = images.sha(layer)
    assert digest in img.blobs

    async def go() -> tuple[int, bytes]:
        client = client_for(src_reg, chunk_size=MiB)
        try:
            reader = read_blob(client, repo, digest, len(layer))
            async with contextlib.aclosing(reader):
                first = await reader.__anext__()
                held_before = tracemalloc.get_traced_memory()[0]
                await asyncio.sleep(AWAY)  # the caller is away, as behind a full channel
                grown = tracemalloc.get_traced_memory()[0] - held_before
                rest = [chunk async for chunk in reader]
            return grown, b"".join([first, *rest])
        finally:
            await client.close()

    tracemalloc.start()
    try:
        grown, body = asyncio.run(go())
    finally:
        tracemalloc.stop()
    assert grown < MiB // 4, f"{grown} bytes were read ahead while the caller was away"
    assert hashlib.sha256(body).hexdigest() == digest.split(":", 1)[1]
