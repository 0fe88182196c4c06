"""Per-registry limits and single-flight uploads, counted at proxies in front of real registries."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from regcast.config import load_settings
from regcast.mirrors.document import load_document
from regcast.mirrors.sync import run_pass
from regcast.registry.client import RegistryClient
from regcast.registry.reference import endpoint_for_registry
from regcast.transfer.engine import CopyEngine, Target
from regcast.transfer.remote import RegistryRepository
from tests.support import images
from tests.support.faults import FaultProxy, proxy
from tests.support.proxy import TcpProxy
from tests.support.registry import RegistryServer
from tests.support.service import Service
from tests.support.verify import assert_same_image

SETTINGS = load_settings(request_backoff=0.05, request_backoff_max=0.2)


class CountingProxy(FaultProxy):
    """Counts requests in flight (max seen) and, optionally, answers the first manifest GET 429."""

    def __init__(self, upstream_port: int, throttle_window: int | None = None) -> None:
        super().__init__(upstream_port)
        self.in_flight = 0
        self.max_in_flight = 0
        self.timeline: list[tuple[float, str, str, int]] = []
        self.throttle_window = throttle_window

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            resp = await super()._handle(request)
        finally:
            self.in_flight -= 1
        self.timeline.append((time.monotonic(), request.method, request.path, resp.status))
        return resp

    async def _fault_before(self, request: web.Request) -> web.StreamResponse | None:
        if self.throttle_window and request.method == "GET" and "/manifests/" in request.path and self._once("429"):
            w = self.throttle_window
            return web.json_response(
                {"errors": [{"code": "TOOMANYREQUESTS", "message": "pull rate limit"}]},
                status=429,
                headers={"RateLimit-Limit": f"100;w={w}", "RateLimit-Remaining": f"0;w={w}"},
            )
        return await super()._fault_before(request)


def document(mirrors: list[dict[str, Any]], registries: list[dict[str, Any]]) -> Any:
    return load_document(json.dumps({"version": 1, "registries": registries, "mirrors": mirrors}), {})


def push_tags(reg: RegistryServer, repo: str, n: int) -> list[str]:
    http = reg.http()
    tags = [f"1.0.{i}" for i in range(n)]
    for tag in tags:
        images.image([images.layer_bytes(20_000), images.layer_bytes(20_000)]).push(http, repo, tag)
    return tags


def test_max_concurrency_is_never_exceeded_at_the_registry(
    src_reg: RegistryServer, open_reg: RegistryServer, repo: str, faults: list[FaultProxy]
) -> None:
    tags = push_tags(src_reg, repo, 6)
    proxy = CountingProxy(open_reg.port).start()
    faults.append(proxy)
    target = f"127.0.0.1:{proxy.port}"
    mirror = {"name": "m", "source": f"{src_reg.host}/{repo}", "targets": [f"{target}/limited"]}

    limited = document([mirror], [{"host": target, "max_concurrency": 2}])
    report = asyncio.run(run_pass(limited, SETTINGS))
    assert report.ok
    assert report.summary()["copied"] == len(tags)
    assert 1 <= proxy.max_in_flight <= 2, proxy.max_in_flight

    proxy.max_in_flight = 0  # the same pass without the limit does go wider (so the bound above is real)
    free = document([{**mirror, "targets": [f"{target}/free"]}], [])
    assert asyncio.run(run_pass(free, SETTINGS)).ok
    assert proxy.max_in_flight > 2
    for tag in tags:
        assert_same_image(src_reg.http(), repo, tag, open_reg.http(), f"limited/{repo}", tag)


def test_429_with_remaining_zero_pauses_pulls_then_resumes(
    src_reg: RegistryServer,
    open_reg: RegistryServer,
    repo: str,
    faults: list[FaultProxy],
    caplog: pytest.LogCaptureFixture,
) -> None:
    tags = push_tags(src_reg, repo, 2)
    proxy = CountingProxy(src_reg.port, throttle_window=2).start()
    faults.append(proxy)
    source = f"127.0.0.1:{proxy.port}"
    doc = document(
        [{"name": "m", "source": f"{source}/{repo}", "targets": [f"{open_reg.host}/paused"]}],
        [{"host": source, "rate_limit_min": 10}],
    )
    with caplog.at_level(logging.WARNING, logger="regcast"):
        report = asyncio.run(run_pass(doc, SETTINGS))
    assert report.ok, report.public()  # waited, not failed
    gets = [(t, status) for t, m, p, status in proxy.timeline if m == "GET" and "/manifests/" in p]
    assert gets[0][1] == 429
    assert all(status != 429 for _t, status in gets[1:])
    assert gets[1][0] - gets[0][0] >= 1.5, "a pull was sent while the window was closed"
    assert any("rate limit" in r.getMessage() and "waiting" in r.getMessage() for r in caplog.records)
    for tag in tags:
        assert_same_image(src_reg.http(), repo, tag, open_reg.http(), f"paused/{repo}", tag)


def test_two_copies_needing_one_blob_at_one_registry_upload_it_once(
    src_reg: RegistryServer, open_reg: RegistryServer, repo: str, faults: list[FaultProxy]
) -> None:
    big = images.layer_bytes(1_500_000)
    http = src_reg.http()
    a = images.image([big, images.layer_bytes(1000)]).push(http, repo, "a")
    b = images.image([big, images.layer_bytes(1000)]).push(http, repo, "b")
    big_digest = images.sha(big)
    slow = TcpProxy(src_reg.port, rate=1_000_000).start()  # both streams overlap
    counting = CountingProxy(open_reg.port).start()
    faults.append(counting)

    waits: list[int] = []

    async def go() -> None:
        engine = CopyEngine(SETTINGS.transfer_options())  # one per process, shared by its jobs

        def client(port: int, read_only: bool = False) -> RegistryClient:
            return RegistryClient(endpoint_for_registry(f"127.0.0.1:{port}"), read_only=read_only)

        clients = [client(slow.port, True), client(slow.port, True), client(counting.port), client(counting.port)]
        try:
            results = await asyncio.gather(
                engine.copy(
                    RegistryRepository(clients[0], repo),
                    "a",
                    [Target("a", RegistryRepository(clients[2], f"same/{repo}"), "a")],
                ),
                engine.copy(
                    RegistryRepository(clients[1], repo),
                    "b",
                    [Target("b", RegistryRepository(clients[3], f"same/{repo}"), "b")],
                ),
            )
            assert all(r.ok for r in results)
            waits.append(engine.flights.waited)
        finally:
            await asyncio.gather(*(c.close() for c in clients))

    try:
        asyncio.run(go())
    finally:
        slow.stop()
    uploads = [p for m, p, _h in counting.seen if m in ("PUT", "PATCH") and "/blobs/uploads/" in p]
    assert len([p for p in uploads if big_digest in p]) == 1, uploads
    assert waits[0] >= 1
    assert_same_image(http, repo, "a", open_reg.http(), f"same/{repo}", "a")
    assert_same_image(http, repo, "b", open_reg.http(), f"same/{repo}", "b")
    assert a.digest != b.digest


def _run_when(svc: Service, name: str, run_id: str, ok: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The run's status once ``ok`` holds (polled; a bound, not a timing assumption)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        run = next(r for r in svc.http.get(f"/api/mirrors/{name}/runs").json()["runs"] if r["id"] == run_id)
        if ok(run):
            return dict(run)
        time.sleep(0.1)
    raise AssertionError(f"run {run_id}: {run}")


def _until(waiting: str) -> dt.datetime:
    return dt.datetime.fromisoformat(waiting.split(" until ", 1)[1].split(": ", 1)[0])


def test_a_run_held_by_a_rate_limit_says_so_and_until_when(
    tmp_path: Path, repo: str, src_reg: RegistryServer, open_reg: RegistryServer, faults: list[FaultProxy]
) -> None:
    """The source answers 429 + Retry-After to manifest HEADs (the plan), then to GETs (the copy): the
    run's status, and its job's target, say what it waits for and until when; then it finishes."""
    images.image().push(src_reg.http(), repo, "v1")
    src = proxy(faults, src_reg, "throttle_methods", methods={"HEAD"}, retry_after=2)
    at = f"127.0.0.1:{src.port}"
    mirror = {"name": "held", "source": f"{at}/{repo}", "targets": [f"{open_reg.host}/held"], "tags": {"list": ["v1"]}}
    doc = {"version": 1, "mirrors": [mirror]}
    svc = Service(tmp_path / "svc", {"REGCAST_SECRET_KEY": "test-secret-key-for-rate-limit-waits-shown"}).start()
    try:
        assert svc.http.post("/api/mirrors", json=doc).status_code == 201
        r = svc.http.post("/api/mirrors/held/run")
        assert r.status_code == 202, r.text
        run_id = r.json()["id"]
        planning = _run_when(svc, "held", run_id, lambda run: run["waiting"] is not None)
        assert planning["state"] == "PLANNING"
        assert planning["waiting"].startswith(f"waiting for the rate limit of registry {at} until ")
        assert planning["waiting"].endswith(f": HEAD http://{at}/v2/{repo}/manifests/v1 answered 429")
        assert _until(planning["waiting"]) > dt.datetime.fromisoformat(planning["started_at"])

        src.params["methods"] = {"GET"}  # the plan goes on; the copy's manifest GET is held back now
        copying = _run_when(svc, "held", run_id, lambda run: run["state"] == "RUNNING" and run["waiting"] is not None)
        assert copying["waiting"].startswith(f"waiting for the rate limit of registry {at} until ")
        assert copying["waiting"].endswith(f": GET http://{at}/v2/{repo}/manifests/v1 answered 429")
        (job,) = copying["jobs"]
        target = svc.wait_for(job, lambda st: st["targets"][0]["waiting"] is not None)["targets"][0]
        assert target["state"] in ("QUEUED", "RUNNING")
        assert target["waiting"].startswith(f"waiting for the rate limit of registry {at} until ")
        assert _until(target["waiting"]) >= _until(planning["waiting"])

        src.params["methods"] = set()
        done = _run_when(svc, "held", run_id, lambda run: run["state"] in ("FINISHED", "FAILED"))
        assert done["state"] == "FINISHED", done
        assert done["waiting"] is None
        assert svc.status(job)["targets"][0]["waiting"] is None
        assert src.events["429"] >= 2
        assert_same_image(src_reg.http(), repo, "v1", open_reg.http(), f"held/{repo}", "v1")
    finally:
        svc.stop()


def test_a_limited_registry_behind_a_token_server_still_gets_its_tokens(
    src_reg: RegistryServer, token_reg: RegistryServer, repo: str
) -> None:
    """``max_concurrency: 1`` at a token-auth registry: a token is fetched while the request asking for it holds
    the one slot, so a token request that waited for a slot too waited for itself for ever (a hang)."""
    tags = push_tags(src_reg, repo, 2)
    user, password = next(iter(token_reg.users.items()))
    doc = document(
        [{"name": "m", "source": f"{src_reg.host}/{repo}", "targets": [f"{token_reg.host}/one-slot"]}],
        [{"host": token_reg.host, "username": user, "password": password, "max_concurrency": 1}],
    )
    report = asyncio.run(asyncio.wait_for(run_pass(doc, SETTINGS), 60))
    assert report.ok, report.public()
    assert report.summary()["copied"] == len(tags)
    for tag in tags:
        assert_same_image(src_reg.http(), repo, tag, token_reg.http(), f"one-slot/{repo}", tag)


class MountRefusingProxy(CountingProxy):
    """Answers a mount with a plain upload session (202), as Harbor and Docker Hub across organisations do."""

    async def _fault_before(self, request: web.Request) -> web.StreamResponse | None:
        if request.method == "POST" and "mount" in request.query:
            assert self._session
            async with self._session.post(self.upstream + request.path) as up:
                headers = {
                    k: v for k, v in up.headers.items() if k.lower() in ("location", "docker-upload-uuid", "range")
                }
                if "Location" in headers:
                    headers["Location"] = self._rewrite_location(headers["Location"])
                return web.Response(status=up.status, headers=headers)
        return await super()._fault_before(request)


@pytest.mark.parametrize(
    ("max_concurrency", "scenario"), [(1, "pass"), (2, "pass"), (1, "reset_blob"), (2, "reset_blob")]
)
def test_a_copy_within_one_limited_registry_whose_mounts_are_refused_ends(
    open_reg: RegistryServer, repo: str, faults: list[FaultProxy], max_concurrency: int, scenario: str
) -> None:
    """Source and target in one registry, mounts refused: every blob is downloaded and uploaded through the
    same limit. Downloads holding every slot waited for their own uploads for ever (the pass never ended); and
    with every download cut once halfway (``reset_blob``), a resume waited for the slot its own upload held."""
    limited = MountRefusingProxy(open_reg.port)
    limited.scenario = scenario
    limited.start()
    faults.append(limited)
    host = f"127.0.0.1:{limited.port}"
    http = open_reg.http()
    for tag in ("v1", "v2"):  # large blobs (streamed, each held while its upload runs) and small ones
        images.image(
            [images.layer_bytes(3 * 1024 * 1024), images.layer_bytes(2 * 1024 * 1024), images.layer_bytes(9_000)]
        ).push(http, repo, tag)
    doc = document(
        [{"name": "m", "source": f"{host}/{repo}", "targets": [f"{host}/copy"]}],
        [{"host": host, "max_concurrency": max_concurrency}],
    )
    report = asyncio.run(asyncio.wait_for(run_pass(doc, SETTINGS), 90))
    assert report.ok, report.public()
    assert report.summary()["copied"] == 2
    if scenario == "pass":  # a resume is sent outside the limit (its uploads hold the slots)
        assert limited.max_in_flight <= max(max_concurrency, 2)  # at 1, a download and its upload: two at once
    else:
        assert limited.events["reset"] >= 4, limited.events
    for tag in ("v1", "v2"):
        assert_same_image(http, repo, tag, http, f"copy/{repo}", tag)
