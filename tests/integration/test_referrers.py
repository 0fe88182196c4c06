"""Referrers travel with the image: signatures, SBOMs, attestations, against real registries.

distribution 2.8 has no referrers API: there the tag schema (``<alg>-<hex>`` index) and cosign's
tags are used. The API itself is exercised through ``tests/support/referrers_front.py``, a TEST
FRONT before a real distribution (not a registry: it only answers ``/referrers/<digest>`` from the
manifests pushed through it and sets ``OCI-Subject``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from regcast.registry import referrers as api
from regcast.transfer.engine import CopyEngine, CopyResult, Target
from regcast.transfer.referrers import ReferrerOptions
from regcast.transfer.remote import RegistryRepository
from tests.support import images
from tests.support.cli import regcast
from tests.support.clients import FAST_RETRY, client_for, target
from tests.support.faults import FaultProxy, via
from tests.support.images import signed_image
from tests.support.quirks import QuirkProxy
from tests.support.referrers_front import ReferrersFront
from tests.support.registries import Registries
from tests.support.registry import RegistryServer
from tests.support.service import Service, source
from tests.support.verify import assert_same_image


def run_copy(
    src: RegistryServer,
    repo: str,
    ref: str,
    targets: list[Target],
    referrers: ReferrerOptions | None = None,
    engine: CopyEngine | None = None,
) -> CopyResult:
    async def go() -> CopyResult:
        source = client_for(src, read_only=True)
        try:
            return await (engine or CopyEngine()).copy(
                RegistryRepository(source, repo), ref, targets, referrers=referrers or ReferrerOptions()
            )
        finally:
            await source.close()
            for t in targets:
                await t.repo.close()

    return asyncio.run(go())


def same_manifest(src: RegistryServer, dst: RegistryServer, repo: str, ref: str, dst_repo: str | None = None) -> None:
    """The manifest at ``ref`` is byte-identical at ``dst`` and its blobs are all there."""
    assert_same_image(src.http(), repo, ref, dst.http(), dst_repo or repo, ref)


@pytest.fixture(scope="module")
def second_reg(registries: Registries) -> RegistryServer:
    return registries.open("referrers-second")


@pytest.fixture
def front_pair(registries: Registries) -> Iterator[tuple[ReferrersFront, ReferrersFront]]:
    src = ReferrersFront(registries.open("front-src-backend").port, page_size=2).start()
    dst = ReferrersFront(registries.open("front-dst-backend").port, page_size=2).start()
    yield src, dst
    src.stop()
    dst.stop()


def test_tag_schema_and_cosign_to_two_targets(
    repo: str, src_reg: RegistryServer, open_reg: RegistryServer, second_reg: RegistryServer
) -> None:
    img, sig, sbom, sbom_sig = signed_image(src_reg, repo)
    result = run_copy(src_reg, repo, "v1", [target(open_reg, repo, "v1"), target(second_reg, repo, "v1")])
    assert result.ok, [(t.key, t.error) for t in result.targets]
    assert [t.referrers for t in result.targets] == [3, 3]
    assert all(t.referrers_left_out == [] for t in result.targets)
    for dst in (open_reg, second_reg):
        same_manifest(src_reg, dst, repo, "v1")
        same_manifest(src_reg, dst, repo, images.cosign_tag(img.digest))
        same_manifest(src_reg, dst, repo, sbom.digest)
        same_manifest(src_reg, dst, repo, sbom_sig.digest)
        listed = images.index_entries(dst.http(), repo, img.digest)
        assert listed == [images.referrer_descriptor(sbom)]
        assert images.index_entries(dst.http(), repo, sbom.digest) == [images.referrer_descriptor(sbom_sig)]
        assert dst.http().get_manifest(repo, images.cosign_tag(img.digest)).content == sig.root.raw


def test_target_index_keeps_entries_of_others(repo: str, src_reg: RegistryServer, open_reg: RegistryServer) -> None:
    img, _sig, sbom, _ = signed_image(src_reg, repo)
    images.image(oci=True).push(open_reg.http(), repo, "other")
    img.push(open_reg.http(), repo, "v1")  # the subject is already there, with someone else's attestation
    theirs = images.referrer(img, images.IN_TOTO)
    images.attach(open_reg.http(), repo, img.digest, [theirs])
    before = images.index_entries(open_reg.http(), repo, img.digest)
    result = run_copy(src_reg, repo, "v1", [target(open_reg, repo, "v1")])
    assert result.ok, [(t.key, t.error) for t in result.targets]
    assert result.targets[0].referrers == 3
    after = images.index_entries(open_reg.http(), repo, img.digest)
    assert after == before + [images.referrer_descriptor(sbom)]
    same_manifest(src_reg, open_reg, repo, images.cosign_tag(img.digest))


def test_two_jobs_adding_different_referrers_lose_neither(
    repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    img = images.image(oci=True)
    sboms = []
    for name in ("a", "b"):
        img.push(src_reg.http(), f"{repo}-{name}", "v1")
        sbom = images.referrer(img, images.SPDX)
        images.attach(src_reg.http(), f"{repo}-{name}", img.digest, [sbom])
        sboms.append(sbom)
    img.push(open_reg.http(), repo, "v1")  # the image is there; only the referrers race
    open_reg.http().push_blob(repo, b"{}", images.sha(b"{}"))
    engine = CopyEngine()  # one worker process running both jobs at once

    async def both() -> list[CopyResult]:
        sources = [client_for(src_reg, read_only=True) for _ in range(2)]
        targets = [target(open_reg, repo, "v1", overwrite=True) for _ in range(2)]
        try:
            return list(
                await asyncio.gather(
                    *(
                        engine.copy(RegistryRepository(s, f"{repo}-{n}"), "v1", [t], referrers=ReferrerOptions())
                        for s, t, n in zip(sources, targets, "ab", strict=True)
                    )
                )
            )
        finally:
            await asyncio.gather(*(c.close() for c in sources), *(t.repo.close() for t in targets))

    results = asyncio.run(both())
    assert all(r.ok for r in results), [(t.key, t.error) for r in results for t in r.targets]
    listed = {e["digest"] for e in images.index_entries(open_reg.http(), repo, img.digest)}
    assert listed == {s.digest for s in sboms}


def test_two_engines_adding_referrers_lose_neither(
    repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    """Two processes (no shared lock): the re-read after every write merges with the other writer."""
    img = images.image(oci=True)
    sboms = []
    for name in ("a", "b", "c"):
        img.push(src_reg.http(), f"{repo}-{name}", "v1")
        sbom = images.referrer(img, images.SPDX)
        images.attach(src_reg.http(), f"{repo}-{name}", img.digest, [sbom])
        sboms.append(sbom)
    img.push(open_reg.http(), repo, "v1")  # the image is there; only the referrers race
    open_reg.http().push_blob(repo, b"{}", images.sha(b"{}"))

    async def all_three() -> list[CopyResult]:
        sources = [client_for(src_reg, read_only=True) for _ in range(3)]
        targets = [target(open_reg, repo, "v1", overwrite=True) for _ in range(3)]
        try:
            return list(
                await asyncio.gather(
                    *(
                        CopyEngine().copy(RegistryRepository(s, f"{repo}-{n}"), "v1", [t], referrers=ReferrerOptions())
                        for s, t, n in zip(sources, targets, "abc", strict=True)
                    )
                )
            )
        finally:
            await asyncio.gather(*(c.close() for c in sources), *(t.repo.close() for t in targets))

    results = asyncio.run(all_three())
    assert all(r.ok for r in results), [(t.key, t.error) for r in results for t in r.targets]
    listed = {e["digest"] for e in images.index_entries(open_reg.http(), repo, img.digest)}
    assert listed == {s.digest for s in sboms}


def push_through(front: ReferrersFront, repo: str) -> tuple[images.Image, list[images.Image]]:
    http = front.server.http()
    img = images.image(oci=True).push(http, repo, "v1")
    refs = [
        images.referrer(img, images.SPDX),
        images.referrer(img, images.SIGSTORE_BUNDLE),
        images.referrer(img, images.SIGSTORE_BUNDLE),
    ]
    for r in refs:
        r.push(http, repo, tag=None)
    return img, refs


def test_referrers_api_paged_to_a_target_that_keeps_the_list(
    repo: str, front_pair: tuple[ReferrersFront, ReferrersFront]
) -> None:
    src, dst = front_pair
    img, refs = push_through(src, repo)
    result = run_copy(src.server, repo, "v1", [target(dst.server, repo, "v1")])
    assert result.ok, [(t.key, t.error) for t in result.targets]
    assert result.targets[0].referrers == 3
    assert any(q.get("page") == "2" for q in src.queries), "the second page was never asked for"
    assert {d["digest"] for d in dst.listed[(repo, img.digest)]} == {r.digest for r in refs}
    for r in refs:
        same_manifest(src.server, dst.server, repo, r.digest)
    # the target answered OCI-Subject: no tag-schema index written there
    assert dst.server.http().get_manifest(repo, images.fallback_tag(img.digest)).status_code == 404
    again = run_copy(src.server, repo, "v1", [target(dst.server, repo, "v1")])  # held: its API lists them
    assert again.ok, [(t.key, t.error) for t in again.targets]
    assert again.targets[0].referrers == 3
    assert dst.server.http().get_manifest(repo, images.fallback_tag(img.digest)).status_code == 404


def test_referrers_api_artifact_type_filter(repo: str, front_pair: tuple[ReferrersFront, ReferrersFront]) -> None:
    src, dst = front_pair
    img, refs = push_through(src, repo)
    only = ReferrerOptions(types=frozenset({images.SIGSTORE_BUNDLE}))
    result = run_copy(src.server, repo, "v1", [target(dst.server, repo, "v1")], referrers=only)
    assert result.ok, [(t.key, t.error) for t in result.targets]
    assert result.targets[0].referrers == 2
    assert {"artifactType": images.SIGSTORE_BUNDLE} in [
        {k: v for k, v in q.items() if k != "page"} for q in src.queries
    ]
    assert {d["digest"] for d in dst.listed[(repo, img.digest)]} == {r.digest for r in refs[1:]}
    assert dst.server.http().get_manifest(repo, refs[0].digest).status_code == 404


def test_index_whose_children_each_have_a_signature(
    repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    idx = images.multi_platform().push(src_reg.http(), repo, "v1")
    for child in idx.children:
        images.cosign_signature(images.Image(child)).push(src_reg.http(), repo, images.cosign_tag(child.digest))
    result = run_copy(src_reg, repo, "v1", [target(open_reg, repo, "v1")])
    assert result.ok, [(t.key, t.error) for t in result.targets]
    assert result.targets[0].referrers == 3
    same_manifest(src_reg, open_reg, repo, "v1")
    for child in idx.children:
        same_manifest(src_reg, open_reg, repo, images.cosign_tag(child.digest))


def test_referrer_with_blobs_missing_at_the_source(
    repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    img, _sig, sbom, _sbom_sig = signed_image(src_reg, repo)
    payload = json.loads(sbom.root.raw)["layers"][0]["digest"]
    http = src_reg.http()
    assert http.client.delete(f"{repo}/blobs/{payload}").status_code == 202
    result = run_copy(src_reg, repo, "v1", [target(open_reg, repo, "v1")])
    status = result.targets[0]
    assert result.ok, status.error
    same_manifest(src_reg, open_reg, repo, "v1")
    same_manifest(src_reg, open_reg, repo, images.cosign_tag(img.digest))
    assert status.referrers == 1  # the signature; the SBOM (and so its signature) left out
    assert len(status.referrers_left_out) == 1
    line = status.referrers_left_out[0]
    assert sbom.digest in line
    assert payload in line
    assert "missing at source" in line
    assert open_reg.http().get_manifest(repo, sbom.digest).status_code == 404


def test_referrers_off_copies_none(repo: str, src_reg: RegistryServer, open_reg: RegistryServer) -> None:
    img, _sig, sbom, _ = signed_image(src_reg, repo)
    result = run_copy(src_reg, repo, "v1", [target(open_reg, repo, "v1")], referrers=ReferrerOptions(enabled=False))
    assert result.ok
    assert result.targets[0].referrers == 0
    same_manifest(src_reg, open_reg, repo, "v1")
    http = open_reg.http()
    assert http.get_manifest(repo, images.cosign_tag(img.digest)).status_code == 404
    assert http.get_manifest(repo, images.fallback_tag(img.digest)).status_code == 404
    assert http.get_manifest(repo, sbom.digest).status_code == 404


def test_image_already_there_still_gets_new_referrers(
    repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    img, _sig, _sbom, sbom_sig = signed_image(src_reg, repo)
    img.push(open_reg.http(), repo, "v1")
    result = run_copy(src_reg, repo, "v1", [target(open_reg, repo, "v1")])
    assert result.ok
    assert result.targets[0].referrers == 3
    assert result.targets[0].manifests_pushed == 0  # the image itself was not pushed again
    same_manifest(src_reg, open_reg, repo, images.cosign_tag(img.digest))
    same_manifest(src_reg, open_reg, repo, sbom_sig.digest)


def test_cli_counts_referrers_and_no_referrers(
    repo: str, tmp_path: Path, src_reg: RegistryServer, open_reg: RegistryServer, second_reg: RegistryServer
) -> None:
    img, _sig, _sbom, _ = signed_image(src_reg, repo)
    r = regcast("copy", f"{src_reg.host}/{repo}:v1", f"{open_reg.host}/{repo}:v1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1].endswith(", 3 referrers)")
    same_manifest(src_reg, open_reg, repo, images.cosign_tag(img.digest))
    r = regcast("copy", "--no-referrers", f"{src_reg.host}/{repo}:v1", f"{second_reg.host}/{repo}:v1")
    assert r.returncode == 0, r.stderr
    assert "referrers)" not in r.stdout
    same_manifest(src_reg, second_reg, repo, "v1")
    assert second_reg.http().get_manifest(repo, images.cosign_tag(img.digest)).status_code == 404


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    svc = Service(tmp_path_factory.mktemp("referrers-service"), {}).start()
    yield svc
    svc.stop()


def test_api_referrers_options_and_what_was_left_out(
    service: Service, repo: str, src_reg: RegistryServer, open_reg: RegistryServer, second_reg: RegistryServer
) -> None:
    img, _sig, sbom, _ = signed_image(src_reg, repo)
    broken = f"{repo}-broken"
    _bimg, _bsig, bsbom, _ = signed_image(src_reg, broken)
    payload = json.loads(bsbom.root.raw)["layers"][0]["digest"]
    assert src_reg.http().client.delete(f"{broken}/blobs/{payload}").status_code == 202

    def submit(body: dict[str, object]) -> dict[str, object]:
        r = service.http.post("/api/distribute/image", json=body)
        assert r.status_code == 201, r.text
        return service.wait(r.json()["id"])

    only_sboms = submit(
        {
            "source": source(src_reg, repo),
            "targets": [{"endpoint": open_reg.endpoint, "ref": "only-sboms"}],
            "referrer_types": [images.SPDX],
        }
    )
    assert only_sboms["value"] == "FINISHED", only_sboms
    assert only_sboms["referrer_types"] == [images.SPDX]
    assert only_sboms["targets"][0]["referrers"] == 1  # type: ignore[index]
    same_manifest(src_reg, open_reg, repo, sbom.digest)
    assert open_reg.http().get_manifest(repo, images.cosign_tag(img.digest)).status_code == 404

    none = submit({"source": source(src_reg, repo), "targets": [{"endpoint": second_reg.endpoint}], "referrers": False})
    assert none["value"] == "FINISHED" and none["referrers"] is False
    assert none["targets"][0]["referrers"] == 0  # type: ignore[index]
    assert second_reg.http().get_manifest(repo, images.fallback_tag(img.digest)).status_code == 404

    partial = submit({"source": source(src_reg, broken), "targets": [{"endpoint": open_reg.endpoint}]})
    assert partial["value"] == "FINISHED", partial
    target_status = partial["targets"][0]  # type: ignore[index]
    assert target_status["referrers"] == 1  # the cosign signature; the SBOM and its signature left out
    [line] = target_status["referrers_left_out"]
    assert bsbom.digest in line and payload in line
    same_manifest(src_reg, open_reg, broken, "v1")


def test_api_refuses_a_bad_referrer_type(service: Service, repo: str, src_reg: RegistryServer) -> None:
    body = {"source": source(src_reg, repo), "targets": [{"endpoint": src_reg.endpoint}], "referrer_types": ["sbom"]}
    r = service.http.post("/api/distribute/image", json=body)
    assert r.status_code == 400
    assert r.json()["msg"].startswith("Failed to parse data: referrer_types.0: not a media type")


def test_cli_warns_once_about_what_was_left_out(
    repo: str, src_reg: RegistryServer, open_reg: RegistryServer, second_reg: RegistryServer
) -> None:
    img, _sig, sbom, _ = signed_image(src_reg, repo)
    payload = json.loads(sbom.root.raw)["layers"][0]["digest"]
    assert src_reg.http().client.delete(f"{repo}/blobs/{payload}").status_code == 202
    r = regcast("copy", f"{src_reg.host}/{repo}:v1", f"{open_reg.host}/{repo}:v1", f"{second_reg.host}/{repo}:v1")
    assert r.returncode == 0, r.stderr
    warnings = [line for line in r.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1, r.stderr
    assert sbom.digest in warnings[0]
    assert payload in warnings[0]
    oks = r.stdout.strip().splitlines()
    assert len(oks) == 2
    assert all(line.endswith(", 1 referrers (1 left out))") for line in oks), oks
    same_manifest(src_reg, second_reg, repo, images.cosign_tag(img.digest))


def test_a_referrers_page_cut_mid_way_is_read_again(
    faults: list[FaultProxy], repo: str, front_pair: tuple[ReferrersFront, ReferrersFront]
) -> None:
    src, _dst = front_pair
    img, refs = push_through(src, repo)
    p = QuirkProxy(src.port, "reset_referrers", count=FAST_RETRY.attempts - 1).start()
    faults.append(p)

    async def listed() -> api.Listing | None:
        async with via(p) as client:
            return await api.list_referrers(client, repo, img.digest)

    listing = asyncio.run(listed())
    assert listing is not None
    assert {d["digest"] for d in listing.descriptors} == {r.digest for r in refs}  # page 1 read again, then page 2
    assert p.events["reset"] == FAST_RETRY.attempts - 1
