"""Starting and stopping the services against a database they cannot use (yet): what an operator sees.

A database no waiting can fix (a schema a newer regcast wrote, an SQLite file that cannot be opened)
is one line naming it and exit 1 at start; a server database that does not answer yet is waited for,
each retry line naming it (password hidden) and why; SIGTERM meanwhile stops at once, exit 0.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text

from tests.support import images
from tests.support.cli import regcast
from tests.support.registry import RegistryServer, free_port
from tests.support.service import FAST, Process, Service, source

KEY = "k" * 40


def _newer_schema(db: Path) -> None:
    """A database migrated by a newer regcast: its Alembic revision is one this code does not know."""
    Service(db.parent, {"REGCAST_DATABASE_URL": f"sqlite:///{db}"}).start().terminate()
    engine = create_engine(f"sqlite:///{db}")
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0099_from_the_future'"))
    engine.dispose()


def _one_error_line(r: subprocess.CompletedProcess[str], *words: str) -> str:
    assert r.returncode == 1, r.stdout + r.stderr
    [line] = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    for word in words:
        assert word in line, line
    assert "Traceback" not in r.stdout + r.stderr
    return line


def test_a_schema_written_by_a_newer_regcast_is_one_line_and_exit_1(tmp_path: Path) -> None:
    db = tmp_path / "regcast.db"
    _newer_schema(db)
    env = {"REGCAST_DATABASE_URL": f"sqlite:///{db}", "REGCAST_HEALTH_PORT": "0"}
    words = (f"sqlite:///{db}", "0099_from_the_future", "newer regcast")
    _one_error_line(regcast("jobs", env=env, timeout=30), *words)
    _one_error_line(regcast("worker", env=env, timeout=30), *words)
    r = regcast("serve", "--port", str(free_port()), env=env, timeout=30)
    _one_error_line(r, *words)
    assert "serving on" not in r.stderr


def test_an_sqlite_file_that_cannot_be_opened_is_one_line_and_exit_1(tmp_path: Path) -> None:
    (tmp_path / "regcast.db").mkdir()  # a folder where the file should be: "unable to open database file"
    env = {"REGCAST_DATABASE_URL": f"sqlite:///{tmp_path / 'regcast.db'}", "REGCAST_HEALTH_PORT": "0"}
    words = (f"sqlite:///{tmp_path / 'regcast.db'}", "unable to open database file")
    r = regcast("serve", "--port", str(free_port()), env=env, timeout=30)
    _one_error_line(r, *words)
    assert "serving on" not in r.stderr
    _one_error_line(regcast("worker", env=env, timeout=30), *words)
    _one_error_line(regcast("jobs", env=env, timeout=30), *words)


def test_an_sqlite_file_opened_read_only_is_one_line_and_exit_1(tmp_path: Path) -> None:
    """Readable, so the schema check passed: every heartbeat and claim then failed, retried for ever."""
    db = tmp_path / "regcast.db"
    Service(tmp_path, {"REGCAST_DATABASE_URL": f"sqlite:///{db}"}).start().terminate()  # closed by its process
    assert not (tmp_path / "regcast.db-wal").exists()
    url = f"sqlite:///file:{db}?mode=ro&uri=true"
    env = {"REGCAST_DATABASE_URL": url, "REGCAST_HEALTH_PORT": "0", "REGCAST_SECRET_KEY": KEY}
    for args in (["serve", "--port", str(free_port())], ["worker"]):
        _one_error_line(regcast(*args, env=env, timeout=20), url, "attempt to write a readonly database")


def test_a_database_not_answering_yet_is_named_without_its_password_and_sigterm_stops_at_once(
    tmp_path: Path,
) -> None:
    closed = free_port()  # nothing listens there: connection refused
    url = f"postgresql://regcast:pa55word@127.0.0.1:{closed}/regcast?password=pa55query"
    env = {"REGCAST_DATABASE_URL": url, "REGCAST_SECRET_KEY": KEY}
    r = regcast("jobs", env=env, timeout=30)
    line = _one_error_line(r, f"127.0.0.1:{closed}/regcast", "Connection refused")
    assert "pa55" not in r.stderr, line
    for proc in (
        Process(["serve", "--port", str(free_port())], tmp_path, {**FAST, **env}),
        Process(["worker"], tmp_path, {**FAST, **env}),
    ):
        proc.start()
        deadline = time.monotonic() + 60
        while "retrying in" not in proc.output():
            assert time.monotonic() < deadline, proc.output()
            time.sleep(0.1)
        assert proc.terminate(timeout=10) == 0, proc.output()  # not after shutdown_grace + margin (25 s)
        out = proc.output()
        retry = next(x for x in out.splitlines() if "retrying in" in x)
        assert f"127.0.0.1:{closed}/regcast" in retry and "Connection refused" in retry, retry
        assert "pa55" not in out
        assert "Traceback" not in out


def test_a_submission_the_moment_the_port_opens_is_accepted_not_503(
    tmp_path: Path, repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    """The port is bound before the database is tried: a script's first request (no /readyz poll)
    must wait for that try, not get 'database unavailable' from a service whose database is fine."""
    images.image().push(src_reg.http(), repo, "v1")
    port = free_port()
    proc = Process(["serve", "--port", str(port)], tmp_path, dict(FAST)).start()
    body = {"source": source(src_reg, repo), "targets": [{"endpoint": open_reg.endpoint}]}
    try:
        deadline = time.monotonic() + 60
        while True:
            assert time.monotonic() < deadline, proc.output()
            try:
                r = httpx.post(f"http://127.0.0.1:{port}/api/distribute/image", json=body, timeout=30)
                break
            except httpx.ConnectError:
                time.sleep(0.005)
        assert r.status_code == 201, r.text
    finally:
        proc.stop()


def test_a_worker_whose_health_port_is_busy_fails_in_one_line_as_serve_does(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {"REGCAST_DATABASE_URL": f"sqlite:///{tmp_path / 'regcast.db'}", "REGCAST_HEALTH_PORT": str(port)}
        r = regcast("worker", env=env, timeout=30)
    line = _one_error_line(r, f"127.0.0.1:{port} for /healthz and /readyz: Address already in use")
    assert "while attempting" not in line and "Usage:" not in r.stderr
    assert " started" not in r.stderr  # nothing started


def test_jobs_does_not_migrate_a_shared_database_under_its_replicas(pg_url: str) -> None:
    """A newer `regcast jobs` run against PostgreSQL used to migrate it: the replicas still running the
    older regcast then found a schema they do not know. It says what is there and changes nothing."""
    from importlib import resources

    from alembic import command
    from alembic.config import Config

    from regcast.config import load_settings
    from regcast.jobs.store import JobStore, head_revision

    store = JobStore(load_settings(database_url=pg_url).database_url)
    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("regcast.jobs") / "migrations"))
    with store.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0007_workers")
    try:
        r = regcast("jobs", env={"REGCAST_DATABASE_URL": pg_url}, timeout=30)
        _one_error_line(r, "schema revision 0007_workers, older than this regcast's", "migrates it when it starts")
        with store.engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == "0007_workers"
        store.migrate()  # what serve or worker does when it starts
        assert head_revision() != "0007_workers"
        r = regcast("jobs", env={"REGCAST_DATABASE_URL": pg_url}, timeout=30)
        assert r.returncode == 0, r.stderr
        assert "0 of 0 job(s)" in r.stdout
    finally:
        store.close()
