"""ops/ without the network: durations, retention purge, retry reset, signatures, log formatting."""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path

import pytest

from regcast.config import Settings, parse_duration
from regcast.jobs.models import JobState
from regcast.jobs.store import Claim, JobStore, TargetUpdate
from regcast.ops.logs import JsonFormatter, current_job
from regcast.ops.notify import sign, verify
from regcast.transfer.progress import TargetState


def test_durations() -> None:
    assert parse_duration("30d") == 30 * 86400
    assert parse_duration("12h") == 12 * 3600
    assert parse_duration("90m") == 5400
    assert parse_duration("45") == 45
    assert Settings(job_retention="0").retention() is None
    assert Settings().retention() == dt.timedelta(days=30)
    with pytest.raises(ValueError, match="job_retention"):
        Settings(job_retention="soon")


def _store(tmp_path: Path) -> JobStore:
    tmp_path.mkdir(exist_ok=True)
    store = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    store.migrate()
    return store


def _run_to_end(store: JobStore, states: list[str], final: JobState) -> str:
    job = store.create({"source": {"image": "a/b"}, "targets": []}, None, [("http://h/v2", "a/b", "v1")] * len(states))
    store.register_worker("w", "host", 1)
    [claimed] = store.claim("w")
    assert claimed.id == job
    claim = Claim(job, "w", claimed.claim_generation)
    updates = [
        TargetUpdate(i, TargetState(s), 10, 10, 1, "boom" if s == "FAILED" else None) for i, s in enumerate(states)
    ]
    store.save_progress(claim, updates)
    store.finish(claim, final, "boom" if final is JobState.FAILED else None)
    return job


def test_retry_failed_keeps_finished_targets(tmp_path: Path) -> None:
    store = _store(tmp_path)
    job = _run_to_end(store, ["FINISHED", "FAILED"], JobState.FAILED)
    again = store.retry_failed(job)
    assert again
    assert again.state == "QUEUED"
    assert again.error is None
    assert again.finished_at is None
    assert [(t.state, t.bytes_done, t.error) for t in again.targets] == [("FINISHED", 10, None), ("PENDING", 0, None)]
    assert store.retry_failed(job) is None  # QUEUED now: nothing to retry
    other = _store(tmp_path / "other")
    done = _run_to_end(other, ["FINISHED"], JobState.FINISHED)
    assert other.retry_failed(done) is None


def test_purge_deletes_only_ended_jobs_past_retention(tmp_path: Path) -> None:
    store = _store(tmp_path)
    ended = _run_to_end(store, ["FINISHED"], JobState.FINISHED)
    queued = store.create({"source": {"image": "a/b"}, "targets": []}, None, [("http://h/v2", "a/b", "v1")])
    assert store.purge_finished(dt.timedelta(days=1)) == 0
    assert store.purge_finished(dt.timedelta(seconds=-1)) == 1
    assert store.get(ended) is None
    assert store.get(queued) is not None


def test_signature_round_trip() -> None:
    body = b'{"id": "x"}'
    header = sign("s3cret", "1700000000", body)
    assert verify("s3cret", header, body, now=1700000010)
    assert not verify("s3cret", header, body + b" ", now=1700000010)
    assert not verify("other", header, body, now=1700000010)
    assert not verify("s3cret", header, body, now=1700000000 + 3600)  # replayed an hour later


def test_json_log_line_fields_and_redaction() -> None:
    token = current_job.set("job-1")
    try:
        record = logging.LogRecord(
            "regcast.x", logging.WARNING, __file__, 1, "sent Authorization: Bearer abcdefghijkl", (), None
        )
        record.job_id = current_job.get()
        record.target = "http://h/v2"
        record.bytes = 42
        line = json.loads(JsonFormatter().format(record))
    finally:
        current_job.reset(token)
    assert line["job_id"] == "job-1"
    assert line["target"] == "http://h/v2"
    assert line["bytes"] == 42
    assert line["level"] == "warning"
    assert line["registry"] is None
    assert line["error"] is None
    assert "abcdefghijkl" not in line["event"]


def test_grafana_dashboard_uses_only_exposed_names(tmp_path: Path) -> None:
    import re

    from prometheus_client.parser import text_string_to_metric_families

    from regcast.ops.metrics import Metrics

    store = _store(tmp_path)
    store.create({"source": {"image": "a/b"}, "targets": []}, None, [("http://h/v2", "a/b", "v1")])
    text = Metrics().render(store).decode()
    exposed = {f.name for f in text_string_to_metric_families(text)}
    assert {"regcast_jobs", "regcast_queue_depth_jobs", "regcast_transfers_in_flight", "regcast_mirror_runs"} <= exposed
    assert 'regcast_jobs{state="QUEUED"} 1.0' in text
    assert "regcast_queue_depth_jobs 1.0" in text
    dashboard = (Path(__file__).parents[2] / "deploy" / "grafana-dashboard.json").read_text()
    used = {re.sub(r"_(bucket|count|sum)$", "", n) for n in re.findall(r"regcast_[a-z_]+", dashboard)}
    used = {n.removesuffix("_total") for n in used}
    assert used, used - exposed
    assert used <= exposed, used - exposed


def test_metrics_merge_across_processes_in_multiprocess_mode(tmp_path: Path) -> None:
    """Several uvicorn workers: each process counts in PROMETHEUS_MULTIPROC_DIR, /metrics sums them."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    count = (
        "from regcast.ops.metrics import Metrics; m = Metrics(); m.job_done('finished', 3.0); m.bytes_read('r:1', 10)"
    )
    for _ in range(2):
        subprocess.run([sys.executable, "-c", count], env=env, check=True, timeout=60)
    show = "from regcast.ops.metrics import Metrics; print(Metrics().render().decode())"
    text = subprocess.run([sys.executable, "-c", show], env=env, check=True, timeout=60, capture_output=True, text=True)
    assert 'regcast_jobs_finished_total{outcome="finished"} 2.0' in text.stdout
    assert 'regcast_source_read_bytes_total{registry="r:1"} 20.0' in text.stdout
    assert 'regcast_job_duration_seconds_count{outcome="finished"} 2.0' in text.stdout


def test_metrics_answer_with_the_process_counters_while_the_database_is_down(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """/metrics used to answer 503 during a database outage: every counter lost exactly when it matters."""
    from regcast._exceptions import JobStoreUnavailable
    from regcast.ops.metrics import Metrics

    class Down:
        def queue_stats(self) -> tuple[dict[str, int], float | None, int]:
            raise JobStoreUnavailable("database unavailable (OperationalError)")

    metrics = Metrics()
    metrics.jobs_finished.labels("finished").inc()
    text = metrics.render(Down()).decode()  # type: ignore[arg-type]
    assert 'regcast_jobs_finished_total{outcome="finished"} 1.0' in text
    assert "regcast_queue_depth_jobs" not in text  # unknown, not a made-up 0
    assert "the database's gauges left out: database unavailable" in caplog.text
