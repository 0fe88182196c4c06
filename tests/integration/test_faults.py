"""Named faults between regcast and real registries; each ends in a byte-identical copy or a clear FAILED.

The fault proxy counts every fault it injects; the tests assert those counts and regcast's own
retry counts. No assertion here depends on how long anything took.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import pytest

from regcast.registry.client import ClientOptions, RegistryClient
from regcast.registry.reference import parse_endpoint
from regcast.transfer.engine import Target
from regcast.transfer.progress import TargetState, TargetStatus
from regcast.transfer.referrers import ReferrerOptions
from regcast.transfer.remote import RegistryRepository
from tests.support import images
from tests.support.clients import FAST_RETRY, client_for, target
from tests.support.faults import FaultProxy, copy, proxy, via
from tests.support.proxy import TcpProxy
from tests.support.registries import Registries
from tests.support.registry import RegistryServer
from tests.support.verify import assert_same_image

MiB = 1024 * 1024


def two_layers() -> images.Image:
    return images.image([os.urandom(3 * MiB), os.urandom(2 * MiB + 7)])


def test_connection_reset_mid_blob_resumes_with_range(
    faults: list[FaultProxy], repo: str, src_reg: RegistryServer, open_reg: RegistryServer, token_reg: RegistryServer
) -> None:
    img = two_layers().push(src_reg.http(), repo, "v1")
    p = proxy(faults, src_reg, "reset_blob")
    result = copy(via(p), repo, [target(open_reg, repo, "v1"), target(token_reg, repo, "v1")])
    assert result.ok, [t.error for t in result.targets]
    assert p.events["reset"] == len(img.blobs)
    assert p.events["range"] == len(img.blobs)
    for t in result.targets:  # the targets' uploads went on: no blob was sent twice
        assert t.retries == 0
        assert t.blobs_uploaded == len(img.blobs)
        assert t.bytes_uploaded == sum(len(b) for b in img.blobs.values())
    for reg in (open_reg, token_reg):
        assert_same_image(src_reg.http(), repo, "v1", reg.http(), repo, "v1")


@pytest.mark.parametrize("side", ["source", "target"])
def test_bursts_of_5xx_are_retried(
    side: str, faults: list[FaultProxy], repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    two_layers().push(src_reg.http(), repo, "v1")
    burst = FAST_RETRY.attempts - 1  # 500 then 502: each request gets through on its last try
    if side == "source":
        p = proxy(faults, src_reg, "burst_5xx", count=burst)
        result = copy(via(p), repo, [target(open_reg, repo, "v1")])
    else:
        p = proxy(faults, open_reg, "burst_5xx", count=burst)
        result = copy(client_for(src_reg), repo, [Target("t", RegistryRepository(via(p), repo), "v1")])
        assert result.targets[0].retries == burst
    assert result.ok, result.targets[0].error
    assert p.events["5xx"] == burst
    assert_same_image(src_reg.http(), repo, "v1", open_reg.http(), repo, "v1")


def test_429_waits_as_told(
    faults: list[FaultProxy],
    repo: str,
    src_reg: RegistryServer,
    open_reg: RegistryServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    images.image().push(src_reg.http(), repo, "v1")
    p = proxy(faults, src_reg, "throttle_429")
    with caplog.at_level(logging.WARNING, logger="regcast"):
        result = copy(via(p), repo, [target(open_reg, repo, "v1")])
    assert result.ok
    assert p.events["429"] >= 1
    waits = [r.getMessage() for r in caplog.records if "answered 429" in r.getMessage()]
    assert len(waits) == p.events["429"]
    assert all(w.endswith("in 1.0s") for w in waits)  # Retry-After: 1
    assert_same_image(src_reg.http(), repo, "v1", open_reg.http(), repo, "v1")


def test_blob_redirect_to_storage_gets_no_authorization(
    faults: list[FaultProxy],
    repo: str,
    token_reg: RegistryServer,
    open_reg: RegistryServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    img = two_layers().push(token_reg.http(), repo, "v1")
    ts = token_reg.token_server
    assert ts

    def storage_headers(name: str) -> dict[str, str]:
        return {"Authorization": "Bearer " + ts.issue("bob", [f"repository:{name}:pull"])}

    p = proxy(faults, token_reg, "redirect_blob", side_headers=storage_headers)
    with caplog.at_level(logging.DEBUG, logger="regcast"):
        result = copy(via(p, token_reg), repo, [target(open_reg, repo, "v1")])
    assert result.ok, result.targets[0].error
    assert p.events["redirect"] == len(img.blobs) == p.events["side_served"]
    assert p.side_auth_headers == 0  # Authorization never went to the other host
    assert "s3cr3t-storage-token" not in caplog.text  # token-bearing query parameters redacted
    assert_same_image(token_reg.http(), repo, "v1", open_reg.http(), repo, "v1")


def test_a_blob_redirect_loop_ends_in_one_line_saying_so(
    faults: list[FaultProxy], repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    """A blob GET that redirects to itself is followed MAX_REDIRECTS times, then the target fails with a line
    that says it was a loop (it said "answered 302 Found", which reads as the registry's fault to find)."""
    img = images.image([b"loop " * 100]).push(src_reg.http(), repo, "v1")
    p = proxy(faults, src_reg, "redirect_loop")
    result = copy(via(p), repo, [target(open_reg, repo, "v1")])
    t = result.targets[0]
    assert t.state is TargetState.FAILED
    url = re.escape(f"http://127.0.0.1:{p.port}/v2/{repo}/blobs/") + "sha256:[0-9a-f]{64}"
    said = re.escape(": redirected more than 5 times (a redirect loop)")
    assert re.fullmatch(f"registry 127\\.0\\.0\\.1:{p.port}: GET {url}{said}", t.error or ""), t.error
    # each blob's GET and its five hops, once: a loop is not retried (it would be the same loop again)
    assert p.events["loop"] in {6 * n for n in range(1, len(img.blobs) + 1)}


def test_relative_upload_location(
    faults: list[FaultProxy], repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    img = two_layers().push(src_reg.http(), repo, "v1")
    p = proxy(faults, open_reg, "relative_location")
    result = copy(client_for(src_reg), repo, [Target("t", RegistryRepository(via(p), repo), "v1")])
    assert result.ok, result.targets[0].error
    assert p.events["relative"] >= len(img.blobs)  # every upload session was handed out relative
    assert_same_image(src_reg.http(), repo, "v1", open_reg.http(), repo, "v1")


def test_token_expiring_during_a_slow_copy(registries: Registries, repo: str, src_reg: RegistryServer) -> None:
    short = registries.token("short-tokens", expires_in=2)
    assert short.token_server
    img = images.image([os.urandom(2 * MiB) for _ in range(4)]).push(src_reg.http(), repo, "v1")
    slow = TcpProxy(src_reg.port, rate=2 * MiB).start()  # about 4 s of copying: tokens expire meanwhile
    try:
        source = RegistryClient(
            parse_endpoint(f"http://127.0.0.1:{slow.port}/v2"), options=ClientOptions(retry=FAST_RETRY)
        )
        result = copy(source, repo, [target(short, repo, "v1")], listener=None)
    finally:
        slow.stop()
    assert result.ok, result.targets[0].error
    pushes = [r for r in short.token_server.requests if any("push" in s for s in r["scopes"])]  # type: ignore[attr-defined]
    assert len(pushes) >= 2  # renewed mid-copy, without restarting finished blobs
    assert result.targets[0].blobs_uploaded == len(img.blobs)
    assert_same_image(src_reg.http(), repo, "v1", short.http(), repo, "v1")


def test_corrupted_byte_is_never_committed_then_clean_retry(
    faults: list[FaultProxy], repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    img = two_layers().push(src_reg.http(), repo, "v1")
    p = proxy(faults, src_reg, "corrupt_once")
    result = copy(via(p), repo, [target(open_reg, repo, "v1")])
    t = result.targets[0]
    assert result.ok, t.error
    assert p.events["corrupted"] == len(img.blobs)
    assert t.retries == len(img.blobs)
    assert_same_image(src_reg.http(), repo, "v1", open_reg.http(), repo, "v1")


def test_corrupted_every_time_fails_clearly(
    faults: list[FaultProxy], repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    img = images.image([os.urandom(MiB)]).push(src_reg.http(), repo, "v1")
    p = proxy(faults, src_reg, "corrupt_always")
    result = copy(via(p), repo, [target(open_reg, repo, "v1")])
    t = result.targets[0]
    assert t.state is TargetState.FAILED
    assert "source registry" in (t.error or "")
    assert "not committed" in (t.error or "")
    # read again in full once; a second mismatch cannot pass on retry, so the target fails at once (issue 10)
    assert 2 <= p.events["corrupted"] <= 2 * len(img.blobs)
    for digest in img.blobs:
        assert open_reg.http().head_blob(repo, digest) == 404 or digest == images.sha(img.root.raw)
    assert open_reg.http().get_manifest(repo, "v1").status_code == 404


@pytest.mark.parametrize("strategy", ["auto", "chunked"])
def test_registry_refusing_bodies_over_4mib(
    strategy: str, faults: list[FaultProxy], repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    images.image([os.urandom(10 * MiB + 3), os.urandom(100)]).push(src_reg.http(), repo, "v1")
    p = proxy(faults, open_reg, "ghcr")
    client = via(p, upload_strategy=strategy)
    result = copy(client_for(src_reg), repo, [Target("t", RegistryRepository(client, repo), "v1")])
    assert result.ok, result.targets[0].error
    if strategy == "auto":
        assert p.events["put_refused"] == 1
        assert p.events["patch_refused"] == 0
    else:
        assert p.events["patch_refused"] == 1
        assert p.events["put_refused"] == 0
    patches = [h for m, _, h in p.seen if m == "PATCH"]
    assert patches
    assert all(int(h["Content-Length"]) <= 4 * MiB for h in patches[-3:])
    assert_same_image(src_reg.http(), repo, "v1", open_reg.http(), repo, "v1")


def test_target_dying_mid_job_fails_alone(
    repo: str, src_reg: RegistryServer, open_reg: RegistryServer, token_reg: RegistryServer
) -> None:
    images.image([os.urandom(4 * MiB) for _ in range(3)]).push(src_reg.http(), repo, "v1")
    doomed = TcpProxy(token_reg.port, upload_rate=3 * MiB).start()  # 12 MiB take 4 s: it dies mid-upload
    dying = RegistryServer("dying", Path("/nonexistent"), port=doomed.port, users=token_reg.users)

    class KillWhenMoving:
        def changed(self, status: TargetStatus) -> None:
            if status.key == "dying" and status.bytes_done > 0 and not doomed.down:
                doomed.set_down(True)

    try:
        result = copy(
            client_for(src_reg),
            repo,
            [Target("dying", RegistryRepository(client_for(dying), repo), "v1"), target(open_reg, repo, "v1")],
            listener=KillWhenMoving(),
        )
    finally:
        doomed.stop()
    dead, alive = result.targets
    assert dead.state is TargetState.FAILED
    assert f"127.0.0.1:{doomed.port}" in (dead.error or "")
    assert alive.state is TargetState.FINISHED
    assert_same_image(src_reg.http(), repo, "v1", open_reg.http(), repo, "v1")


def test_a_target_that_dies_mid_upload_and_comes_back_ends_the_job_finished(
    tmp_path: Path, repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    """The job's first attempt loses its target mid-upload; the job goes back to the queue, and a later claim
    (the registry back by then) copies every blob exactly: FINISHED, in sync, more than one attempt."""
    from tests.support.service import Service

    img = images.image([os.urandom(4 * MiB) for _ in range(3)]).push(src_reg.http(), repo, "v1")
    link = TcpProxy(open_reg.port, upload_rate=3 * MiB).start()  # 12 MiB take 4 s: it dies mid-upload
    svc = Service(tmp_path, {"REGCAST_MAX_ATTEMPTS": "5", "REGCAST_RETRY_BACKOFF": "1"}).start()
    try:
        job = svc.submit(
            {
                "source": {"endpoint": src_reg.endpoint, "image": repo, "ref": "v1"},
                "targets": [{"endpoint": f"http://127.0.0.1:{link.port}/v2"}],
            }
        )
        svc.wait_for(job, lambda st: st["targets"][0]["bytes_done"] > 0)
        link.set_down(True)
        svc.wait_for(job, lambda st: st["attempts"] >= 2 or st["value"] == "FAILED")  # the first attempt lost it
        link.set_down(False)
        st = svc.wait(job)
    finally:
        svc.stop()
        link.stop()
    assert st["value"] == "FINISHED", st
    assert st["in_sync"] is True and st["source_digest"] == img.digest
    assert st["attempts"] >= 2 and st["targets"][0]["error"] is None
    assert_same_image(src_reg.http(), repo, "v1", open_reg.http(), repo, "v1")


def test_service_status_shows_retries(
    faults: list[FaultProxy], tmp_path: Path, repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    from tests.support.service import Service

    images.image().push(src_reg.http(), repo, "v1")
    p = proxy(faults, open_reg, "burst_5xx", count=2)
    svc = Service(tmp_path).start()
    try:
        job = svc.submit(
            {
                "source": {"endpoint": src_reg.endpoint, "image": repo, "ref": "v1"},
                "targets": [{"endpoint": p.endpoint, "image": repo}],
            }
        )
        st = svc.wait(job)
        log = svc.output()
    finally:
        svc.stop()
    assert st["value"] == "FINISHED"
    assert st["targets"][0]["retries"] == 2 == p.events["5xx"]
    assert log.count("answered 50") == 2  # each retry is in the log too
    assert_same_image(src_reg.http(), repo, "v1", open_reg.http(), repo, "v1")


def test_403_for_a_missing_blob_means_upload_it(
    faults: list[FaultProxy], repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    """Artifactory answers 403 where others answer 404 for a missing blob."""
    img = two_layers().push(src_reg.http(), repo, "v1")
    images.image().push(open_reg.http(), repo, "other")  # a repository with tags: every blob is HEADed
    p = proxy(faults, open_reg, "artifactory")
    result = copy(client_for(src_reg), repo, [Target("t", RegistryRepository(via(p), repo), "v1")])
    assert result.ok, result.targets[0].error
    assert p.events["403_for_missing"] == len(img.blobs) == result.targets[0].blobs_uploaded
    assert_same_image(src_reg.http(), repo, "v1", open_reg.http(), repo, "v1")


def test_reset_when_the_registry_ignores_range(
    faults: list[FaultProxy], repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    """No Range support: the download restarts and the bytes already passed on are skipped."""
    img = two_layers().push(src_reg.http(), repo, "v1")
    p = proxy(faults, src_reg, "reset_blob_no_range")
    result = copy(via(p), repo, [target(open_reg, repo, "v1")])
    t = result.targets[0]
    assert result.ok, t.error
    assert p.events["reset"] == p.events["range_ignored"] == len(img.blobs)
    assert t.retries == 0
    assert t.bytes_uploaded == sum(len(b) for b in img.blobs.values())
    assert_same_image(src_reg.http(), repo, "v1", open_reg.http(), repo, "v1")


def test_chunk_min_length_is_honoured(
    faults: list[FaultProxy], repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    img = images.image([os.urandom(7 * MiB + 5)]).push(src_reg.http(), repo, "v1")
    p = proxy(faults, open_reg, "chunk_min", min=3 * MiB)
    client = via(p, upload_strategy="chunked", chunk_cap=MiB)  # the registry's minimum beats our cap
    result = copy(client_for(src_reg), repo, [Target("t", RegistryRepository(client, repo), "v1")])
    assert result.ok, result.targets[0].error
    sizes = [int(h["Content-Length"]) for m, _, h in p.seen if m == "PATCH"]
    config = min(len(b) for b in img.blobs.values())  # the small config blob goes in one PATCH
    assert sorted(sizes) == sorted([config, 3 * MiB, 3 * MiB, MiB + 5])
    assert_same_image(src_reg.http(), repo, "v1", open_reg.http(), repo, "v1")


def test_rate_limit_running_low_is_logged(
    faults: list[FaultProxy],
    repo: str,
    src_reg: RegistryServer,
    open_reg: RegistryServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    images.image().push(src_reg.http(), repo, "v1")
    p = proxy(faults, src_reg, "hub_limits")
    with caplog.at_level(logging.WARNING, logger="regcast"):
        result = copy(via(p), repo, [target(open_reg, repo, "v1")])
    assert result.ok
    assert [r.getMessage() for r in caplog.records if "rate limit" in r.getMessage()] == [
        f"registry 127.0.0.1:{p.port}: rate limit nearly used up (3 of 100 left)"
    ]


def test_garbage_manifest_is_a_clear_error_naming_the_registry(
    faults: list[FaultProxy], repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    from regcast._exceptions import UnsupportedManifest

    images.image().push(src_reg.http(), repo, "v1")
    p = proxy(faults, src_reg, "garbage_manifest")
    with pytest.raises(UnsupportedManifest) as err:
        copy(via(p), repo, [target(open_reg, repo, "v1")])
    assert str(err.value).startswith(f"registry 127.0.0.1:{p.port}: manifest {repo}:v1: manifest is not JSON")
    assert "\n" not in str(err.value)
    assert open_reg.http().get_manifest(repo, "v1").status_code == 404


@pytest.mark.parametrize("bare_404", [False, True])
def test_a_lagging_tag_listing_never_lets_overwrite_off_clobber_a_tag(
    bare_404: bool, faults: list[FaultProxy], repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    """The target's listing says "no tags" (empty, or a bare 404) while the tag is there with another
    image: with overwrite off the tag is HEADed all the same and the target is skipped, untouched."""
    images.image().push(src_reg.http(), repo, "v1")
    theirs = images.image().push(open_reg.http(), repo, "v1")
    p = proxy(faults, open_reg, "lagging_tags", bare_404=bare_404)
    dest = Target("t", RegistryRepository(via(p), repo), "v1", overwrite=False)
    result = copy(client_for(src_reg), repo, [dest], referrers=ReferrerOptions())  # as the CLI and service do
    assert p.events["lagging_tags"] >= 1  # the listing was asked, and lied
    (t,) = result.targets
    assert t.state is TargetState.SKIPPED, (t.state, t.error)
    assert t.reason == "tag-differs"
    assert open_reg.http().get_manifest(repo, "v1").content == theirs.root.raw  # not overwritten
