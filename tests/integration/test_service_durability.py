"""Durability: kill -9 mid-copy, SIGTERM, cancel; the database never holds a plaintext secret.

The source sits behind a throttling proxy so a copy takes seconds and can be caught mid-way
by watching its progress (no sleeps that guess timing).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from regcast.jobs.store import JobStore
from tests.support import images
from tests.support.proxy import TcpProxy
from tests.support.registries import BASIC_USERS
from tests.support.registry import RegistryServer
from tests.support.service import Service, basicauth
from tests.support.verify import assert_same_image

MiB = 1024 * 1024


@pytest.fixture
def slow_source(src_reg: RegistryServer) -> Iterator[TcpProxy]:
    proxy = TcpProxy(src_reg.port, rate=6 * MiB).start()
    yield proxy
    proxy.stop()


def big_image(src_reg: RegistryServer, repo: str) -> images.Image:
    layers = [os.urandom(8 * MiB) for _ in range(3)]
    return images.image(layers).push(src_reg.http(), repo, "v1")


def body(proxy: TcpProxy, repo: str, targets: list[dict[str, Any]]) -> dict[str, Any]:
    return {"source": {"endpoint": f"http://127.0.0.1:{proxy.port}/v2", "image": repo, "ref": "v1"}, "targets": targets}


def moving(st: dict[str, Any]) -> bool:
    return st["value"] == "RUNNING" and any(0 < t["bytes_done"] < t["bytes_total"] for t in st["targets"])


def uploads_left(reg: RegistryServer, repo: str) -> list[str]:
    """Live upload sessions that received no bytes (regcast must have cancelled every one of them).

    Distribution's cancel deletes ``startedat`` and ``data``. A session whose PUT was cut mid-body
    cannot be cancelled on distribution 2.8 (its DELETE answers BLOB_UPLOAD_INVALID: offset check,
    then a cancel on an already closed upload); the registry purges those itself, so they are not
    counted here.
    """
    d = reg.storage / "docker/registry/v2/repositories" / repo / "_uploads"
    if not d.exists():
        return []
    live = [u for u in os.listdir(d) if (d / u / "startedat").exists()]
    return [u for u in live if not (d / u / "data").exists() or (d / u / "data").stat().st_size == 0]


def test_sigkill_mid_copy_then_restart_finishes_same_job(
    tmp_path: Path,
    repo: str,
    src_reg: RegistryServer,
    open_reg: RegistryServer,
    basic_reg: RegistryServer,
    slow_source: TcpProxy,
    ca_bundle: Path,
) -> None:
    big_image(src_reg, repo)
    env = {"REGCAST_CA_BUNDLE": str(ca_bundle)}
    first = Service(tmp_path, env).start()
    job = first.submit(
        body(
            slow_source,
            repo,
            [{"endpoint": open_reg.endpoint}, {"endpoint": basic_reg.endpoint, "auth": basicauth(basic_reg)}],
        )
    )
    first.wait_for(job, moving)
    first.kill()

    password = next(iter(BASIC_USERS.values())).encode()
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("regcast.db*"))
    assert job.encode() in stored
    assert password not in stored
    key = tmp_path / "regcast.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600

    second = Service(tmp_path, env).start()
    try:
        st = second.wait(job)
        assert st["value"] == "FINISHED", st
        assert st["attempts"] == 2
        assert st["finished_endpoints"] == [open_reg.endpoint, basic_reg.endpoint]
        assert_same_image(src_reg.http(), repo, "v1", open_reg.http(), repo, "v1")
        assert_same_image(src_reg.http(), repo, "v1", basic_reg.http(), repo, "v1")
        assert password not in second.output().encode()
    finally:
        second.stop()


def test_sigterm_stops_cleanly_and_job_resumes(
    tmp_path: Path, repo: str, src_reg: RegistryServer, open_reg: RegistryServer, slow_source: TcpProxy
) -> None:
    big_image(src_reg, repo)
    first = Service(tmp_path).start()
    job = first.submit(body(slow_source, repo, [{"endpoint": open_reg.endpoint}]))
    first.wait_for(job, moving)
    assert first.terminate(timeout=30) == 0  # a graceful stop is a success (uvicorn would raise SIGTERM again)
    assert "Traceback" not in first.output()
    assert "back in the queue" in first.output()
    assert first.output().count("claimed by") == 1  # a stopping process never claims again
    record = JobStore(f"sqlite:///{tmp_path / 'regcast.db'}").get(job)
    assert record
    assert record.state == "QUEUED"
    assert record.attempts == 0
    assert record.worker_id is None
    assert [t.state for t in record.targets] == ["PENDING"]  # shown QUEUED: no target RUNNING in a queued job
    assert uploads_left(open_reg, repo) == []  # the interrupted upload session was cancelled
    second = Service(tmp_path).start()
    try:
        st = second.wait(job)
        assert st["value"] == "FINISHED"
        assert st["attempts"] == 1
        assert_same_image(src_reg.http(), repo, "v1", open_reg.http(), repo, "v1")
    finally:
        second.stop()


def test_cancel_running_and_queued_jobs(
    tmp_path: Path, repo: str, src_reg: RegistryServer, open_reg: RegistryServer, slow_source: TcpProxy
) -> None:
    big_image(src_reg, repo)
    svc = Service(tmp_path, {"REGCAST_JOBS_IN_FLIGHT": "1"}).start()
    try:
        running = svc.submit(body(slow_source, repo, [{"endpoint": open_reg.endpoint}]))
        svc.wait_for(running, moving)
        queued = svc.submit(body(slow_source, repo, [{"endpoint": open_reg.endpoint, "image": f"{repo}/2"}]))
        r = svc.http.delete(f"/api/distribute/image/{queued}")
        assert r.status_code == 200
        assert r.json()["value"] == "CANCELLED"
        r = svc.http.delete(f"/api/distribute/image/{running}")
        assert r.status_code == 202
        assert r.json()["cancel_requested"] is True
        st = svc.wait(running)
        assert st["value"] == "CANCELLED"
        assert st["finished_endpoints"] == []
        assert [t["state"] for t in st["targets"]] == ["CANCELLED"]
        assert st["in_sync"] is False  # issue 9.6
        assert open_reg.http().get_manifest(repo, "v1").status_code == 404
        assert uploads_left(open_reg, repo) == []
        assert svc.status(queued)["value"] == "CANCELLED"
        assert svc.status(queued)["attempts"] == 0
        assert [t["state"] for t in svc.status(queued)["targets"]] == ["CANCELLED"]
        assert open_reg.http().get_manifest(f"{repo}/2", "v1").status_code == 404
    finally:
        svc.stop()


def test_a_hung_target_holds_neither_a_cancel_nor_a_sigterm(
    tmp_path: Path, repo: str, src_reg: RegistryServer, open_reg: RegistryServer, slow_source: TcpProxy
) -> None:
    """A target that stops answering mid-upload: the upload sessions' DELETEs are best effort, bounded
    (the job waited for them through the request timeout and its retries: a cancel over a minute, a
    SIGTERM the whole shutdown grace, then the process cut it off)."""
    big_image(src_reg, repo)
    target = TcpProxy(open_reg.port).start()
    # long enough that waiting for the DELETEs could not pass for bounded: a minute and more
    svc = Service(tmp_path, {"REGCAST_REQUEST_TIMEOUT": "120", "REGCAST_SHUTDOWN_GRACE": "60"}).start()
    try:
        hung = [{"endpoint": f"http://127.0.0.1:{target.port}/v2"}]
        cancelled = svc.submit(body(slow_source, repo, hung))
        svc.wait_for(cancelled, moving)
        target.set_frozen(True)
        assert svc.http.delete(f"/api/distribute/image/{cancelled}").status_code == 202
        try:
            st = svc.wait(cancelled, timeout=30)
        except AssertionError as exc:
            raise AssertionError(svc.output()) from exc
        assert st["value"] == "CANCELLED"
        assert [t["state"] for t in st["targets"]] == ["CANCELLED"]
        target.set_frozen(False)
        stopped = svc.submit(body(slow_source, repo, [{**hung[0], "image": f"{repo}/2"}]))
        svc.wait_for(stopped, moving)
        target.set_frozen(True)
        assert svc.terminate(timeout=30) == 0, svc.output()
        assert f"job {stopped}: interrupted by shutdown; back in the queue" in svc.output()
        assert "Traceback" not in svc.output()
    finally:
        svc.stop()
        target.stop()


@pytest.mark.parametrize("signed", [False, True], ids=["plain", "with-a-referrer"])
def test_a_tag_pushed_just_before_a_crash_is_finished_not_skipped(
    signed: bool, tmp_path: Path, repo: str, src_reg: RegistryServer, open_reg: RegistryServer, slow_source: TcpProxy
) -> None:
    """The process dies after a target's tag PUT landed but before that was written (a narrow window,
    as any process can die in it). The next attempt finds the tag at the source digest with overwrite
    off: that is this job's own push (its tag check passed for a push, stored with its progress), so the
    target is FINISHED (finished_endpoints), not SKIPPED as 'left alone because the tag existed'
    (skipped_clusters); with a referrer still to bring too (the image held, its signature not yet)."""
    img = big_image(src_reg, repo)
    if signed:
        images.attach(src_reg.http(), repo, img.digest, [images.referrer(img)])
    first = Service(tmp_path).start()
    job = first.submit(body(slow_source, repo, [{"endpoint": open_reg.endpoint}]))
    first.wait_for(job, moving)
    first.kill()
    img.push(open_reg.http(), repo, "v1")  # what the dead attempt sent before it died
    second = Service(tmp_path).start()
    try:
        st = second.wait(job)
        assert st["value"] == "FINISHED", st
        shown = [(t["state"], t["reason"]) for t in st["targets"]]
        assert shown == [("FINISHED", None)], first.output() + second.output()
        assert st["finished_endpoints"] == [open_reg.endpoint]
        assert st["skipped_clusters"] == []
        assert st["in_sync"] is True
    finally:
        second.stop()
