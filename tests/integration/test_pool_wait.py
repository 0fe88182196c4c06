"""A request waiting for one of the pool's connections is not timed out for that wait: the clock of
``request_timeout`` starts once it holds a connection. A service's jobs share a registry's pool, so
long blob streams from some jobs must not fail other jobs' HEADs and manifest PUTs (issue 17 review)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from regcast.registry.client import ClientOptions, RegistryClient
from regcast.registry.reference import parse_endpoint
from tests.support.clients import FAST_RETRY
from tests.support.hostile import HostileServer

DIGEST = "sha256:" + "ab" * 32


def test_a_request_waiting_for_a_pooled_connection_is_not_timed_out_for_the_wait(
    hostile: list[HostileServer],
) -> None:
    async def slow_blob(request: web.Request) -> web.StreamResponse:
        if request.path == "/v2/":
            return web.json_response({})
        if request.path == "/v2/r/blobs/slow":  # a long download: holds its connection for ~2 s
            resp = web.StreamResponse(headers={"Content-Length": "4"})
            await resp.prepare(request)
            for _ in range(4):
                await asyncio.sleep(0.5)
                await resp.write(b"x")
            return resp
        return web.Response(status=200, headers={"Docker-Content-Digest": DIGEST, "Content-Type": "application/json"})

    server = HostileServer(slow_blob).start()
    hostile.append(server)
    options = ClientOptions(max_connections=1, request_timeout=0.5, retry=FAST_RETRY)

    async def go() -> tuple[bytes, str | None]:
        client = RegistryClient(parse_endpoint(server.endpoint), options=options)
        try:
            url = await client.url("r/blobs/slow")
            resp = await client.send("GET", url, scopes=("repository:r:pull",), streaming=True)

            async def download() -> bytes:
                try:
                    return await resp.read()
                finally:
                    resp.release()

            reading = asyncio.create_task(download())
            await asyncio.sleep(0.1)  # the pool's one connection is busy for ~2 s: this HEAD waits for it
            found = await client.head_manifest("r", "v1")
            return await reading, found
        finally:
            await client.close()

    body, found = asyncio.run(asyncio.wait_for(go(), 30))
    assert body == b"xxxx"
    assert found == DIGEST
