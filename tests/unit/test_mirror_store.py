"""The mirror store behind the service database's boundary (``jobs/_db.py``), on SQLite and PostgreSQL:
an outage during any mirror operation leaves as ``JobStoreUnavailable`` (never a SQLAlchemy error),
the store works again once the database is back, a taken run key is the store's answer (no error),
and records carry enums. Callers (scheduler, planner, routes) rely on the translated errors."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from regcast._exceptions import JobError, JobStoreUnavailable
from regcast.api.app import create_app
from regcast.api.service import Service
from regcast.config import load_settings
from regcast.jobs.models import JobState
from regcast.jobs.records import Claim
from regcast.jobs.secrets import SecretBox
from regcast.jobs.store import JobStore
from regcast.mirrors.document import load_document
from regcast.mirrors.models import RunState, Trigger, mirror_runs
from regcast.mirrors.records import StoredMirror
from regcast.mirrors.service import MirrorService, split_document
from regcast.mirrors.store import MirrorStore
from regcast.triggers.dispatch import PushTriggers
from tests.support.pg import db_proxy, via

DOC = """\
version: 1
mirrors:
  - name: app
    source: 127.0.0.1:1/team/app
    targets: [127.0.0.1:2/mirror]
    tags: {list: [v1]}
    interval: 60s
