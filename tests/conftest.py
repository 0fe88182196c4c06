"""Shared fixtures: real registries (open, htpasswd+TLS, token auth) started once per session."""

from __future__ import annotations

import gc
import logging
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from tests.support import loopback
from tests.support.faults import FaultProxy
from tests.support.hostile import HostileServer
from tests.support.registries import Registries
from tests.support.registry import BINARY, RegistryServer


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests beyond tests/unit need the real registry binary: without it the run fails, it never skips them."""
    if shutil.which(BINARY) is None and any("/tests/unit/" not in str(item.fspath) for item in items):
        raise pytest.UsageError(
            f"{BINARY} is not installed, so no integration test can run: `make registry` (or `make test`) installs it"
        )


@pytest.fixture(scope="session")
def ca(tmp_path_factory: pytest.TempPathFactory) -> tuple[trustme.CA, Path]:
    authority = trustme.CA()
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    authority.cert_pem.write_to_path(str(path))
    return authority, path


@pytest.fixture(scope="session")
def ca_bundle(ca: tuple[trustme.CA, Path]) -> Path:
    return ca[1]


@pytest.fixture(scope="session")
def registries(tmp_path_factory: pytest.TempPathFactory, ca: tuple[trustme.CA, Path]) -> Iterator[Registries]:
    regs = Registries(tmp_path_factory.mktemp("registries"), ca)
    yield regs
    regs.stop()


@pytest.fixture(scope="session")
def src_reg(registries: Registries) -> RegistryServer:
    return registries.open("source")


@pytest.fixture(scope="session")
def open_reg(registries: Registries) -> RegistryServer:
    return registries.open("open-target")


@pytest.fixture(scope="session")
def basic_reg(registries: Registries) -> RegistryServer:
    return registries.basic_tls("basic-tls")


@pytest.fixture(scope="session")
def token_reg(registries: Registries) -> RegistryServer:
    return registries.token("token")


@pytest.fixture
def repo(request: pytest.FixtureRequest) -> str:
    """A fresh repository name per test."""
    name = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    return f"t/{name}-{secrets.token_hex(3)}"


@pytest.fixture(autouse=True)
def _loopback_only() -> Iterator[None]:
    """Nothing a test runs in this process can reach an address off this machine (see support/loopback.py)."""
    loopback.install()
    try:
        yield
    finally:
        loopback.uninstall()


class _Unretrieved(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "exception was never retrieved" in record.getMessage():
            self.seen.append(record.getMessage())


@pytest.fixture(autouse=True)
def _no_unretrieved_task_exception() -> Iterator[None]:
    """A test fails when asyncio logs "Task exception was never retrieved" (issue 10 item 8)."""
    handler = _Unretrieved()
    logging.getLogger("asyncio").addHandler(handler)
    try:
        yield
        gc.collect()  # the line is logged when the forgotten task is collected
    finally:
        logging.getLogger("asyncio").removeHandler(handler)
    assert not handler.seen, handler.seen


@pytest.fixture(autouse=True)
def _no_docker_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Tests never read the developer's own ~/.docker/config.json."""
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))
    os.makedirs(tmp_path / "docker-config", exist_ok=True)


@pytest.fixture(scope="session")
def pg_base_url() -> str:
    url = os.environ.get("REGCAST_TEST_POSTGRES_URL")
    if not url:
        if os.environ.get("REGCAST_REQUIRE_POSTGRES") == "1":
            pytest.fail("REGCAST_REQUIRE_POSTGRES=1 but no PostgreSQL: REGCAST_TEST_POSTGRES_URL is not set")
        pytest.skip(
            "PostgreSQL tests skipped: REGCAST_TEST_POSTGRES_URL is not set (make test sets it when "
            "a server answers at 127.0.0.1:5432)"
        )
    return url


@pytest.fixture
def pg_url(pg_base_url: str) -> Iterator[str]:
    """A fresh schema per test in the test database, selected through the URL's search_path."""
    import psycopg

    schema = f"regcast_t_{secrets.token_hex(4)}"
    with psycopg.connect(pg_base_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in pg_base_url else "?"
    yield f"{pg_base_url}{sep}options=-csearch_path%3D{schema}"
    with psycopg.connect(pg_base_url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def faults() -> Iterator[list[FaultProxy]]:
    """Fault proxies started by a test, stopped after it."""
    started: list[FaultProxy] = []
    yield started
    for p in started:
        p.stop()


@pytest.fixture
def hostile() -> Iterator[list[HostileServer]]:
    """Hostile servers started by a test (``tests.support.hostile.serve``), stopped after it."""
    servers: list[HostileServer] = []
    yield servers
    for s in servers:
        s.stop()
