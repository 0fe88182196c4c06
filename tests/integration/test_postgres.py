"""Several workers sharing one PostgreSQL: each job done once; a killed worker's job taken over."""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from regcast.config import load_settings
from regcast.jobs.secrets import SecretBox
from regcast.jobs.spec import DistributeRequest
from regcast.jobs.store import JobStore
from tests.support import images
from tests.support.pg import db_proxy, via
from tests.support.proxy import TcpProxy
from tests.support.registry import RegistryServer, free_port
from tests.support.service import FAST, Process, Service
from tests.support.verify import assert_same_image

KEY = "test-secret-key-for-postgres-workers"
pytestmark = pytest.mark.postgres


def make_store(url: str) -> JobStore:
    store = JobStore(load_settings(database_url=url).database_url)
    store.migrate()
    return store


def submit(store: JobStore, body: dict[str, Any]) -> str:
    """What the API does on POST, without the API: the same spec, public part and sealed auth."""
    req = DistributeRequest.model_validate(body)
    targets = [(t.endpoint, t.image or req.source.image, t.ref or req.source.ref) for t in req.targets]
    return store.create(req.public(), SecretBox(KEY.encode()).seal(req.sealed_auth()), targets)


def wait_all(store: JobStore, ids: list[str], timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs = {i: store.get(i) for i in ids}
        if all(j and j.state in ("FINISHED", "FAILED", "CANCELLED") for j in jobs.values()):
            return jobs
        time.sleep(0.2)
    raise AssertionError(f"not done: {Counter(j.state for j in jobs.values() if j)}")


def workers(tmp_path: Path, url: str, n: int) -> list[Process]:
    env = {**FAST, "REGCAST_DATABASE_URL": url, "REGCAST_SECRET_KEY": KEY}
    return [Process(["worker"], tmp_path / f"w{i}", env).start() for i in range(n)]


def test_concurrent_claims_take_each_job_once(pg_url: str) -> None:
    store = make_store(pg_url)
    ids = {store.create({"source": {}, "targets": []}, None, []) for _ in range(40)}
    claimed: list[str] = []
    lock = threading.Lock()

    def claimer(name: str) -> None:
        own = make_store(pg_url)
        own.register_worker(name, "test-host", 1)
        while got := own.claim(name):
            with lock:
                claimed.extend(job.id for job in got)
        own.close()

    threads = [threading.Thread(target=claimer, args=(f"w{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == sorted(ids)
    store.close()


def test_three_workers_share_fifty_jobs(
    tmp_path: Path, pg_url: str, repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    img = images.image().push(src_reg.http(), repo, "v1")
    store = make_store(pg_url)
    procs = workers(tmp_path, pg_url, 3)
    try:
        ids = [
            submit(
                store,
                {
                    "source": {"endpoint": src_reg.endpoint, "image": repo, "ref": "v1"},
                    "targets": [{"endpoint": open_reg.endpoint, "image": f"{repo}/n{i}"}],
                },
            )
            for i in range(50)
        ]
        jobs = wait_all(store, ids)
    finally:
        for p in procs:
            p.terminate()
    assert Counter(j.state for j in jobs.values()) == {"FINISHED": 50}
    assert all(j.attempts == 1 and j.targets[0].state == "FINISHED" for j in jobs.values())
    claims: Counter[str] = Counter()
    for p in procs:
        claims[p.log.name] = p.output().count("claimed by")
    assert sum(claims.values()) == 50, claims
    assert sum(1 for c in claims.values() if c) >= 2, claims
    for i in range(50):
        got = open_reg.http().get_manifest(f"{repo}/n{i}", "v1")
        assert got.status_code == 200
        assert got.content == img.root.raw
    store.close()


def test_killed_worker_job_is_finished_by_another(
    tmp_path: Path, pg_url: str, repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    images.image([os.urandom(8 << 20) for _ in range(3)]).push(src_reg.http(), repo, "v1")
    proxy = TcpProxy(src_reg.port, rate=6 << 20).start()
    store = make_store(pg_url)
    [first] = workers(tmp_path, pg_url, 1)
    try:
        job = submit(
            store,
            {
                "source": {"endpoint": f"http://127.0.0.1:{proxy.port}/v2", "image": repo, "ref": "v1"},
                "targets": [{"endpoint": open_reg.endpoint}],
            },
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            rec = store.get(job)
            if rec and rec.state == "RUNNING" and rec.targets[0].bytes_done > 0:
                break
            time.sleep(0.05)
        else:
            raise AssertionError("job never made progress")
        first.kill()
        [second] = workers(tmp_path / "b", pg_url, 1)
        try:
            rec = wait_all(store, [job])[job]
        finally:
            second.terminate()
    finally:
        first.stop()
        proxy.stop()
    assert rec.state == "FINISHED"
    assert rec.attempts == 2
    assert_same_image(src_reg.http(), repo, "v1", open_reg.http(), repo, "v1")
    store.close()


def test_readyz_follows_the_database(
    tmp_path: Path, pg_url: str, repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    proxy = db_proxy(pg_url)
    env = {"REGCAST_DATABASE_URL": via(pg_url, proxy), "REGCAST_SECRET_KEY": KEY}
    svc = Service(tmp_path, env, port=free_port()).start()
    try:
        assert svc.http.get("/readyz").status_code == 200
        images.image().push(src_reg.http(), repo, "v1")
        job = svc.submit(
            {
                "source": {"endpoint": src_reg.endpoint, "image": repo, "ref": "v1"},
                "targets": [{"endpoint": open_reg.endpoint}],
            }
        )
        assert svc.wait(job)["value"] == "FINISHED"
        proxy.set_down(True)
        r = svc.http.get("/readyz")
        assert r.status_code == 503
        assert r.json() == {"status": "error", "msg": "database unavailable"}
        assert svc.http.get("/healthz").status_code == 200
        r = svc.http.get(f"/api/distribute/image/{job}")
        assert r.status_code == 503
        assert "database" in r.json()["msg"]
        proxy.set_down(False)
        deadline = time.monotonic() + 20
        while svc.http.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert svc.status(job)["value"] == "FINISHED"
        assert "Traceback" not in svc.output()
    finally:
        svc.stop()
        proxy.stop()


def test_a_cancel_racing_a_job_going_back_to_the_queue_is_not_lost(pg_url: str) -> None:
    """A worker's write putting a RUNNING job back in the queue (a release, a retry for later) is in flight
    when the cancel comes: the cancel read the row as RUNNING for its QUEUED step and waited on the
    RUNNING step until the write committed, then found it QUEUED and flagged nothing: copied again."""
    import psycopg

    store = make_store(pg_url)
    job = store.create({}, None, [("http://127.0.0.1:1/v2", "a/b", "v1")])
    store.register_worker("w1", "host-a", 1)
    [claimed] = store.claim("w1")
    assert claimed.id == job
    with psycopg.connect(pg_url) as conn, psycopg.connect(pg_url, autocommit=True) as watch:
        conn.execute("UPDATE jobs SET state = 'QUEUED', worker_id = NULL WHERE id = %s", (job,))  # not committed
        asked: list[Any] = []
        t = threading.Thread(target=lambda: asked.append(store.request_cancel(job)))
        t.start()
        deadline = time.monotonic() + 20
        blocked = "SELECT 1 FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))"
        while watch.execute(blocked, (conn.info.backend_pid,)).fetchone() is None:  # the cancel waits on the row
            assert time.monotonic() < deadline, "the cancel never waited on the worker's write"
            time.sleep(0.02)
        conn.commit()
    t.join(30)
    assert not t.is_alive()
    assert asked and asked[0] is not None and asked[0].state.value == "CANCELLED", asked
    ended = store.get(job)
    assert ended is not None
    assert ended.state.value == "CANCELLED"
    assert store.claim("w1") == []
