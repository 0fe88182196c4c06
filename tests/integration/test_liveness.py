"""Replicas on one PostgreSQL: takeover, outages without reruns, frozen database, fair claiming,
wake-ups, keys, roles (issue 12). The database is cut and frozen through a TCP proxy."""

from __future__ import annotations

import datetime as dt
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from regcast.config import load_settings
from regcast.jobs import _db
from regcast.jobs.models import JobState
from regcast.jobs.secrets import SecretBox
from regcast.jobs.spec import DistributeRequest
from regcast.jobs.store import JobRecord, JobStore
from tests.support import images
from tests.support.pg import db_proxy, via
from tests.support.proxy import TcpProxy
from tests.support.registry import RegistryServer, free_port
from tests.support.schema import schema_diff
from tests.support.service import FAST, Process, Service

KEY = "test-secret-key-for-liveness-0123456789"
MiB = 1024 * 1024
pytestmark = pytest.mark.postgres


def make_store(url: str) -> JobStore:
    store = JobStore(load_settings(database_url=url).database_url)
    store.migrate()
    return store


def submit(store: JobStore, body: dict[str, Any], key: str = KEY) -> str:
    req = DistributeRequest.model_validate(body)
    targets = [(t.endpoint, t.image or req.source.image, t.ref or req.source.ref) for t in req.targets]
    return store.create(req.public(), SecretBox(key.encode()).seal(req.sealed_auth()), targets)


