"""What a service job reuses from an earlier one of the same pool entry (issue 17, registry/memo.py).

Counted at HTTP proxies in front of real registries (distribution 2.8: no referrers API):
- the referrers API's 404 is asked once; later jobs go to the tag schema at once and still find a
  referrer attached after the first job; the tag list says which referrer tags exist (no request
  for the others);
- a manifest read by digest is read once across jobs; the tag is still resolved by every job
  (``If-None-Match``: a 304 while it holds the same digest, the new image once it moved);
- a job with other credentials gets nothing another credential read: it reads for itself, and a
  job with a wrong password is refused instead of being served.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import images
from tests.support.faults import FaultProxy, job_body, proxy
from tests.support.registries import Registries
from tests.support.registry import RegistryServer
from tests.support.service import Service
from tests.support.verify import assert_same_image

KiB = 1024
REFERRERS_API = r"/referrers/sha256:"
USERS = {"alice": "alice-S3cret-pw", "carol": "carol-Oth3r-pw"}


@pytest.fixture(scope="module")
def targets(registries: Registries) -> list[RegistryServer]:
    return [registries.open(f"job-memo-{i}") for i in range(2)]


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """A source with two users (htpasswd on loopback, plain HTTP so a proxy can count its requests)."""
    reg = RegistryServer("job-memo-locked", tmp_path_factory.mktemp("locked"), flavour="basic", users=dict(USERS))
    reg.start()
    yield reg
    reg.stop()


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    svc = Service(tmp_path, {}).start()
    yield svc
    svc.stop()


def by_digest_gets(p: FaultProxy, digest: str) -> int:
    return p.count("GET", rf"/manifests/{re.escape(digest)}$")


def run(service: Service, body: dict[str, Any]) -> dict[str, Any]:
    st = service.wait(service.submit(body))
    assert st["value"] == "FINISHED", st
    return st


def test_second_job_asks_no_referrers_api_and_finds_a_referrer_attached_later(
    service: Service, faults: list[FaultProxy], repo: str, src_reg: RegistryServer, targets: list[RegistryServer]
) -> None:
    img = images.image([images.layer_bytes(20 * KiB)]).push(src_reg.http(), repo, "v1")
    src = proxy(faults, src_reg, "pass")
    dests = [proxy(faults, t, "pass") for t in targets]
    run(service, job_body(src, repo, dests))
    assert src.count("GET", REFERRERS_API) == 1  # answered 404: distribution 2.8 has no referrers API

    sbom = images.referrer(img)
    images.attach(src_reg.http(), repo, img.digest, [sbom])  # as oras does without the API
    st = run(service, job_body(src, repo, dests))

    assert src.count("GET", REFERRERS_API) == 1  # remembered: straight to the tag schema
    assert src.count("GET", r"/tags/list") == 2  # each job reads the tags fresh...
    assert src.count("GET", rf"/manifests/{images.fallback_tag(img.digest)}$") == 1  # ...and the index once there
    assert src.count("HEAD", r"/manifests/sha256-") == 0  # no cosign tag listed: none asked for
    assert [t["referrers"] for t in st["targets"]] == [1, 1]
    for t in targets:
        assert images.index_entries(t.http(), repo, img.digest) == [images.referrer_descriptor(sbom)]
        assert t.http().get_manifest(repo, sbom.digest).content == sbom.root.raw


def test_a_400_from_the_referrers_api_is_not_remembered_as_no_api(
    service: Service, faults: list[FaultProxy], repo: str, src_reg: RegistryServer, targets: list[RegistryServer]
) -> None:
    """A 400 may be about one request (a filter the registry refuses): the next job asks the API again,
    where a 404 would have been remembered for the registry."""
    images.image([images.layer_bytes(20 * KiB)]).push(src_reg.http(), repo, "v1")
    src = proxy(faults, src_reg, "flaky", path=r"/v2/.+/referrers/.+", count=1, status=400)
    dests = [proxy(faults, t, "pass") for t in targets]
    run(service, job_body(src, repo, dests))
    run(service, job_body(src, repo, dests))
    assert src.events["flaky"] == 1  # the first job's ask answered 400...
    assert src.count("GET", REFERRERS_API) == 2  # ...and the second job asked again (it got distribution's 404)


def test_manifests_by_digest_read_once_and_the_tag_resolved_by_every_job(
    service: Service, faults: list[FaultProxy], repo: str, src_reg: RegistryServer, targets: list[RegistryServer]
) -> None:
    img = images.multi_platform(platforms=("linux/amd64", "linux/arm64/v8")).push(src_reg.http(), repo, "v1")
    children = [d["digest"] for d in json.loads(img.root.raw)["manifests"]]
    src = proxy(faults, src_reg, "pass")
    dests = [proxy(faults, t, "pass") for t in targets]

    run(service, job_body(src, repo, dests))
    run(service, job_body(src, repo, dests))

    assert [by_digest_gets(src, d) for d in children] == [1, 1]  # the second job had them from the first
    tag_gets = [(status, m) for m, path, status in src.answered if m == "GET" and path.endswith("/manifests/v1")]
    assert [s for s, _ in tag_gets] == [200, 304]  # the tag asked by both; the second answered "not modified"
    inm = [h.get("If-None-Match") for m, path, h in src.seen if m == "GET" and path.endswith("/manifests/v1")]
    assert inm == [None, f'"{img.digest}"']
    for t in targets:
        assert_same_image(src_reg.http(), repo, "v1", t.http(), repo, "v1")

    moved = images.multi_platform(platforms=("linux/amd64", "linux/s390x")).push(src_reg.http(), repo, "v1")
    run(service, job_body(src, repo, dests))  # the tag moved: the new image, not the one kept
    assert [s for m, path, s in src.answered if m == "GET" and path.endswith("/manifests/v1")] == [200, 304, 200]
    for t in targets:
        assert t.http().get_manifest(repo, "v1").content == moved.root.raw
        assert_same_image(src_reg.http(), repo, "v1", t.http(), repo, "v1")


def test_a_job_with_other_credentials_reads_for_itself(
    service: Service, faults: list[FaultProxy], repo: str, locked: RegistryServer, targets: list[RegistryServer]
) -> None:
    img = images.multi_platform(platforms=("linux/amd64", "linux/arm64/v8")).push(locked.http(), repo, "v1")
    children = [d["digest"] for d in json.loads(img.root.raw)["manifests"]]
    src = proxy(faults, locked, "pass")
    dest = proxy(faults, targets[0], "pass")

    def body(user: str, password: str, image: str) -> dict[str, Any]:
        b = job_body(src, repo, [dest])
        b["source"]["auth"] = {"basicauth": {"user": user, "password": password}}
        b["targets"][0]["image"] = image
        return b

    run(service, body("alice", USERS["alice"], f"{repo}/a"))
    run(service, body("alice", USERS["alice"], f"{repo}/b"))
    assert [by_digest_gets(src, d) for d in children] == [1, 1]  # alice's second job: from her first

    run(service, body("carol", USERS["carol"], f"{repo}/c"))
    assert [by_digest_gets(src, d) for d in children] == [2, 2]  # carol read them herself
    assert src.answered.count(("GET", f"/v2/{repo}/manifests/v1", 200)) == 2  # her tag GET: no alice's 304
    carols = [h for m, path, h in src.seen if m == "GET" and path.endswith(f"/manifests/{children[0]}")][1]
    assert carols["Authorization"].startswith("Basic ")  # her own credentials went with it

    bad = service.http.post("/api/distribute/image", json=body("alice", "wrong-password", f"{repo}/d"))
    assert bad.status_code >= 400 and "401" in bad.text, bad.text  # refused, never served what alice read
    assert [by_digest_gets(src, d) for d in children] == [2, 2]
    for image in ("a", "b", "c"):
        assert_same_image(locked.http(), repo, "v1", targets[0].http(), f"{repo}/{image}", "v1")
    assert targets[0].http().get_manifest(f"{repo}/d", "v1").status_code == 404


def test_a_refused_tag_list_falls_back_to_each_tag_and_is_not_asked_again(
    service: Service, faults: list[FaultProxy], repo: str, src_reg: RegistryServer, targets: list[RegistryServer]
) -> None:
    """A credential that may pull but not list tags (ECR without ListImages): 403 once, then each referrer
    tag is asked for on its own, as before; the signature is found by both jobs."""
    img = images.image([images.layer_bytes(12 * KiB)]).push(src_reg.http(), repo, "v1")
    sig = images.cosign_signature(img)
    sig.push(src_reg.http(), repo, images.cosign_tag(img.digest))
    src = proxy(faults, src_reg, "flaky", path=r"/v2/.+/tags/list", count=100, status=403)
    dests = [proxy(faults, targets[0], "pass")]
    for image in ("a", "b"):
        body = job_body(src, repo, dests)
        body["targets"][0]["image"] = f"{repo}/{image}"
        assert run(service, body)["targets"][0]["referrers"] == 1
        assert targets[0].http().get_manifest(f"{repo}/{image}", images.cosign_tag(img.digest)).content == sig.root.raw
    assert src.count("GET", r"/tags/list") == 1  # refused once, remembered
    assert src.count("HEAD", rf"/manifests/{images.cosign_tag(img.digest)}$") == 2  # asked for by each job
    assert src.count("GET", rf"/manifests/{images.fallback_tag(img.digest)}$") == 2


def test_a_tag_list_refused_in_one_repository_is_still_asked_in_another(
    service: Service, faults: list[FaultProxy], repo: str, src_reg: RegistryServer, targets: list[RegistryServer]
) -> None:
    """Listing is a permission per repository (ECR's ListImages, a robot account's scope): a refusal
    in one repository is remembered for that repository only."""
    other = f"{repo}-listed"
    for name in (repo, other):
        images.image([images.layer_bytes(12 * KiB)]).push(src_reg.http(), name, "v1")
    src = proxy(faults, src_reg, "flaky", path=rf"/v2/{repo}/tags/list", count=100, status=403)
    dests = [proxy(faults, targets[0], "pass")]
    for i, name in enumerate((repo, other, repo, other)):
        body = job_body(src, name, dests)
        body["targets"][0]["image"] = f"{name}/{i}"
        run(service, body)

    def listings(name: str) -> list[int]:
        return [st for m, path, st in src.answered if m == "GET" and path.split("?")[0] == f"/v2/{name}/tags/list"]

    assert src.count("GET", rf"/v2/{repo}/tags/list") == 1  # refused (by the proxy) once, remembered here
    assert listings(repo) == []
    assert listings(other) == [200, 200]  # read by each job: tags move