"""
BOX = SecretBox(b"k" * 32)


@dataclass
class Db:
    """A service database that can be taken away and given back."""

    ms: MirrorService
    down: Callable[[], None]
    up: Callable[[], None]

    @property
    def store(self) -> MirrorStore:
        return self.ms.store


def _service(url: str, timeout: float) -> MirrorService:
    settings = load_settings(database_url=url, request_retries=1, db_timeout=timeout, poll_interval=0.1)
    jobs = JobStore(settings.database_url, timeout=timeout)
    jobs.migrate()
    ms = MirrorService(settings, jobs, BOX, owner="test")
    ms.store.put(split_document(load_document(DOC, {}), BOX))
    return ms


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Db]:
    if request.param == "sqlite":
        # the volume holding the file goes away: every new connection fails to open it
        home, gone = tmp_path / "db", tmp_path / "gone"
        home.mkdir()
        ms = _service(f"sqlite:///{home / 'db.sqlite'}", 5.0)

        def down() -> None:
            ms.jobs.engine.dispose()
            home.rename(gone)

        def up() -> None:
            gone.rename(home)

        yield Db(ms, down, up)
        ms.jobs.close()
        return
    pg_url = request.getfixturevalue("pg_url")
    proxy = db_proxy(pg_url)
    ms = _service(via(pg_url, proxy), 2.0)
    try:
        yield Db(ms, lambda: proxy.set_down(True), lambda: proxy.set_down(False))
    finally:
        proxy.set_down(False)
        ms.jobs.close()
        proxy.stop()


ITEMS = split_document(load_document(DOC, {}), BOX)
OPERATIONS: dict[str, Callable[[MirrorStore], Any]] = {
    "put": lambda s: s.put(ITEMS),
    "get": lambda s: s.get("app"),
    "all": lambda s: s.all(),
    "delete": lambda s: s.delete("other"),
    "start_run": lambda s: s.start_run("app", Trigger.MANUAL, "test"),
    "start_push_run": lambda s: s.start_push_run("app", "v1@sha256:0", "test", None),
    "link_job": lambda s: s.link_job("run", "job", "v1"),
    "planned": lambda s: s.planned("run", selected=0, up_to_date=0, skipped=0, failed=0, error=None),
    "settle": lambda s: s.settle(),
    "get_run": lambda s: s.get_run("run"),
    "runs": lambda s: s.runs("app"),
    "last_due": lambda s: s.last_due("app"),
    "run_of_job": lambda s: s.run_of_job("job"),
    "ended_runs": lambda s: s.ended_runs(),
}


def test_an_outage_during_every_mirror_operation_is_job_store_unavailable(db: Db) -> None:
    db.down()
    for name, op in OPERATIONS.items():
        with pytest.raises(JobStoreUnavailable, match=r"^database unavailable \(\w+\)$") as caught:
            op(db.store)
        assert isinstance(caught.value, JobError), name
    db.up()
    rec = db.store.get("app")  # the same store works again, nothing lost
    assert rec is not None
    assert rec.schedule is None
    assert rec.interval_seconds == 60.0


def test_a_taken_run_key_is_an_answer_not_an_error(db: Db) -> None:
    rec = db.store.get("app")
    assert rec is not None
    due = rec.created_at + dt.timedelta(seconds=60)
    first, _ = db.store.start_run("app", Trigger.SCHEDULE, "replica-a", due)
    assert first is not None
    assert db.store.start_run("app", Trigger.SCHEDULE, "replica-b", due) == (None, None)  # the unique key
    push = db.store.start_push_run("app", "v1@sha256:ab", "replica-a", None)
    assert push is not None
    assert db.store.start_push_run("app", "v1@sha256:ab", "replica-b", None) is None  # the same delivery again
    job = db.ms.jobs.create({"source": {}, "targets": []}, None, [])
    db.store.link_job(first, job, "v1")
    db.store.planned(first, selected=1, up_to_date=0, skipped=0, failed=0, error=None)
    run = db.store.get_run(first)
    assert run is not None
    assert (run.trigger, run.state, run.jobs) == (Trigger.SCHEDULE, RunState.RUNNING, {job: JobState.QUEUED})
    assert db.store.run_of_job(job) == first
    assert run.public()["state"] == "RUNNING"
    assert run.public()["in_progress"] == 1


def test_the_scheduler_logs_an_outage_and_goes_on(db: Db, caplog: pytest.LogCaptureFixture) -> None:
    db.down()

    async def go() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(db.ms.run_scheduler(stop))
        for _ in range(600):  # a bound, not a timing assumption: the first tick fails well before
            if "mirror scheduler: database unavailable (JobStoreUnavailable)" in caplog.text:
                break
            await asyncio.sleep(0.1)
        stop.set()
        await task

    with caplog.at_level(logging.WARNING, logger="regcast.mirrors"):
        asyncio.run(go())
    assert "mirror scheduler: database unavailable (JobStoreUnavailable)" in caplog.text
    assert "tick failed" not in caplog.text


def test_a_planner_that_loses_the_database_leaves_the_run_to_settle(db: Db, caplog: pytest.LogCaptureFixture) -> None:
    run_id, _ = db.store.start_run("app", Trigger.MANUAL, "test")
    assert run_id is not None
    db.down()
    with caplog.at_level(logging.WARNING, logger="regcast.mirrors"):
        asyncio.run(db.ms.plan_run("app", run_id))  # raises nothing out of the background task
    assert f"mirror run {run_id}: plan not recorded, database unavailable (database unavailable" in caplog.text
    db.up()
    run = db.store.get_run(run_id)
    assert run is not None
    assert run.state is RunState.PLANNING  # settle fails it after PLANNING_TIMEOUT and frees the lease


def test_a_planner_finishing_after_its_run_was_failed_leaves_it_ended(db: Db) -> None:
    run_id, _ = db.store.start_run("app", Trigger.MANUAL, "test")
    assert run_id is not None
    with db.store.db.tx() as conn:  # as settle does when PLANNING_TIMEOUT passed
        conn.execute(update(mirror_runs).where(mirror_runs.c.id == run_id).values(state=RunState.FAILED.value))
    db.store.planned(run_id, selected=1, up_to_date=0, skipped=0, failed=0, error=None)  # the late planner
    run = db.store.get_run(run_id)
    assert run is not None
    assert run.state is RunState.FAILED


def test_the_push_lag_watcher_outlives_an_outage_and_still_reports(
    db: Db, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    pushed_at = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
    run_id = db.store.start_push_run("app", "v1@sha256:cd", "test", pushed_at)
    assert run_id is not None
    lags: list[float] = []
    triggers = PushTriggers(db.ms, observe_lag=lags.append)

    async def plan_run(name: str, run: str, only: list[str] | None = None) -> None:
        db.down()  # planned, then the database goes away before the watcher's first poll

    monkeypatch.setattr(db.ms, "plan_run", plan_run)

    async def go() -> None:
        watcher = asyncio.create_task(triggers._run("app", run_id, "v1"))
        for _ in range(600):  # a bound, not a timing assumption: the first poll fails well before
            if "lag watch waiting for the database" in caplog.text or watcher.done():
                break
            await asyncio.sleep(0.1)
        db.up()
        await asyncio.to_thread(db.store.planned, run_id, selected=0, up_to_date=0, skipped=0, failed=0, error=None)
        await asyncio.wait_for(watcher, 120)  # raises here when the outage ended the watcher

    with caplog.at_level(logging.WARNING, logger="regcast.events"):
        asyncio.run(go())
    run = db.store.get_run(run_id)
    assert run is not None and run.lag_seconds is not None
    assert lags == [run.lag_seconds]
    assert triggers.last_lag == run.lag_seconds
    warned = [r for r in caplog.records if r.name == "regcast.events"]
    assert [r.getMessage() for r in warned] == [
        f"events: run {run_id}: lag watch waiting for the database (database unavailable (OperationalError))"
    ]
    assert warned[0].exc_info is None  # one line, no traceback


def test_a_run_the_push_lag_watcher_settles_is_still_notified(db: Db, monkeypatch: pytest.MonkeyPatch) -> None:
    ended: list[str] = []
    db.ms.on_run_ended = lambda run, _doc: ended.append(run.id)  # the notifier's hook (ops/notify.py)
    run_id = db.store.start_push_run("app", "v1@sha256:ef", "test", dt.datetime.now(dt.UTC))
    assert run_id is not None
    job = db.ms.jobs.create({"source": {}, "targets": []}, None, [])
    db.store.link_job(run_id, job, "v1")
    db.store.planned(run_id, selected=1, up_to_date=0, skipped=0, failed=0, error=None)  # RUNNING: a job queued
    db.ms.jobs.register_worker("w", "host", 1)
    (record,) = db.ms.jobs.claim("w", 1)
    assert db.ms.jobs.finish(Claim(job, "w", record.claim_generation), JobState.FINISHED)
    lags: list[float] = []
    triggers = PushTriggers(db.ms, observe_lag=lags.append)

    async def plan_run(name: str, run: str, only: list[str] | None = None) -> None:
        return None  # planned above

    monkeypatch.setattr(db.ms, "plan_run", plan_run)
    asyncio.run(asyncio.wait_for(triggers._run("app", run_id, "v1"), 120))  # no scheduler: the watcher settles
    assert ended == [run_id]
    assert len(lags) == 1


def test_mirror_routes_answer_503_while_the_database_is_down(tmp_path: Path) -> None:
    home, gone = tmp_path / "db", tmp_path / "gone"
    home.mkdir()
    settings = load_settings(database_url=f"sqlite:///{home / 'jobs.db'}", poll_interval=0.1)
    service = Service(settings, JobStore(settings.database_url), BOX, run_workers=False)
    with TestClient(create_app(service), base_url="http://127.0.0.1:5001") as client:
        deadline = time.monotonic() + 30  # migrations on a loaded machine: 200 quick polls were not always enough
        while client.get("/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.get("/api/mirrors").json() == {"mirrors": []}
        service.store.engine.dispose()
        home.rename(gone)
        for method, path in [
            ("GET", "/api/mirrors"),
            ("GET", "/api/mirrors/app"),
            ("DELETE", "/api/mirrors/app"),
            ("POST", "/api/mirrors/app/run"),
            ("GET", "/api/mirrors/app/runs"),
        ]:
            r = client.request(method, path)
            assert (r.status_code, r.json()) == (503, {"status": "error", "msg": "database unavailable"}), path
        gone.rename(home)
        assert client.get("/api/mirrors").status_code == 200


def test_two_concurrent_settles_end_a_run_once_and_notify_once(db: Db, monkeypatch: pytest.MonkeyPatch) -> None:
    """Settle runs after every plan, on every push-lag poll and on every process's tick: two of them
    read the same finished run before either writes. One ends it and notifies; the other finds it
    ended (it used to end it again: a second signed webhook, ``finished_at`` rewritten)."""
    settings = db.ms.settings
    other = MirrorService(settings, JobStore(settings.database_url, timeout=settings.db_timeout), BOX, owner="other")
    notified: list[tuple[str, str]] = []
    for ms in (db.ms, other):
        ms.on_run_ended = lambda run, _doc, who=ms.owner: notified.append((who, run.id))
    run_id, _ = db.store.start_run("app", Trigger.MANUAL, "test")
    assert run_id is not None
    job = db.ms.jobs.create({"source": {}, "targets": []}, None, [])
    db.store.link_job(run_id, job, "v1")
    db.store.planned(run_id, selected=1, up_to_date=0, skipped=0, failed=0, error=None)
    db.ms.jobs.register_worker("w", "host", 1)
    (record,) = db.ms.jobs.claim("w", 1)
    assert db.ms.jobs.finish(Claim(job, "w", record.claim_generation), JobState.FINISHED)

    both_read = threading.Barrier(2, timeout=60)  # a bound on a broken run, not a timing assumption
    for store in (db.store, other.store):
        read, waited = store._job_states, list[int]()

        def job_states(conn: Any, run: str, read: Callable[[Any, str], Any] = read, waited: list[int] = waited) -> Any:
            states = read(conn, run)
            if threading.current_thread().name.startswith("settle-") and not waited:
                waited.append(1)
                with contextlib.suppress(threading.BrokenBarrierError):
                    both_read.wait()  # each settle has read the run RUNNING and its job FINISHED
            return states

        monkeypatch.setattr(store, "_job_states", job_states)

    ended: dict[str, list[str]] = {}

    def settle(ms: MirrorService) -> None:
        ended[ms.owner] = asyncio.run(ms.settle())

    threads = [threading.Thread(target=settle, args=(ms,), name=f"settle-{ms.owner}") for ms in (db.ms, other)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        other.jobs.close()
    assert not both_read.broken
    assert sorted(ended) == ["other", "test"]
    assert sorted(ended["test"] + ended["other"]) == [run_id]
    assert [r for _who, r in notified] == [run_id]
    run = db.store.get_run(run_id)
    assert run is not None
    assert run.state is RunState.FINISHED
    assert asyncio.run(db.ms.settle()) == []
    assert len(notified) == 1


def test_a_tag_pushed_back_to_a_digest_it_held_is_a_new_push_but_a_repeat_is_not(db: Db) -> None:
    """One run per push of a tag however often delivered; a rollback (v1: a, then b, then a again) is a
    push too: its key used to be taken by the first, so the targets kept b while the source held a."""
    a, b = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    first = db.store.start_push_run("app", f"v1@{a}", "replica-a", None)
    assert first is not None
    assert db.store.start_push_run("app", f"v1@{a}", "replica-b", None) is None  # delivered again
    assert db.store.start_push_run("app", f"v1@{b}", "replica-a", None) is not None
    assert db.store.start_push_run("app", f"v1@{b}", "replica-b", None) is None
    back = db.store.start_push_run("app", f"v1@{a}", "replica-a", None)  # the rollback
    assert back is not None and back != first
    assert db.store.start_push_run("app", f"v1@{a}", "replica-b", None) is None  # ... delivered again
    assert db.store.start_push_run("app", f"v1_0@{a}", "replica-a", None) is not None  # another tag: its own
    assert db.store.start_push_run("app", f"v1@{b}", "replica-a", None) is not None  # forward again
    long = "at-" + "9" * 300  # a version too long for the column: still one run per push, in a row
    assert db.store.start_push_run("app", f"v1@{long}", "replica-a", None) is not None
    assert db.store.start_push_run("app", f"v1@{long}", "replica-b", None) is None
    with db.store.db.tx() as conn:
        keys = list(conn.execute(select(mirror_runs.c.run_key).where(mirror_runs.c.mirror == "app")).scalars())
    assert all(len(k) <= 300 for k in keys)
    assert len(keys) == len(set(keys)) == 6


def test_racing_deliveries_of_one_push_start_one_run(db: Db) -> None:
    """Two replicas (threads here) receiving the same delivery at once: one run, whichever wins."""
    digest = "sha256:" + "c" * 64
    assert db.store.start_push_run("app", "v2@sha256:" + "d" * 64, "test", None) is not None  # v2 has a past
    for round_ in range(5):
        barrier = threading.Barrier(4)

        def deliver(version: str = f"{digest[:-1]}{round_}", barrier: threading.Barrier = barrier) -> str | None:
            barrier.wait()
            return db.store.start_push_run("app", f"v2@{version}", "replica", None)

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            started = [r for r in pool.map(lambda _: deliver(), range(4)) if r is not None]
        assert len(started) == 1, (round_, started)


def test_replicas_storing_one_new_mirror_at_once_both_succeed(db: Db) -> None:
    """The later INSERT of a new name met the other's row: StoreConflict, answered as a 503."""
    for round_ in range(5):
        items = split_document(load_document(DOC.replace("name: app", f"name: new-{round_}"), {}), BOX)
        barrier = threading.Barrier(4)

        def store(_: int, items: list[StoredMirror] = items, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            db.store.put(items)

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            list(pool.map(store, range(4)))  # raises what a put raised
        assert db.store.get(f"new-{round_}") is not None


def test_a_mirror_sealed_with_another_key_stops_no_other_mirrors_events(db: Db) -> None:
    """One stored mirror the process cannot decrypt (stored before a key change) made every delivery
    to every mirror a 503 (CredentialsUnreadable is a JobError): the registry retried forever."""
    events = "registries:\n  - host: 127.0.0.1:1\n    events: {name: src, secret: s3cret}\nmirrors:"
    doc = DOC.replace("mirrors:", events, 1)
    old = split_document(load_document(doc.replace("name: app", "name: aaa"), {}), SecretBox(b"o" * 32))
    db.store.put([*old, *split_document(load_document(doc, {}), BOX)])
    found = asyncio.run(PushTriggers(db.ms).listeners("src"))
    assert [li.mirror.name for li in found] == ["app"]
