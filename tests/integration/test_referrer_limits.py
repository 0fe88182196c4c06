"""Referrer discovery spends the same graph limits as the image (issue 10's REGCAST_MAX_GRAPH_*): a
hostile source with thousands of referrers, huge referrer manifests or an endless referrers list
fails the plan with ``GraphTooLarge`` naming the limit, and stops fetching where the limit bites."""

from __future__ import annotations

import asyncio
import hashlib
import json

import pytest
from aiohttp import web

from regcast._exceptions import GraphTooLarge
from regcast.registry import mediatypes as mt
from regcast.registry.client import ClientOptions, RegistryClient
from regcast.registry.reference import parse_endpoint
from regcast.transfer.engine import CopyEngine, TransferOptions
from regcast.transfer.plan import GraphLimits, SourceGraph
from regcast.transfer.referrers import ReferrerOptions
from regcast.transfer.remote import RegistryRepository
from tests.support.clients import FAST_RETRY
from tests.support.hostile import Handler, HostileServer, serve

EMPTY = b"{}"
SIG = "application/vnd.test.signature"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _manifest(doc: dict[str, object]) -> bytes:
    return json.dumps(doc).encode()


IMAGE = _manifest(
    {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": {"mediaType": mt.OCI_CONFIG, "digest": sha(EMPTY), "size": 2},
        "layers": [],
    }
)


def referrer(i: int, pad: int = 0) -> bytes:
    return _manifest(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "artifactType": SIG,
            "config": {"mediaType": mt.OCI_EMPTY_JSON, "digest": sha(EMPTY), "size": 2},
            "layers": [],
            "subject": {"mediaType": mt.OCI_MANIFEST, "digest": sha(IMAGE), "size": len(IMAGE)},
            "annotations": {"n": str(i), "pad": "x" * pad},
        }
    )


def nested_referrer(depth: int) -> tuple[bytes, list[bytes]]:
    """A referrer that is an index nesting ``depth`` indexes deep, and every manifest under it."""
    inner = referrer(-1).replace(b'"subject"', b'"x-subject"')
    below = [inner]
    for level in range(depth):
        doc: dict[str, object] = {
            "schemaVersion": 2,
            "mediaType": mt.OCI_INDEX,
            "manifests": [
                {"mediaType": json.loads(below[-1])["mediaType"], "digest": sha(below[-1]), "size": len(below[-1])}
            ],
        }
        if level == depth - 1:
            doc["artifactType"] = SIG
            doc["subject"] = {"mediaType": mt.OCI_MANIFEST, "digest": sha(IMAGE), "size": len(IMAGE)}
        below.append(_manifest(doc))
    return below[-1], below[:-1]


def hostile_source(referrers: list[bytes], endless_pages: int = 0, extra: list[bytes] | None = None) -> Handler:
    """A registry serving one image and its referrers (API listing them; ``endless_pages``: a listing
    whose pages of that many bytes always link to a next one; ``extra``: more manifests by digest)."""
    by_digest = {sha(r): r for r in [*referrers, *(extra or [])]}
    by_digest[sha(IMAGE)] = IMAGE
    listing = _manifest(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_INDEX,
            "manifests": [
                {"mediaType": json.loads(r)["mediaType"], "digest": sha(r), "size": len(r), "artifactType": SIG}
                for r in referrers
            ],
        }
    )

    async def handle(request: web.Request) -> web.StreamResponse:
        path = request.path
        if path == "/v2/":
            return web.json_response({})
        if "/referrers/" in path:
            if endless_pages:
                page = int(request.query.get("page", "0"))
                body = _manifest(
                    {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [], "pad": "x" * endless_pages}
                )
                link = f'<{path}?page={page + 1}>; rel="next"'
                return web.Response(body=body, content_type=mt.OCI_INDEX, headers={"Link": link})
            return web.Response(body=listing, content_type=mt.OCI_INDEX)
        if "/manifests/" in path:
            ref = path.rsplit("/", 1)[1]
            raw = IMAGE if ref == "v1" else by_digest.get(ref)
            if raw is not None:
                media = str(json.loads(raw)["mediaType"])
                headers = {"Content-Type": media, "Docker-Content-Digest": sha(raw)}
                return web.Response(body=b"" if request.method == "HEAD" else raw, headers=headers)
        if path.endswith("/blobs/" + sha(EMPTY)):
            return web.Response(body=b"" if request.method == "HEAD" else EMPTY, headers={"Content-Length": "2"})
        return web.json_response({"errors": [{"code": "NOT_FOUND", "message": "unknown"}]}, status=404)

    return handle


