"""The scheduler's rules on a real (SQLite) store: each due time once, missed runs once, no overlap."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from pathlib import Path

import pytest

from regcast.config import load_settings
from regcast.jobs.secrets import SecretBox
from regcast.jobs.store import JobStore
from regcast.mirrors.document import DocumentError, load_document
from regcast.mirrors.schedule import Schedule
from regcast.mirrors.service import MirrorService, split_document

DOC = """\
version: 1
mirrors:
  - name: app
    source: 127.0.0.1:1/team/app
    targets: [127.0.0.1:2/mirror]
    tags: {list: [v1]}
    interval: 60s
"""


def make(tmp_path: Path) -> MirrorService:
    settings = load_settings(database_url=f"sqlite:///{tmp_path / 'db.sqlite'}", request_retries=1)
    store = JobStore(settings.database_url)
    store.migrate()
    box = SecretBox.from_settings("k" * 32, tmp_path)
    ms = MirrorService(settings, store, box, owner="test")
    ms.store.put(split_document(load_document(DOC, {}), box))
    return ms


def same_due_later(now: dt.datetime) -> dt.datetime:
    """A moment after ``now`` with the same due time of the 60 s interval (due times are whole minutes:
    ``now + 1s`` crossed into the next one whenever the mirror was stored in a minute's 59th second)."""
    due = Schedule(interval=60).latest_due(now)
    return now + (due + dt.timedelta(seconds=60) - now) / 2


async def settle(ms: MirrorService) -> None:
    await asyncio.gather(*ms._tasks)


def test_each_due_time_fires_once_and_missed_ones_once(tmp_path: Path) -> None:
    ms = make(tmp_path)
    created = ms.store.get("app")
    assert created is not None
    t0 = created.created_at

    async def go() -> None:
        assert await ms.tick(t0) == []  # the due time before the mirror existed does not fire
        first = await ms.tick(t0 + dt.timedelta(seconds=61))
        await settle(ms)
        assert len(first) == 1
        assert await ms.tick(same_due_later(t0 + dt.timedelta(seconds=61))) == []  # same due time: already taken
        later = await ms.tick(t0 + dt.timedelta(minutes=30))  # after "downtime": once, not 29 times
        await settle(ms)
        assert len(later) == 1

    asyncio.run(go())
    runs = ms.store.runs("app")
    assert len(runs) == 2
    assert len({r.due_at for r in runs}) == 2
    # the source is unreachable: the run fails while planning, visibly, and frees the mirror
    assert all(r.state == "FAILED" and r.error and "connection failed" in r.error for r in runs), runs
    assert ms.store.get("app").active_run is None  # type: ignore[union-attr]


def test_a_run_still_going_is_not_started_twice(tmp_path: Path) -> None:
    ms = make(tmp_path)
    rec = ms.store.get("app")
    assert rec is not None
    run_id, going = ms.store.start_run("app", "manual", "test")
    assert run_id
    assert going is None
    job = ms.jobs.create({"source": {}, "targets": []}, None, [])
    ms.store.link_job(run_id, job, "v1")
    ms.store.planned(run_id, selected=1, up_to_date=0, skipped=0, failed=0, error=None)
    # the queued job keeps the run going: a due time is recorded as skipped, a manual run refused
    due = rec.created_at + dt.timedelta(seconds=120)
    assert asyncio.run(ms.tick(due)) == []
    runs = ms.store.runs("app")
    assert [r.state for r in runs] == ["SKIPPED", "RUNNING"]
    assert run_id in (runs[0].error or "")
    again, busy = ms.store.start_run("app", "manual", "test")
    assert again is None
    assert busy is not None
    assert busy.id == run_id
    # the job ends: the run ends with it and the next due time starts a run
    with ms.jobs.engine.begin() as conn:
        from sqlalchemy import update

        from regcast.jobs.models import jobs

        conn.execute(update(jobs).where(jobs.c.id == job).values(state="FINISHED"))
    assert ms.store.settle() == [run_id]
    assert ms.store.get_run(run_id).state == "FINISHED"  # type: ignore[union-attr]
    nxt, _ = ms.store.start_run("app", "schedule", "test", due + dt.timedelta(seconds=60))
    assert nxt is not None


def test_a_stored_schedule_that_never_fires_stops_no_other_mirror(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """``0 0 31 2 *`` parses but never comes: stored, it made every tick fail (no mirror after it in
    name order ever ran again) and ``GET /api/mirrors`` answer 500. Now refused when loading; one stored
    before that is passed over."""
    from regcast.api.routes.mirrors import _summary

    ms = make(tmp_path)
    bad = DOC.replace("name: app", "name: aaa").replace("interval: 60s", 'schedule: "0 0 31 2 *"')
    with pytest.raises(DocumentError, match=r"line 7: mirrors\[0\]\.schedule: .*never comes"):
        load_document(bad, {})
    monkeypatch.setattr("regcast.mirrors.checks.check_cron", lambda expr: expr)  # stored before the check
    monkeypatch.setattr("regcast.mirrors.schedule.check_cron", lambda expr: expr)
    ms.store.put(split_document(load_document(bad, {}), ms.box))
    monkeypatch.undo()
    app = ms.store.get("app")
    aaa = ms.store.get("aaa")
    assert app is not None and aaa is not None

    async def go() -> list[str]:
        started = await ms.tick(app.created_at + dt.timedelta(seconds=61))
        await settle(ms)
        assert await ms.tick(same_due_later(app.created_at + dt.timedelta(seconds=61))) == []
        return started

    with caplog.at_level(logging.WARNING, "regcast.mirrors"):
        assert len(asyncio.run(go())) == 1
    said = [r.getMessage() for r in caplog.records if "no due time" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith("mirror aaa: schedule '0 0 31 2 *'"), said  # once, not every tick
    assert [r.mirror for r in ms.store.runs("app")] == ["app"]
    assert _summary(aaa, app.created_at)["next_due"] is None
    assert _summary(app, app.created_at)["next_due"] is not None
