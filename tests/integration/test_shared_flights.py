"""Concurrent service jobs copying the same image to the same targets share the work (issue 17).

Counted where it happens, at HTTP proxies in front of the real registries: blob downloads at the
source, upload PUTs (which carry ``?digest=``) at each target. A job that leads a shared upload
and is cancelled leaves it to the jobs that waited for it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import images
from tests.support.faults import FaultProxy, job_body, proxy
from tests.support.registries import Registries
from tests.support.registry import RegistryServer
from tests.support.service import Service
from tests.support.verify import assert_same_image

KiB = 1024
JOBS = 20


@pytest.fixture(scope="module")
def targets(registries: Registries) -> list[RegistryServer]:
    """Three target registries of this module's own (the counts are per registry)."""
    return [registries.open(f"shared-flights-{i}") for i in range(3)]


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    # reads counted exactly: no detach (a second read) on a loaded machine
    svc = Service(tmp_path, {"REGCAST_JOBS_IN_FLIGHT": str(JOBS), "REGCAST_DETACH_AFTER": "0"}).start()
    yield svc
    svc.stop()


def blob_gets(src: FaultProxy, digest: str) -> int:
    return src.count("GET", rf"/blobs/{re.escape(digest)}$")


def upload_puts(dest: FaultProxy, digest: str) -> int:
    return dest.count("PUT", rf"/blobs/uploads/.*[?&]digest={re.escape(digest)}")


def test_twenty_jobs_read_each_blob_once_and_upload_it_once_per_target(
    service: Service,
    faults: list[FaultProxy],
    repo: str,
    src_reg: RegistryServer,
    targets: list[RegistryServer],
) -> None:
    sizes = [512 * KiB, 256 * KiB, 96 * KiB] + [32 * KiB] * 12 + [4 * KiB]
    img = images.image([images.layer_bytes(n) for n in sizes]).push(src_reg.http(), repo, "v1")
    src = proxy(faults, src_reg, "pass")
    dests = [proxy(faults, t, "pass") for t in targets]

    ids = [service.submit(job_body(src, repo, dests)) for _ in range(JOBS)]
    states = [service.wait(i) for i in ids]

    assert [st["value"] for st in states] == ["FINISHED"] * JOBS, [st for st in states if st["value"] != "FINISHED"]
    for t in targets:
        assert_same_image(src_reg.http(), repo, "v1", t.http(), repo, "v1")
    reads = sorted(blob_gets(src, d) for d in img.blobs)
    uploads = [sorted(upload_puts(p, d) for d in img.blobs) for p in dests]
    assert (reads, uploads) == ([1] * len(img.blobs), [[1] * len(img.blobs)] * len(dests)), (
        f"{len(img.blobs)} blobs: {sum(reads)} source reads, {[sum(u) for u in uploads]} uploads per target"
    )
    for p in dests:
        assert p.count("PATCH", "/blobs/uploads/") == 0


def test_jobs_waiting_for_a_cancelled_leader_take_its_upload_over(
    service: Service,
    faults: list[FaultProxy],
    repo: str,
    src_reg: RegistryServer,
    targets: list[RegistryServer],
) -> None:
    big = images.layer_bytes(1024 * KiB)
    img = images.image([big, images.layer_bytes(64 * KiB)]).push(src_reg.http(), repo, "v1")
    big_digest = images.sha(big)
    others = sum(len(b) for d, b in img.blobs.items() if d != big_digest)
    # the first download of the big layer stops after its first chunk until released
    src = proxy(faults, src_reg, "hold_blob", digest=big_digest)
    dests = [proxy(faults, t, "pass") for t in targets]
    try:
        leader = service.submit(job_body(src, repo, dests))
        service.wait_for(leader, lambda _st: src.events["held"] == 1)
        followers = [service.submit(job_body(src, repo, dests)) for _ in range(3)]
        for f in followers:  # every other blob is in: each follower is at the big layer, behind the leader
            service.wait_for(f, lambda st: all(t["bytes_done"] >= others for t in st["targets"]))
        assert blob_gets(src, big_digest) == 1  # the followers did not read it themselves
        r = service.http.delete(f"/api/distribute/image/{leader}")
        assert r.status_code == 202, r.text

        assert service.wait(leader)["value"] == "CANCELLED"
        states = [service.wait(f) for f in followers]
    finally:
        src.release()
    assert [st["value"] for st in states] == ["FINISHED"] * len(followers), states
    for t in targets:
        assert_same_image(src_reg.http(), repo, "v1", t.http(), repo, "v1")
    assert blob_gets(src, big_digest) == 2  # the leader's cut read, then one read for every follower
    for p in dests:
        assert p.count("PUT", rf"/blobs/uploads/.*[?&]digest={big_digest}") <= 2  # the leader's (cut), one more
