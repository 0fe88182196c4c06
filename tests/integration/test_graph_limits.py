"""Issue 10 item 3: a hostile source cannot make one graph grow without bound (children, manifest
bytes, blobs); the limit is named in the error and fetching stops where it bites."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterator

import pytest

from regcast._exceptions import GraphTooLarge
from regcast.registry import mediatypes as mt
from regcast.registry.client import ClientOptions, RegistryClient
from regcast.registry.reference import parse_endpoint
from regcast.transfer.plan import GraphLimits, load_graph
from regcast.transfer.remote import RegistryRepository
from tests.support.clients import FAST_RETRY
from tests.support.hostile import HostileServer, registry_serving


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def image_manifest(n_layers: int, salt: int) -> bytes:
    config = b"{}"
    layers = [{"mediaType": mt.OCI_LAYER, "digest": sha(f"{salt}-{i}".encode()), "size": 10} for i in range(n_layers)]
    doc = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": {"mediaType": mt.OCI_CONFIG, "digest": sha(config), "size": 2},
        "layers": layers,
    }
    return json.dumps(doc).encode()


def hostile_index(children: int, layers: int) -> dict[str, tuple[bytes, str]]:
    served: dict[str, tuple[bytes, str]] = {}
    descs = []
    for c in range(children):
        raw = image_manifest(layers, c)
        served[sha(raw)] = (raw, mt.OCI_MANIFEST)
        descs.append({"mediaType": mt.OCI_MANIFEST, "digest": sha(raw), "size": len(raw)})
    index = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": descs}).encode()
    served["v1"] = (index, mt.OCI_INDEX)
    return served


@pytest.fixture
def server() -> Iterator[list[HostileServer]]:
    servers: list[HostileServer] = []
    yield servers
    for s in servers:
        s.stop()


def plan(servers: list[HostileServer], served: dict[str, tuple[bytes, str]], limits: GraphLimits) -> HostileServer:
    s = HostileServer(registry_serving(served)).start()
    servers.append(s)

    async def go() -> None:
        client = RegistryClient(parse_endpoint(s.endpoint), options=ClientOptions(retry=FAST_RETRY))
        try:
            await load_graph(RegistryRepository(client, "x/y"), "v1", None, limits)
        finally:
            await client.close()

    asyncio.run(go())
    return s


def fetched_children(s: HostileServer) -> int:
    return sum(1 for m, p, _h in s.seen if m == "GET" and "/manifests/sha256:" in p)


def test_too_many_children_is_refused_before_any_is_fetched(server: list[HostileServer]) -> None:
    with pytest.raises(GraphTooLarge, match="more than 50 child manifests"):
        plan(server, hostile_index(60, 1), GraphLimits(children=50))
    assert fetched_children(server[0]) == 0


def test_manifest_bytes_limit_stops_fetching(server: list[HostileServer]) -> None:
    served = hostile_index(60, 2000)  # ~200 KB each: 12 MB in all
    with pytest.raises(GraphTooLarge, match="REGCAST_MAX_GRAPH_MANIFEST_BYTES"):
        plan(server, served, GraphLimits(manifest_bytes=1024 * 1024))
    assert fetched_children(server[0]) <= 16  # stopped within the batch where the limit bit


def test_blob_limit(server: list[HostileServer]) -> None:
    with pytest.raises(GraphTooLarge, match="more than 100 blobs"):
        plan(server, hostile_index(3, 60), GraphLimits(blobs=100))


def test_within_limits_the_graph_loads(server: list[HostileServer]) -> None:
    plan(server, hostile_index(5, 10), GraphLimits())
    assert fetched_children(server[0]) == 5
