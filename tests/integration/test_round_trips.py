"""Round trips of small blobs (issue 17), counted at an HTTP proxy in front of a real registry.

A target repository without any tag is not asked about its small blobs (HEAD); a large blob is
still asked about, so an interrupted copy's large uploads are not sent again. Small blobs go many at
a time (``small_blobs_in_flight``), not ``blobs_in_flight``: a registry is pinged once however many
first requests go at once.
"""

from __future__ import annotations

import asyncio

from regcast.registry import blobs
from regcast.registry.client import ClientOptions
from regcast.registry.pool import ConnectionPools
from regcast.registry.reference import parse_endpoint
from regcast.transfer.engine import CopyEngine, CopyResult, Target
from regcast.transfer.remote import RegistryRepository
from tests.support import images
from tests.support.clients import client_for
from tests.support.faults import FaultProxy, proxy, via
from tests.support.registry import RegistryServer
from tests.support.verify import assert_same_image

KiB = 1024
DIGEST = "sha256:" + "0" * 64


def copy_via(src: RegistryServer, repo: str, p: FaultProxy, dest: RegistryServer) -> CopyResult:
    async def go() -> CopyResult:
        source = client_for(src, read_only=True)
        t = Target("t", RegistryRepository(via(p, dest), repo), "v1")
        try:
            return await CopyEngine().copy(RegistryRepository(source, repo), "v1", [t])
        finally:
            await source.close()
            await t.repo.close()

    return asyncio.run(go())


def test_a_repository_without_tags_is_not_asked_about_small_blobs(
    faults: list[FaultProxy], repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    img = images.image([images.layer_bytes(32 * KiB) for _ in range(5)]).push(src_reg.http(), repo, "v1")
    p = proxy(faults, open_reg, "pass")
    result = copy_via(src_reg, repo, p, open_reg)
    assert result.ok, result.targets[0].error
    assert p.count("HEAD", "/blobs/sha256:") == 0
    assert p.count("GET", "/tags/list") == 1
    assert p.count("PUT", r"/blobs/uploads/.*[?&]digest=") == len(img.blobs)
    assert result.targets[0].blobs_uploaded == len(img.blobs)
    assert_same_image(src_reg.http(), repo, "v1", open_reg.http(), repo, "v1")


def test_a_large_blob_left_untagged_by_an_earlier_copy_is_asked_about_not_sent_again(
    faults: list[FaultProxy], repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    large, small = images.layer_bytes(1536 * KiB), images.layer_bytes(8 * KiB)
    img = images.image([large, small]).push(src_reg.http(), repo, "v1")
    open_reg.http().push_blob(repo, large, images.sha(large))  # an interrupted copy: blobs, no tag
    p = proxy(faults, open_reg, "pass")
    result = copy_via(src_reg, repo, p, open_reg)
    t = result.targets[0]
    assert result.ok, t.error
    assert p.count("HEAD", f"/blobs/{images.sha(large)}$") == 1
    assert p.count("HEAD", "/blobs/sha256:") == 1  # the small ones are not asked about
    assert (t.blobs_present, t.blobs_uploaded) == (1, len(img.blobs) - 1)
    assert p.count("PUT", rf"/blobs/uploads/.*[?&]digest={images.sha(large)}") == 0
    assert_same_image(src_reg.http(), repo, "v1", open_reg.http(), repo, "v1")


def test_a_repository_with_tags_is_asked_about_every_blob(
    faults: list[FaultProxy], repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    img = images.image([images.layer_bytes(16 * KiB) for _ in range(3)]).push(src_reg.http(), repo, "v1")
    images.image().push(open_reg.http(), repo, "other")
    p = proxy(faults, open_reg, "pass")
    result = copy_via(src_reg, repo, p, open_reg)
    assert result.ok, result.targets[0].error
    assert p.count("HEAD", "/blobs/sha256:") == len(img.blobs)
    assert_same_image(src_reg.http(), repo, "v1", open_reg.http(), repo, "v1")


def test_small_blobs_are_uploaded_many_at_a_time(
    faults: list[FaultProxy], repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    """12 small blobs: their PUTs wait at the proxy until 8 wait together (``blobs_in_flight`` is 4)."""
    img = images.image([images.layer_bytes(32 * KiB + i) for i in range(11)]).push(src_reg.http(), repo, "v1")
    p = proxy(faults, open_reg, "gather_uploads", together=8, wait=3.0)
    result = copy_via(src_reg, repo, p, open_reg)
    assert result.ok, result.targets[0].error
    assert p.events["uploads_at_once"] >= 8
    assert p.count("PUT", r"/blobs/uploads/.*[?&]digest=") == len(img.blobs)
    assert_same_image(src_reg.http(), repo, "v1", open_reg.http(), repo, "v1")


def test_first_requests_at_once_ping_the_registry_once(
    faults: list[FaultProxy], repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    """A new target asked its tag and its tag list at once (a service job's start) sends one ``GET /v2/``;
    so do two clients of one pool entry (two jobs starting together)."""
    images.image([images.layer_bytes(8 * KiB)]).push(src_reg.http(), repo, "v1")
    p = proxy(faults, open_reg, "pass")

    async def go() -> None:
        c = via(p)
        try:
            first = (c.head_manifest(repo, "v1"), blobs.holds_no_tags(c, repo), blobs.blob_exists(c, repo, DIGEST))
            await asyncio.gather(*first)
        finally:
            await c.close()
        pools = ConnectionPools()
        endpoint = parse_endpoint(p.endpoint)
        a, b = (pools.client(endpoint, options=ClientOptions()) for _ in range(2))
        try:
            await asyncio.gather(a.head_manifest(repo, "v1"), blobs.holds_no_tags(b, repo))
        finally:
            await pools.close()

    asyncio.run(go())
    assert p.count("GET", "^/v2/$") == 2  # one per client of its own, one per pool entry
