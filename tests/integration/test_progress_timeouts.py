"""Issue 10 item 4: a target that stops reading its upload drops out alone while the others finish;
a source dripping bytes under the minimum throughput is cut."""

from __future__ import annotations

import asyncio
import os

import pytest
from aiohttp import web

from regcast._exceptions import RegistryUnreachable
from regcast.registry import blobs
from regcast.registry.client import ClientOptions, RegistryClient
from regcast.registry.reference import parse_endpoint
from regcast.transfer.engine import CopyEngine, Target, TransferOptions
from regcast.transfer.progress import TargetState
from regcast.transfer.remote import RegistryRepository
from tests.support import images
from tests.support.clients import FAST_RETRY, client_for, target
from tests.support.hostile import HostileServer
from tests.support.registry import RegistryServer
from tests.support.verify import assert_same_image

MiB = 1024 * 1024


def test_a_target_that_stops_reading_drops_out_and_the_other_finishes(
    hostile: list[HostileServer], repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    async def stuck(request: web.Request) -> web.StreamResponse:
        if request.path == "/v2/":
            return web.json_response({})
        if request.method == "POST":
            return web.Response(status=202, headers={"Location": f"/v2/{repo}/blobs/uploads/1"})
        if request.method == "PUT" and "/blobs/uploads/" in request.path:
            if (request.content_length or 0) < MiB:  # the config goes in; the layer never does
                await request.read()
                return web.Response(status=201)
            await asyncio.sleep(3600)  # never reads the body
        return web.json_response({"errors": [{"code": "NOT_FOUND", "message": "x"}]}, status=404)

    evil = HostileServer(stuck).start()
    hostile.append(evil)
    img = images.image([os.urandom(24 * MiB)]).push(src_reg.http(), repo, "v1")
    stuck_target = Target(
        "stuck",
        RegistryRepository(
            RegistryClient(parse_endpoint(evil.endpoint), options=ClientOptions(retry=FAST_RETRY)), repo
        ),
        "v1",
    )
    healthy = target(open_reg, repo, "v1")

    async def go() -> list[TargetState]:
        source = client_for(src_reg, chunk_size=64 * 1024)
        engine = CopyEngine(TransferOptions(queue_depth=2, progress_timeout=2.0))
        try:
            result = await asyncio.wait_for(
                engine.copy(RegistryRepository(source, repo), "v1", [stuck_target, healthy]), 300
            )
            return [t.state for t in result.targets]
        finally:
            await source.close()
            await stuck_target.repo.close()
            await healthy.repo.close()

    states = asyncio.run(go())
    assert states == [TargetState.FAILED, TargetState.FINISHED]
    assert "made no progress for 2s" in (stuck_target.status.error or "")
    # what the socket buffers took is not progress: two stalls and it is given up (RetryPolicy.timeouts)
    assert stuck_target.status.retries == 1
    assert_same_image(src_reg.http(), repo, "v1", open_reg.http(), repo, "v1")
    assert img.digest


def test_a_dripping_source_is_cut_by_the_throughput_floor(hostile: list[HostileServer]) -> None:
    data = os.urandom(4096)

    async def drip(request: web.Request) -> web.StreamResponse:
        if request.path == "/v2/":
            return web.json_response({})
        resp = web.StreamResponse(status=200, headers={"Content-Length": str(len(data))})
        await resp.prepare(request)
        for i in range(len(data)):
            await resp.write(data[i : i + 1])
            await asyncio.sleep(0.2)
        return resp

    src = HostileServer(drip).start()
    hostile.append(src)

    async def go() -> None:
        options = ClientOptions(retry=FAST_RETRY, min_throughput=1000, throughput_window=1.0)
        c = RegistryClient(parse_endpoint(src.endpoint), options=options)
        try:
            digest = "sha256:" + images.sha(data).split(":", 1)[1]
            async for _chunk in blobs.read_blob(c, "x/y", digest, len(data)):
                pass
        finally:
            await c.close()

    with pytest.raises(RegistryUnreachable, match="bytes/s minimum"):
        asyncio.run(go())
    gets = [p for m, p, _h in src.seen if m == "GET" and "/blobs/" in p]
    assert 1 < len(gets) <= FAST_RETRY.attempts + 1  # resumed, then given up: never hung
