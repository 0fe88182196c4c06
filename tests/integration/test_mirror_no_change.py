"""A mirror set where nothing changed (issue 17): HEADs only, counted at proxies in front of every registry.

12 tags x 2 targets (two real registries), synced once; then a no-change pass by ``regcast sync``
and by a service run of the stored mirror. At the targets only manifest HEADs (and the ``/v2/``
ping) may arrive: no manifest GET, no blob request, no upload, no PUT; at the source the tag list
and manifest HEADs; every (tag, target) pair is reported up to date.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support import images
from tests.support.cli import regcast
from tests.support.faults import FaultProxy
from tests.support.registry import RegistryServer
from tests.support.service import Service

N_TAGS = 12
KEY = "test-secret-key-for-mirror-no-change"


@pytest.fixture
def setup(
    tmp_path: Path, registries: Any, src_reg: RegistryServer, open_reg: RegistryServer, faults: list[FaultProxy]
) -> tuple[Path, dict[str, Any], list[str], list[FaultProxy]]:
    """A source repository with N_TAGS tags, mirrored once to two registries; proxies counting from here on."""
    second = registries.open("no-change-target")
    repo = f"team/noop-{secrets.token_hex(3)}"
    http = src_reg.http()
    base = images.layer_bytes(4000)
    tags = [f"1.0.{i}" for i in range(N_TAGS)]
    for tag in tags:
        images.image([base, images.layer_bytes(1000)]).push(http, repo, tag)
    images.multi_platform().push(http, repo, "multi")  # an index: its children must not be read either
    tags.append("multi")
    proxies = [FaultProxy(r.port).start() for r in (src_reg, open_reg, second)]
    faults.extend(proxies)
    src, *targets = (f"127.0.0.1:{p.port}" for p in proxies)
    doc = {"version": 1, "mirrors": [{"name": "noop", "source": f"{src}/{repo}", "targets": targets}]}
    path = tmp_path / "mirrors.json"
    path.write_text(json.dumps(doc))
    first = regcast("sync", "--json", str(path))
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["totals"]["copied"] == 2 * len(tags)
    for p in proxies:
        p.seen.clear()
    return path, doc, tags, proxies


def requests(proxy: FaultProxy) -> list[tuple[str, str]]:
    return [(m, p.split("?")[0]) for m, p, _h in proxy.seen if p != "/v2/"]


def assert_heads_only(proxies: list[FaultProxy], repo_tags: list[str]) -> None:
    src, *targets = proxies
    for target in targets:
        seen = requests(target)
        assert {m for m, _p in seen} == {"HEAD"}, seen
        assert sorted(re.sub(r"^.*/manifests/", "", p) for _m, p in seen) == sorted(repo_tags)
        assert [p for _m, p in seen if "/blobs/" in p] == []
    at_source = requests(src)
    assert [m for m, p in at_source if p.endswith("/tags/list")] == ["GET"]
    rest = [(m, p) for m, p in at_source if not p.endswith("/tags/list")]
    assert {m for m, _p in rest} == {"HEAD"}, rest
    assert sorted(re.sub(r"^.*/manifests/", "", p) for _m, p in rest) == sorted(repo_tags)


def test_a_no_change_cli_pass_sends_only_manifest_heads_and_reports_every_pair_up_to_date(
    setup: tuple[Path, dict[str, Any], list[str], list[FaultProxy]],
) -> None:
    path, _doc, tags, proxies = setup
    r = regcast("sync", "--json", str(path))
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["totals"]["up_to_date"] == 2 * len(tags)
    assert report["totals"]["copied"] == 0
    assert report["totals"]["moved"] == 0
    states = {(i["tag"], t["target"], t["state"]) for i in report["mirrors"][0]["images"] for t in i["targets"]}
    assert len(states) == 2 * len(tags)
    assert {s for _tag, _t, s in states} == {"up-to-date"}
    assert_heads_only(proxies, tags)


def run_once(svc: Service) -> dict[str, Any]:
    r = svc.http.post("/api/mirrors/noop/run")
    assert r.status_code == 202, r.text
    run_id = r.json()["id"]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        run = next(x for x in svc.http.get("/api/mirrors/noop/runs").json()["runs"] if x["id"] == run_id)
        if run["state"] in ("FINISHED", "FAILED"):
            return dict(run)
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} not finished")


def test_no_change_service_runs_queue_no_job_send_only_manifest_heads_and_reuse_connections(
    tmp_path: Path, setup: tuple[Path, dict[str, Any], list[str], list[FaultProxy]]
) -> None:
    _path, doc, tags, proxies = setup
    svc = Service(tmp_path / "serve", {"REGCAST_SECRET_KEY": KEY}).start()
    try:
        assert svc.http.post("/api/mirrors", json=doc).status_code == 201
        for attempt in range(2):
            run = run_once(svc)
            assert run["state"] == "FINISHED", run
            assert run["images_selected"] == len(tags)
            assert run["up_to_date"] == len(tags)
            assert (run["failed"], run["copied"]) == (0, 0)
            assert run["jobs"] == []  # nothing to copy: no job queued
            assert_heads_only(proxies, tags)
            pings = sum(1 for p in proxies for _m, path, _h in p.seen if path == "/v2/")
            # the first run pings each registry once; the next reuses the worker's connections and pings
            assert pings == (len(proxies) if attempt == 0 else 0)
            for p in proxies:
                p.seen.clear()
    finally:
        svc.stop()
