"""A real ``regcast serve`` (or ``regcast worker``) process for the tests, on loopback."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from tests.support.registry import free_port

REGCAST = shutil.which("regcast", path=str(Path(sys.executable).parent)) or "regcast"
FINAL = {"FINISHED", "FAILED", "CANCELLED"}

FAST = {
    "REGCAST_POLL_INTERVAL": "0.2",
    "REGCAST_HEARTBEAT_INTERVAL": "0.5",
    "REGCAST_STALE_AFTER": "3",
    "REGCAST_RETRY_BACKOFF": "0.2",
    "REGCAST_MAX_ATTEMPTS": "2",
    "REGCAST_REQUEST_RETRIES": "3",
    "REGCAST_REQUEST_BACKOFF": "0.05",
    "REGCAST_REQUEST_BACKOFF_MAX": "0.2",
}


class Process:
    def __init__(self, args: list[str], directory: Path, env: dict[str, str]) -> None:
        self.args = args
        self.directory = directory
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = directory / f"{args[0]}-{free_port()}.log"
        if args[0] == "worker" and "REGCAST_HEALTH_PORT" not in env:  # never the shared default port
            self.env = {**env, "REGCAST_HEALTH_PORT": str(free_port())}
        self.health = f"http://127.0.0.1:{self.env.get('REGCAST_HEALTH_PORT', '0')}"

    def start(self) -> Process:
        self.directory.mkdir(parents=True, exist_ok=True)
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            [REGCAST, *self.args],
            cwd=self.directory,
            stdout=out,
            stderr=out,
            env={**os.environ, **self.env},
            stdin=subprocess.DEVNULL,
        )
        return self

    def wait_ready(self, timeout: float = 60) -> None:
        """A ``worker``: until its /readyz (on its own port) answers 200."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc and self.proc.poll() is None, self.output()
            try:
                if httpx.get(f"{self.health}/readyz", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"worker did not become ready:\n{self.output()}")

    def kill(self) -> None:
        assert self.proc
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 30) -> int:
        assert self.proc
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


class Service(Process):
    def __init__(
        self, directory: Path, env: dict[str, str] | None = None, port: int | None = None, args: Sequence[str] = ()
    ) -> None:
        self.port = port or free_port()
        super().__init__(["serve", "--port", str(self.port), *args], directory, {**FAST, **(env or {})})
        self.url = f"http://127.0.0.1:{self.port}"
        self.http = httpx.Client(base_url=self.url, timeout=60)

    def start(self) -> Service:
        super().start()
        deadline = time.monotonic() + 90  # generous: a loaded 2-core machine starts Python slowly
        while time.monotonic() < deadline:
            assert self.proc, self.output()
            assert self.proc.poll() is None, self.output()
            try:
                if self.http.get("/readyz").status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"service did not become ready:\n{self.output()}")

    def submit(self, body: dict[str, Any]) -> str:
        r = self.http.post("/api/distribute/image", json=body)
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    def status(self, job_id: str) -> dict[str, Any]:
        r = self.http.get(f"/api/distribute/image/{job_id}")
        assert r.status_code == 200, r.text
        return dict(r.json())

    def wait(self, job_id: str, until: set[str] | None = None, timeout: float = 120) -> dict[str, Any]:
        until = until or FINAL
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self.status(job_id)
            if st["value"] in until:
                return st
            time.sleep(0.1)
        raise AssertionError(f"job {job_id} not in {until} after {timeout}s: {self.status(job_id)}")

    def wait_for(self, job_id: str, predicate: Any, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self.status(job_id)
            if predicate(st):
                return st
            time.sleep(0.05)
        raise AssertionError(f"job {job_id}: condition not met: {self.status(job_id)}")


def source(reg: Any, repo: str, ref: str = "v1", **extra: Any) -> dict[str, Any]:
    return {"endpoint": reg.endpoint, "image": repo, "ref": ref, **extra}


def basicauth(reg: Any, password: str | None = None) -> dict[str, Any]:
    user, pw = next(iter(reg.users.items()))
    return {"basicauth": {"user": user, "password": password if password is not None else pw}}


def flask_body(content: dict[str, Any]) -> str:
    """A dict answer of the seed's Flask 1.1.2 service, byte for byte: ``jsonify``'s compact separators,
    sorted keys and a newline (checked against Flask 1.1.2 itself)."""
    return json.dumps(content, separators=(",", ":"), sort_keys=True) + "\n"
