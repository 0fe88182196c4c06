"""Settings and probes for Kubernetes: service-link variables, /healthz following the worker loop."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from regcast.api.app import create_app
from regcast.api.service import Service
from regcast.config import load_settings
from regcast.jobs.secrets import SecretBox
from regcast.jobs.store import JobStore
from regcast.jobs.worker import Worker


def test_kubernetes_service_links_are_ignored_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("REGCAST_PORT", "tcp://10.96.0.12:5001")
    monkeypatch.setenv("REGCAST_HEALTH_PORT", "tcp://10.96.0.13:5002")
    monkeypatch.setenv("REGCAST_PORT_5001_TCP_ADDR", "10.96.0.12")
    with caplog.at_level(logging.WARNING, logger="regcast"):
        settings = load_settings()
    assert settings.port == 5001
    assert settings.health_port == 5002
    assert "ignoring REGCAST_PORT=tcp://10.96.0.12:5001: a Kubernetes service link" in caplog.text
    assert "ignoring REGCAST_HEALTH_PORT=tcp://10.96.0.13:5002" in caplog.text


def test_a_real_port_still_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGCAST_PORT", "6000")
    assert load_settings().port == 6000
    assert load_settings(port=7000).port == 7000


def test_a_postgres_store_needs_a_configured_key(tmp_path: Path) -> None:
    from regcast._exceptions import ConfigError

    with pytest.raises(ConfigError, match="REGCAST_SECRET_KEY is required with PostgreSQL"):
        SecretBox.from_settings(None, tmp_path, shared_database=True)
    assert not (tmp_path / "regcast.key").exists()


def _service(tmp_path: Path, run_workers: bool = True) -> Service:
    settings = load_settings(database_url=f"sqlite:///{tmp_path / 'jobs.db'}", poll_interval=0.1)
    return Service(settings, JobStore(settings.database_url), SecretBox(b"k" * 32), run_workers=run_workers)


def test_healthz_follows_the_worker_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def dies(self: Worker) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(Worker, "run", dies)
    service = _service(tmp_path)
    with TestClient(create_app(service), base_url="http://127.0.0.1:5001") as client:
        for _ in range(200):
            if service.starter is not None and service.starter.done():
                break
            client.get("/readyz")
        r = client.get("/healthz")
    assert r.status_code == 503
    assert r.json() == {"status": "error", "msg": "worker loop stopped"}


def test_no_workers_is_healthy_without_a_worker_loop(tmp_path: Path) -> None:
    service = _service(tmp_path, run_workers=False)
    with TestClient(create_app(service), base_url="http://127.0.0.1:5001") as client:
        deadline = time.monotonic() + 30  # the start-up migrates first: a deadline, not a count of GETs
        while client.get("/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert client.get("/readyz").status_code == 200
        assert client.get("/healthz").json() == {"status": "ok"}
    assert service.worker is None


def test_the_worker_health_app_answers_head_and_seed_style_errors(tmp_path: Path) -> None:
    """``regcast worker``'s probes: HEAD as GET without a body (as on ``serve``), unknown routes seed-style."""
    from regcast.api.probe import Probe, create_health_app

    store = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    store.migrate()
    app = create_health_app(Probe(store, lambda: None, lambda: None))
    with TestClient(app, base_url="http://127.0.0.1:5002") as client:
        head = client.head("/healthz")
        assert head.status_code == 200
        assert head.content == b""
        assert client.head("/readyz").status_code == 200
        missing = client.get("/nope")
        assert missing.status_code == 404
        assert missing.text == '{"msg":"Not Found","status":"error"}\n'
    store.close()