def plan(s: HostileServer, limits: GraphLimits) -> SourceGraph:
    async def go() -> SourceGraph:
        client = RegistryClient(parse_endpoint(s.endpoint), options=ClientOptions(retry=FAST_RETRY))
        try:
            engine = CopyEngine(TransferOptions(graph_limits=limits, checks_in_flight=8))
            return await engine.plan(RegistryRepository(client, "x/y"), "v1", None, ReferrerOptions())
        finally:
            await client.close()

    return asyncio.run(go())


def referrer_gets(s: HostileServer, referrers: list[bytes]) -> int:
    wanted = {sha(r) for r in referrers}
    return sum(1 for m, p, _h in s.seen if m == "GET" and p.rsplit("/", 1)[1] in wanted)


def test_thousands_of_referrers_fail_before_any_is_fetched(hostile: list[HostileServer]) -> None:
    many = [referrer(i) for i in range(3000)]
    s = serve(hostile, hostile_source(many))
    with pytest.raises(GraphTooLarge) as caught:
        plan(s, GraphLimits())  # the defaults: 1000 manifests
    assert str(caught.value) == (
        "the image lists more than 1000 child manifests (REGCAST_MAX_GRAPH_CHILDREN), counting its referrers "
        '(copy without them: --no-referrers, or "referrers": false)'
    )
    assert referrer_gets(s, many) == 0


def test_huge_referrer_manifests_stop_at_the_manifest_bytes_limit(hostile: list[HostileServer]) -> None:
    huge = [referrer(i, pad=1024 * 1024) for i in range(40)]  # 1 MiB each, 40 MiB in all
    s = serve(hostile, hostile_source(huge))
    with pytest.raises(GraphTooLarge, match=r"exceed 4194304 bytes \(REGCAST_MAX_GRAPH_MANIFEST_BYTES\), counting"):
        plan(s, GraphLimits(manifest_bytes=4 * 1024 * 1024))
    assert referrer_gets(s, huge) <= 4 + 8  # the limit bites within the fetches in flight (8)


def test_an_endless_referrers_list_stops_at_the_manifest_bytes_limit(hostile: list[HostileServer]) -> None:
    s = serve(hostile, hostile_source([], endless_pages=1024 * 1024))
    with pytest.raises(
        GraphTooLarge, match=r"exceed 4194304 bytes \(REGCAST_MAX_GRAPH_MANIFEST_BYTES\), counting its referrers"
    ):
        plan(s, GraphLimits(manifest_bytes=4 * 1024 * 1024))
    pages = sum(1 for m, p, _h in s.seen if m == "GET" and "/referrers/" in p)
    assert pages == 4  # the fourth page crossed the limit; MAX_PAGES (100) would have read 100 MiB


def test_within_the_limits_the_referrers_are_found(hostile: list[HostileServer]) -> None:
    few = [referrer(i) for i in range(3)]
    s = serve(hostile, hostile_source(few))
    graph = plan(s, GraphLimits(children=3))
    assert graph.referrers is not None
    assert sorted(r.manifest.raw for r in graph.referrers.referrers) == sorted(few)
    assert graph.referrers.left_out == ()


def test_a_referrer_index_nested_deeper_than_an_image_index_may_be_is_left_out(hostile: list[HostileServer]) -> None:
    deep, under = nested_referrer(6)
    ok, ok_under = nested_referrer(2)
    s = serve(hostile, hostile_source([deep, ok], extra=[*under, *ok_under]))
    graph = plan(s, GraphLimits())
    assert graph.referrers is not None
    assert [r.manifest.raw for r in graph.referrers.referrers] == [ok]
    assert graph.referrers.left_out == (f"referrer {sha(deep)} of {sha(IMAGE)} left out: index nesting deeper than 4",)