def until(what: str, check: Callable[[], Any], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for: {what}")


def record(store: JobStore, job: str) -> JobRecord:
    rec = store.get(job)
    assert rec is not None
    return rec


def moving(store: JobStore, job: str) -> bool:
    rec = store.get(job)
    return bool(rec and rec.state is JobState.RUNNING and rec.targets and rec.targets[0].bytes_done > 0)


def worker(tmp_path: Path, name: str, url: str, **env: str) -> Process:
    return Process(["worker"], tmp_path / name, {**FAST, "REGCAST_DATABASE_URL": url, "REGCAST_SECRET_KEY": KEY, **env})


def ready(proc: Process) -> bool:
    try:
        return httpx.get(f"{proc.health}/readyz", timeout=5).status_code == 200
    except httpx.TransportError:
        return False


def claims(*procs: Process) -> int:
    return sum(p.output().count("claimed by") for p in procs)


@pytest.fixture
def slow_source(src_reg: RegistryServer) -> Iterator[TcpProxy]:
    proxy = TcpProxy(src_reg.port, rate=6 * MiB).start()
    yield proxy
    proxy.stop()


@pytest.fixture
def db(pg_url: str) -> Iterator[TcpProxy]:
    proxy = db_proxy(pg_url)
    yield proxy
    proxy.stop()


def small_body(src_reg: RegistryServer, repo: str, target: RegistryServer) -> dict[str, Any]:
    source = {"endpoint": src_reg.endpoint, "image": repo, "ref": "v1"}
    return {"source": source, "targets": [{"endpoint": target.endpoint}]}


def big_job(store: JobStore, src_reg: RegistryServer, proxy: TcpProxy, repo: str, target: RegistryServer) -> str:
    images.image([os.urandom(6 * MiB) for _ in range(3)]).push(src_reg.http(), repo, "v1")
    return submit(
        store,
        {
            "source": {"endpoint": f"http://127.0.0.1:{proxy.port}/v2", "image": repo, "ref": "v1"},
            "targets": [{"endpoint": target.endpoint}],
        },
    )


def test_migrations_build_exactly_the_models(pg_url: str) -> None:
    store = make_store(pg_url)
    try:
        assert schema_diff(store.engine) == []
    finally:
        store.close()


def test_staleness_is_judged_on_the_database_clock(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    store = make_store(pg_url)
    store.register_worker("live", "host-a", 1)
    job = store.create({}, None, [])
    assert [r.id for r in store.claim("live")] == [job]
    real = _db.utcnow
    monkeypatch.setattr(_db, "utcnow", lambda: real() + dt.timedelta(hours=1))  # this host runs an hour ahead
    assert store.reap(10, 3) == []
    assert record(store, job).state is JobState.RUNNING
    store.close()


def test_sigkilled_worker_job_runs_elsewhere_within_the_staleness_bound(
    tmp_path: Path, pg_url: str, repo: str, src_reg: RegistryServer, open_reg: RegistryServer, slow_source: TcpProxy
) -> None:
    """Default timing (stale_after 10 s, heartbeat 2 s): requeued by the reaper, claimed on NOTIFY."""
    timing = {"REGCAST_STALE_AFTER": "10", "REGCAST_HEARTBEAT_INTERVAL": "2", "REGCAST_POLL_INTERVAL": "30"}
    store = make_store(pg_url)
    procs = [worker(tmp_path, n, pg_url, **timing).start() for n in ("a", "b")]
    try:
        until("workers ready", lambda: all(ready(p) for p in procs))
        job = big_job(store, src_reg, slow_source, repo, open_reg)
        until("job moving", lambda: moving(store, job))
        owner = record(store, job).worker_id or ""
        [first] = [p for p in procs if p.proc and f"-{p.proc.pid}-" in owner]
        [second] = [p for p in procs if p is not first]
        first.kill()
        killed = time.monotonic()
        until("job claimed again", lambda: record(store, job).attempts == 2, timeout=60)
        took = time.monotonic() - killed
        settings = load_settings(stale_after=10, heartbeat_interval=2)
        reaper_interval = min(settings.heartbeat_interval, settings.stale_after / 4)
        assert took <= settings.stale_after + reaper_interval + 5, took  # 5 s: claim + a loaded machine
        assert until("final", lambda: record(store, job).state in (JobState.FINISHED, JobState.FAILED))
        assert record(store, job).state is JobState.FINISHED
        assert second.output().count("claimed by") == 1
    finally:
        for p in procs:
            p.stop()
        store.close()


def test_restarted_node_resumes_its_job_without_waiting_for_staleness(
    tmp_path: Path, repo: str, src_reg: RegistryServer, open_reg: RegistryServer, slow_source: TcpProxy
) -> None:
    """SQLite, one node: a worker row of this machine whose process is gone is dead for certain."""
    images.image([os.urandom(6 * MiB) for _ in range(3)]).push(src_reg.http(), repo, "v1")
    env = {"REGCAST_STALE_AFTER": "300", "REGCAST_HEARTBEAT_INTERVAL": "1"}
    first = Service(tmp_path, env).start()
    body = {
        "source": {"endpoint": f"http://127.0.0.1:{slow_source.port}/v2", "image": repo, "ref": "v1"},
        "targets": [{"endpoint": open_reg.endpoint}],
    }
    job = first.submit(body)
    first.wait_for(job, lambda st: st["value"] == "RUNNING" and st["targets"][0]["bytes_done"] > 0)
    first.kill()
    second = Service(tmp_path, env).start()
    try:
        # far sooner than the 300 s staleness limit could explain
        st = second.wait_for(job, lambda st: st["attempts"] == 2, timeout=60)
        assert st["value"] in ("RUNNING", "FINISHED")
        assert second.wait(job)["value"] == "FINISHED"
        assert "claimed by" in second.output()
    finally:
        second.stop()


def test_outage_shorter_and_longer_than_staleness_reruns_nothing(
    tmp_path: Path,
    pg_url: str,
    db: TcpProxy,
    repo: str,
    src_reg: RegistryServer,
    open_reg: RegistryServer,
    slow_source: TcpProxy,
) -> None:
    """Two workers behind the cut database; the job finishes during the long outage."""
    store = make_store(pg_url)
    procs = [worker(tmp_path, n, via(pg_url, db)).start() for n in ("a", "b")]
    try:
        until("workers ready", lambda: all(ready(p) for p in procs))
        job = big_job(store, src_reg, slow_source, repo, open_reg)
        until("job moving", lambda: moving(store, job))
        db.set_down(True)  # short: well under stale_after (3 s)
        time.sleep(0.5)
        db.set_down(False)
        until("progress after the short outage", lambda: record(store, job).targets[0].bytes_done > 6 * MiB)
        db.set_down(True)  # long: the copy ends meanwhile, and the outage lasts past stale_after
        until("image at the target", lambda: open_reg.http().get_manifest(repo, "v1").status_code == 200)
        time.sleep(float(FAST["REGCAST_STALE_AFTER"]) + 1)
        db.set_down(False)
        until("job final", lambda: record(store, job).state is not JobState.RUNNING, timeout=90)
        rec = record(store, job)
        assert rec.state is JobState.FINISHED, rec
        assert rec.attempts == 1
        assert claims(*procs) == 1
        # stay connected past another staleness period: still nobody reruns it
        time.sleep(float(FAST["REGCAST_STALE_AFTER"]) + 1)
        assert claims(*procs) == 1
        for p in procs:
            assert "never retrieved" not in p.output()
            assert "Traceback" not in p.output()
    finally:
        for p in procs:
            p.terminate()
        store.close()


def test_frozen_database_answers_fast(
    tmp_path: Path, pg_url: str, db: TcpProxy, repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    env = {"REGCAST_DATABASE_URL": via(pg_url, db), "REGCAST_SECRET_KEY": KEY, "REGCAST_DB_TIMEOUT": "2"}
    svc = Service(tmp_path, env).start()
    try:
        db.set_frozen(True)
        quick = httpx.Client(base_url=svc.url, timeout=4)  # the budget is 1 s; 4 s absorbs a loaded machine
        r = quick.get("/readyz")
        assert r.status_code == 503
        assert r.json() == {"status": "error", "msg": "database unavailable"}
        assert quick.get("/healthz").status_code == 200
        r = httpx.get(f"{svc.url}/api/distribute/image", timeout=15)  # db_timeout 2 s, then 503
        assert r.status_code == 503
        assert r.json() == {"status": "error", "msg": "database unavailable"}
        db.set_frozen(False)
        until("ready again", lambda: svc.http.get("/readyz").status_code == 200)
        images.image().push(src_reg.http(), repo, "v1")
        job = svc.submit(small_body(src_reg, repo, open_reg))
        assert svc.wait(job)["value"] == "FINISHED"
        assert "Traceback" not in svc.output()
    finally:
        db.set_frozen(False)
        svc.stop()


def test_forty_jobs_spread_fairly_over_three_workers(
    tmp_path: Path, pg_url: str, repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    images.image().push(src_reg.http(), repo, "v1")
    store = make_store(pg_url)
    procs = [worker(tmp_path, f"w{i}", pg_url).start() for i in range(3)]
    try:
        until("workers ready", lambda: all(ready(p) for p in procs))
        ids = [
            submit(
                store,
                {
                    "source": {"endpoint": src_reg.endpoint, "image": repo, "ref": "v1"},
                    "targets": [{"endpoint": open_reg.endpoint, "image": f"{repo}/n{i}"}],
                },
            )
            for i in range(40)
        ]
        until("all done", lambda: all(record(store, i).state is JobState.FINISHED for i in ids), timeout=180)
    finally:
        for p in procs:
            p.terminate()
        store.close()
    spread = Counter({p.log.name: p.output().count("claimed by") for p in procs})
    assert sum(spread.values()) == 40
    assert max(spread.values()) <= 24, spread  # no worker above 60 %


def test_submit_wakes_a_worker_of_another_process(
    tmp_path: Path, pg_url: str, repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    """``serve --no-workers`` takes the POST; an idle ``worker`` polling every 120 s runs it at once."""
    images.image().push(src_reg.http(), repo, "v1")
    env = {"REGCAST_DATABASE_URL": pg_url, "REGCAST_SECRET_KEY": KEY, "REGCAST_POLL_INTERVAL": "120"}
    w = worker(tmp_path, "w", pg_url, REGCAST_POLL_INTERVAL="120").start()
    svc = Service(tmp_path / "api", env, args=["--no-workers"]).start()
    try:
        until("worker ready", lambda: ready(w))
        submitted = time.monotonic()
        job = svc.submit(small_body(src_reg, repo, open_reg))
        assert svc.wait(job, timeout=100)["value"] == "FINISHED"
        assert time.monotonic() - submitted < 100  # under the 120 s poll: woken by NOTIFY
        assert "claimed by" not in svc.output()  # --no-workers: this process never claims
        assert w.output().count("claimed by") == 1
    finally:
        svc.stop()
        w.terminate()


def test_postgres_without_a_secret_key_refuses_to_start(tmp_path: Path, pg_url: str) -> None:
    for args in (["worker"], ["serve", "--port", str(free_port())]):
        proc = Process(args, tmp_path / args[0], {"REGCAST_DATABASE_URL": pg_url}).start()
        assert proc.proc is not None
        assert proc.proc.wait(60) == 2
        assert "REGCAST_SECRET_KEY is required with PostgreSQL" in proc.output()
        assert not list((tmp_path / args[0]).glob("regcast.key"))


def test_worker_with_another_key_hands_jobs_back_and_is_unready(
    tmp_path: Path, pg_url: str, repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    images.image().push(src_reg.http(), repo, "v1")
    store = make_store(pg_url)
    wrong = worker(tmp_path, "wrong", pg_url, REGCAST_SECRET_KEY="some-other-key-of-more-than-32-characters").start()
    right: Process | None = None
    try:
        until("wrong-key worker ready", lambda: ready(wrong))
        jobs = [
            submit(
                store,
                {
                    "source": {"endpoint": src_reg.endpoint, "image": repo, "ref": "v1"},
                    "targets": [{"endpoint": open_reg.endpoint, "image": f"{repo}/{i}"}],
                },
            )
            for i in range(3)
        ]
        until("noticed", lambda: "cannot be decrypted" in wrong.output())
        r = httpx.get(f"{wrong.health}/readyz", timeout=5)
        assert r.status_code == 503
        assert "decrypt" in r.json()["msg"]
        assert httpx.get(f"{wrong.health}/healthz", timeout=5).status_code == 200

        # the log line comes before the hand-back's write, and the jobs claimed beside the first fail one by one;
        # a claim already under way when the first failed hands its jobs back at once
        def handed_back() -> bool:
            recs = [record(store, j) for j in jobs]
            return all(r.state is JobState.QUEUED and r.attempts == 0 for r in recs)

        until("all handed back", handed_back)
        time.sleep(0.5)  # the worker takes no more: the jobs stay queued
        for j in jobs:
            rec = record(store, j)
            assert rec.state is JobState.QUEUED, rec
            assert rec.attempts == 0
        right = worker(tmp_path, "right", pg_url).start()
        until("all finished", lambda: all(record(store, j).state is JobState.FINISHED for j in jobs), timeout=120)
        assert all(record(store, j).attempts == 1 for j in jobs)
    finally:
        wrong.terminate()
        if right:
            right.terminate()
        store.close()


def test_clean_stop_deregisters(tmp_path: Path, pg_url: str) -> None:
    store = make_store(pg_url)
    w = worker(tmp_path, "w", pg_url).start()
    until("registered", lambda: store.workers())
    [row] = store.workers()
    assert re.search(rf"-{w.proc.pid if w.proc else 0}-", row.id)
    assert w.terminate() == 0
    assert store.workers() == []
    store.close()


def test_worker_serves_its_metrics_on_the_health_port_behind_the_tokens(
    tmp_path: Path, pg_url: str, repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    images.image().push(src_reg.http(), repo, "v1")
    token = "worker-metrics-token-0123456789"
    w = worker(tmp_path, "w", pg_url, REGCAST_API_TOKENS=token).start()
    store = make_store(pg_url)
    try:
        until("worker ready", lambda: ready(w))
        job = submit(store, small_body(src_reg, repo, open_reg))
        until("job done", lambda: record(store, job).state is JobState.FINISHED, timeout=120)
        assert httpx.get(f"{w.health}/metrics", timeout=10).status_code == 401
        text = until(
            "finished job counted",
            lambda: (
                t
                if 'regcast_jobs_finished_total{outcome="finished"} 1.0'
                in (t := httpx.get(f"{w.health}/metrics", headers={"Authorization": f"Bearer {token}"}).text)
                else None
            ),
        )
        assert f'regcast_registry_requests_total{{method="PUT",registry="{open_reg.host}",status_class="2xx"}}' in text
        assert 'regcast_jobs{state="FINISHED"} 1.0' in text
        assert httpx.get(f"{w.health}/healthz", timeout=10).status_code == 200  # probes stay open
    finally:
        w.terminate()
        store.close()
