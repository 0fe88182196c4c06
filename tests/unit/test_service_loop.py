"""The services' event loop and HTTP parser are chosen, not whatever uvicorn's "auto" finds (issue 17)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import pytest
import uvloop
from click.testing import CliRunner

from regcast.api import listen
from regcast.cli import main


def test_serve_runs_on_uvloop_with_httptools(monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    seen: list[uvicorn.Config] = []

    class Server:
        def __init__(self, config: uvicorn.Config) -> None:
            seen.append(config)

        def run(self, sockets: list[socket.socket]) -> None:
            pass

    monkeypatch.setattr(uvicorn, "Server", Server)
    with socket.create_server(("127.0.0.1", 0)) as sock:
        listen.serve(object(), sock, log_level="info")
    [config] = seen
    assert (config.loop, config.http) == ("uvloop", "httptools")
    config.load()
    factory = config.get_loop_factory()
    assert factory is not None
    loop = factory()
    try:
        assert type(loop) is uvloop.Loop
    finally:
        loop.close()
    assert config.http_protocol_class.__name__ == "HttpToolsProtocol"


def test_worker_runs_on_uvloop(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from regcast.cli import service

    loops: list[type[asyncio.AbstractEventLoop]] = []

    async def run_worker(*_: Any) -> None:
        loops.append(type(asyncio.get_running_loop()))

    monkeypatch.setattr(service, "_run_worker", run_worker)
    env = {"REGCAST_DATABASE_URL": f"sqlite:///{tmp_path / 'r.db'}", "REGCAST_HEALTH_PORT": "0"}
    result = CliRunner().invoke(main, ["worker"], env=env)
    assert result.exit_code == 0, result.output
    assert loops == [uvloop.Loop]
