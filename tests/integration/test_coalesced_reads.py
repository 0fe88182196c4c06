"""Concurrent service jobs of one image send each identical small read once (issue 17, coalesce.py).

Counted at an HTTP proxy in front of the real source registry, which holds every manifest GET until
released (HEADs pass: the API's submit check is one): while it holds them, every job that reaches
the source manifest GET finds the first one in flight and joins it, so exactly one arrives however
many jobs run. A job cancelled while
leading the read does not cancel it: the others complete with the answer it started.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import images
from tests.support.faults import FaultProxy, job_body, proxy
from tests.support.registries import Registries
from tests.support.registry import RegistryServer
from tests.support.service import Service
from tests.support.verify import assert_same_image

KiB = 1024
JOBS = 20
MANIFEST = r"/manifests/v1$"


@pytest.fixture(scope="module")
def targets(registries: Registries) -> list[RegistryServer]:
    return [registries.open(f"coalesced-reads-{i}") for i in range(3)]


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    svc = Service(tmp_path, {"REGCAST_JOBS_IN_FLIGHT": str(JOBS)}).start()
    yield svc
    svc.stop()


def test_twenty_jobs_send_one_source_manifest_head_while_it_is_in_flight(
    service: Service, faults: list[FaultProxy], repo: str, src_reg: RegistryServer, targets: list[RegistryServer]
) -> None:
    images.image([images.layer_bytes(n) for n in (64 * KiB, 32 * KiB)]).push(src_reg.http(), repo, "v1")
    src = proxy(faults, src_reg, "hold_manifest")
    dests = [proxy(faults, t, "pass") for t in targets]
    try:
        ids = [service.submit(job_body(src, repo, dests)) for _ in range(JOBS)]
        for i in ids:
            service.wait(i, until={"RUNNING"})
        service.wait_for(ids[0], lambda _st: src.events["held_manifest"] >= 1)
        # every job that reached the source GET joined the one in flight: exactly one was sent
        assert src.count("GET", MANIFEST) == 1
    finally:
        src.release()
    states = [service.wait(i) for i in ids]
    assert [st["value"] for st in states] == ["FINISHED"] * JOBS, [st for st in states if st["value"] != "FINISHED"]
    for t in targets:
        assert_same_image(src_reg.http(), repo, "v1", t.http(), repo, "v1")
    # a job sends at most one source GET of its own (none when joined): 1 + the jobs that came after
    gets = src.count("GET", MANIFEST)
    assert gets <= JOBS, (gets, src.count("HEAD", MANIFEST), [p.count("HEAD", MANIFEST) for p in dests])
    print(f"source manifest GETs {gets}, HEADs {src.count('HEAD', MANIFEST)} for {JOBS} jobs")


def test_followers_complete_when_the_job_leading_the_read_is_cancelled(
    service: Service, faults: list[FaultProxy], repo: str, src_reg: RegistryServer, targets: list[RegistryServer]
) -> None:
    images.image([images.layer_bytes(48 * KiB)]).push(src_reg.http(), repo, "v1")
    src = proxy(faults, src_reg, "hold_manifest")
    dests = [proxy(faults, t, "pass") for t in targets]
    try:
        leader = service.submit(job_body(src, repo, dests))
        service.wait_for(leader, lambda _st: src.events["held_manifest"] == 1)
        followers = [service.submit(job_body(src, repo, dests)) for _ in range(3)]
        for f in followers:
            service.wait(f, until={"RUNNING"})
        r = service.http.delete(f"/api/distribute/image/{leader}")
        assert r.status_code == 202, r.text
        assert service.wait(leader)["value"] == "CANCELLED"
        assert src.count("GET", MANIFEST) == 1  # the leader's read was not cancelled, nor sent again
    finally:
        src.release()
    states = [service.wait(f) for f in followers]
    assert [st["value"] for st in states] == ["FINISHED"] * len(followers), states
    for t in targets:
        assert_same_image(src_reg.http(), repo, "v1", t.http(), repo, "v1")


def test_a_trusted_blob_deleted_meanwhile_is_checked_again_and_sent(
    service: Service, faults: list[FaultProxy], repo: str, src_reg: RegistryServer, targets: list[RegistryServer]
) -> None:
    """A blob the process put in a repository seconds ago is not HEADed there again (known_blob_seconds);
    when it is gone after all (deleted through the registry API between two jobs), the manifest PUT's
    BLOB_UNKNOWN makes the job check every blob there again and send the missing one: FINISHED, identical."""
    layers = [images.layer_bytes(40 * KiB), images.layer_bytes(24 * KiB)]
    img = images.image(layers)
    img.push(src_reg.http(), repo, "v1")
    img.push(src_reg.http(), repo, "v2")
    src = proxy(faults, src_reg, "pass")
    dest = proxy(faults, targets[0], "pass")
    first = service.submit(job_body(src, repo, [dest]))
    assert service.wait(first)["value"] == "FINISHED"
    gone = images.sha(layers[0])
    r = httpx.delete(f"http://127.0.0.1:{targets[0].port}/v2/{repo}/blobs/{gone}")
    assert r.status_code == 202, r.text
    heads_before = dest.count("HEAD", r"/blobs/sha256:")

    second = service.submit(job_body(src, repo, [dest], ref="v2"))
    st = service.wait(second)

    assert st["value"] == "FINISHED", st
    assert_same_image(src_reg.http(), repo, "v2", targets[0].http(), repo, "v2")
    assert dest.count("PUT", r"/manifests/v2$") == 2  # answered BLOB_UNKNOWN (no HEAD asked first), then pushed
    assert upload_puts(dest, gone) == 2  # the first job's, and the one after the BLOB_UNKNOWN
    # no blob HEAD before the manifest PUT (all trusted), then one per blob of the image when checking again
    assert dest.count("HEAD", r"/blobs/sha256:") - heads_before == len(img.blobs)


def upload_puts(dest: FaultProxy, digest: str) -> int:
    return dest.count("PUT", rf"/blobs/uploads/.*[?&]digest={digest}")
