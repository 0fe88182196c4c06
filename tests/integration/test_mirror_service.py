"""Mirror sets in the service, on PostgreSQL: routes, runs as ordinary jobs, schedules across replicas."""

from __future__ import annotations

import base64
import datetime as dt
import itertools
import json
import secrets
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.support import images
from tests.support.proxy import TcpProxy
from tests.support.registry import RegistryServer, free_port
from tests.support.service import FAST, Process, Service
from tests.support.verify import assert_same_image

KEY = "test-secret-key-for-mirror-service"
PASSWORD = "mirror-Pa55word-xyz"
pytestmark = pytest.mark.postgres


def doc_yaml(src: RegistryServer, repo: str, targets: list[str], extra: str = "") -> str:
    return f"""\
version: 1
registries:
  - host: {src.host}
    username: ${{MIRROR_USER}}
    password: ${{MIRROR_PASS}}
target_groups:
  all: [{", ".join(targets)}]
mirrors:
  - name: app
    source: {src.host}/{repo}
    targets: ["@all"]
    tags:
      allow: ['^v']
{extra}"""


def service(tmp_path: Path, pg_url: str, **env: str) -> Service:
    base = {"REGCAST_DATABASE_URL": pg_url, "REGCAST_SECRET_KEY": KEY, "MIRROR_USER": "u", "MIRROR_PASS": PASSWORD}
    return Service(tmp_path / "serve", {**base, **env}).start()


def wait_run(svc: Service, name: str, run_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = svc.http.get(f"/api/mirrors/{name}/runs").json()["runs"]
        run = next(r for r in runs if r["id"] == run_id)
        if run["state"] in ("FINISHED", "FAILED"):
            return dict(run)
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} not finished: {run}")


def test_routes_store_run_and_delete(
    tmp_path: Path, pg_url: str, src_reg: RegistryServer, open_reg: RegistryServer, repo: str
) -> None:
    http = src_reg.http()
    for tag in ("v1", "v2", "other"):
        images.image().push(http, repo, tag)
    prefix = f"svc-{secrets.token_hex(3)}"
    svc = service(tmp_path, pg_url)
    try:
        targets = [f"{open_reg.host}/{prefix}", f"{open_reg.host}/{prefix}-b"]
        body = doc_yaml(src_reg, repo, targets, extra="    spool: true\n")  # its jobs spool (issue 19)
        r = svc.http.post("/api/mirrors", content=body, headers={"Content-Type": "application/yaml"})
        assert r.status_code == 201, r.text
        assert r.json() == {"status": "success", "msg": "Mirrors stored", "mirrors": ["app"]}
        listed = svc.http.get("/api/mirrors").json()["mirrors"]
        assert [m["name"] for m in listed] == ["app"]
        assert listed[0]["next_due"] is None
        shown = svc.http.get("/api/mirrors/app").json()
        assert shown["document"]["registries"][0]["password"] == "***"
        assert shown["document"]["mirrors"][0]["spool"] is True
        assert shown["document"]["mirrors"][0]["targets"] == [
            f"{open_reg.host}/{prefix}",
            f"{open_reg.host}/{prefix}-b",
        ]
        with psycopg.connect(pg_url) as conn:
            row = conn.execute("SELECT sealed, document::text FROM mirrors").fetchone()
        assert row is not None
        sealed, document = row
        assert PASSWORD.encode() not in bytes(sealed)
        assert PASSWORD not in document

        # plan: a dry run of the posted document, nothing stored
        r = svc.http.post("/api/mirrors/plan", content=body)
        assert r.status_code == 200, r.text
        plan = r.json()
        assert [i["tag"] for i in plan["mirrors"][0]["images"]] == ["v1", "v2"]
        assert plan["totals"]["copy"] == 4
        assert plan["totals"]["bytes"] > 0

        r = svc.http.post("/api/mirrors/app/run")
        assert r.status_code == 202, r.text
        run = wait_run(svc, "app", r.json()["id"])
        assert run["state"] == "FINISHED", run
        assert (run["images_selected"], run["copied"], run["up_to_date"], run["failed"]) == (2, 2, 0, 0)
        assert run["bytes"] > 0
        assert len(run["jobs"]) == 2
        assert run["finished_at"]
        job = svc.status(run["jobs"][0])
        assert job["value"] == "FINISHED" and job["mirror"] == {"name": "app", "run": run["id"]}
        assert job["spool"] is True
        for tag in ("v1", "v2"):
            for p in (prefix, f"{prefix}-b"):
                assert_same_image(http, repo, tag, open_reg.http(), f"{p}/{repo}", tag)
        with psycopg.connect(pg_url) as conn:
            row = conn.execute("SELECT request FROM jobs WHERE id = %s", (run["jobs"][0],)).fetchone()
        assert row is not None
        (request,) = row
        assert request["mirror"] == {"name": "app", "run": run["id"]}
        assert request["referrers"] is True
        assert request["spool"] is True

        # a second run: nothing to copy, no job
        r = svc.http.post("/api/mirrors/app/run")
        again = wait_run(svc, "app", r.json()["id"])
        assert (again["state"], again["images_selected"], again["up_to_date"], again["jobs"]) == ("FINISHED", 2, 2, [])
        runs = svc.http.get("/api/mirrors/app/runs").json()["runs"]
        assert [x["id"] for x in runs] == [again["id"], run["id"]]

        assert svc.http.delete("/api/mirrors/app").status_code == 200
        assert svc.http.get("/api/mirrors/app").status_code == 404
        assert svc.http.post("/api/mirrors/app/run").status_code == 404
        assert PASSWORD not in svc.output()
    finally:
        svc.stop()


BAD = [
    (
        "    tags:\n      allow: ['^v']\n",
        "    tags:\n      allow: ['^v']\n      colour: blue\n",
        "line 14: mirrors[0].tags.colour: unknown key",
    ),
    ("allow: ['^v']", "allow: ['(v']", "line 13: mirrors[0].tags.allow[0]: invalid regular expression"),
    ("allow: ['^v']", "semver: '>=1 <=<2'", "line 13: mirrors[0].tags.semver: invalid semver range"),
    (
        "${MIRROR_PASS}",
        "${NOT_SET_ANYWHERE}",
        "line 5: registries[0].password: environment variable NOT_SET_ANYWHERE is not set",
    ),
    (
        "  - name: app\n",
        "  - name: app\n    source: x.example/a\n    targets: [y.example]\n  - name: app\n",
        "line 12: mirrors[1].name: duplicate mirror name 'app'",
    ),
    ('targets: ["@all"]', 'targets: ["@all", "@all2"]', "unknown target group '@all2'"),
]


def test_bad_documents_are_400_naming_the_place_and_nothing_is_stored(
    tmp_path: Path, pg_url: str, src_reg: RegistryServer, open_reg: RegistryServer, repo: str
) -> None:
    svc = service(tmp_path, pg_url)
    try:
        good = doc_yaml(src_reg, repo, [open_reg.host])
        for old, new, expected in BAD:
            assert old in good, old
            r = svc.http.post("/api/mirrors", content=good.replace(old, new, 1))
            assert r.status_code == 400, (expected, r.text)
            assert r.json()["status"] == "error", (expected, r.json())
            assert expected in r.json()["msg"], (expected, r.json())
            r = svc.http.post("/api/mirrors/plan", content=good.replace(old, new, 1))
            assert r.status_code == 400
            assert expected in r.json()["msg"]
        # a target that is the source itself: a cycle with nothing to do
        r = svc.http.post("/api/mirrors", content=good.replace("  all: [", f"  all: [{src_reg.host}, ", 1))
        assert r.status_code == 400, r.json()
        assert "line 11: mirrors[0].targets:" in r.json()["msg"], r.json()
        assert "is the source itself: nothing to do" in r.json()["msg"]
        assert svc.http.get("/api/mirrors").json() == {"mirrors": []}
        r = svc.http.post("/api/mirrors", content=json.dumps({"version": 1, "mirrors": []}))
        assert r.status_code == 400
        assert "mirrors" in r.json()["msg"]
    finally:
        svc.stop()


def test_interval_fires_once_per_interval_across_replicas_and_spreads_jobs(
    tmp_path: Path, pg_url: str, src_reg: RegistryServer, open_reg: RegistryServer, repo: str
) -> None:
    http = src_reg.http()
    tags = [f"v{i}" for i in range(6)]
    for tag in tags:
        images.image([images.layer_bytes(300_000)]).push(http, repo, tag)
    prefix = f"sched-{secrets.token_hex(3)}"
    env = {"REGCAST_JOBS_IN_FLIGHT": "1", "REGCAST_POLL_INTERVAL": "0.1"}
    svc = service(tmp_path, pg_url, **env)
    procs: list[Process] = []
    proxies: list[TcpProxy] = []
    try:
        wenv = {**FAST, **env, "REGCAST_DATABASE_URL": pg_url, "REGCAST_SECRET_KEY": KEY}
        procs = [Process(["worker"], tmp_path / f"w{i}", wenv).start() for i in range(2)]
        for proc in procs:  # every process takes part from the first run on (slow starts under load)
            proc.wait_ready(timeout=120)
        interval = 3
        # a slow link to the source: each job takes about a second, long enough for every process to claim one
        slow = TcpProxy(src_reg.port, rate=400_000).start()
        proxies.append(slow)
        body = doc_yaml(src_reg, repo, [f"{open_reg.host}/{prefix}"], extra=f"    interval: {interval}s\n")
        body = body.replace(src_reg.host, f"127.0.0.1:{slow.port}")
        r = svc.http.post("/api/mirrors", content=body.replace("${MIRROR_USER}", "u").replace("${MIRROR_PASS}", "p"))
        assert r.status_code == 201, r.text
        deadline = time.monotonic() + 120
        runs: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            runs = svc.http.get("/api/mirrors/app/runs").json()["runs"]
            if len([x for x in runs if x["state"] in ("FINISHED", "SKIPPED")]) >= 4:
                break
            time.sleep(0.3)
        assert len(runs) >= 4, runs
        dues = [dt.datetime.fromisoformat(x["due_at"]) for x in runs]
        assert len(set(dues)) == len(dues), "a due time fired twice"
        ordered = sorted(dues)
        gaps = {(b - a).total_seconds() for a, b in itertools.pairwise(ordered)}
        assert gaps == {float(interval)}, gaps  # every due time on the grid fired, each once
        # once per interval: a missed due time could only be one skipped while the first run went on
        started = [x for x in runs if x["state"] != "SKIPPED"]
        assert started[-1]["copied"] == len(tags), started[-1]  # the first run copied everything
        assert all(x["copied"] == 0 and x["up_to_date"] == len(tags) for x in started[:-1])
        claimed: Counter[str] = (
            Counter()
        )  # the jobs of one run spread over the processes (their logs say who claimed what)
        for proc in [svc, *procs]:
            log = proc.output()
            claimed[proc.log.name] = sum(f"job {j}: claimed by" in log for j in started[-1]["jobs"])
        assert sum(claimed.values()) == len(tags), claimed
        assert len([n for n in claimed.values() if n]) >= 2, claimed
        with psycopg.connect(pg_url) as conn:
            keys = conn.execute("SELECT run_key, count(*) FROM mirror_runs GROUP BY run_key").fetchall()
        assert all(n == 1 for _k, n in keys)
        assert len(keys) == len(runs)
        for tag in tags:
            assert_same_image(http, repo, tag, open_reg.http(), f"{prefix}/{repo}", tag)
    finally:
        for p in procs:
            p.stop()
        svc.stop()
        for px in proxies:
            px.stop()


def test_a_docker_config_identity_token_reaches_the_mirror_jobs_sealed(
    tmp_path: Path, pg_url: str, src_reg: RegistryServer, token_reg: RegistryServer, repo: str
) -> None:
    """``docker login`` to ACR stores an ``identitytoken`` beside a placeholder user. The planner used it
    but the queued job carried only the placeholder, so every copy failed. The job's sealed auth carries
    it now; the stored job row, the status, the run and the log never show it."""
    ts = token_reg.token_server
    assert ts is not None
    identity = f"refresh-{secrets.token_hex(16)}"
    ts.refresh_tokens[identity] = next(iter(token_reg.users))
    placeholder = base64.b64encode(b"00000000-0000-0000-0000-000000000000:").decode()
    config = tmp_path / "docker-config-acr"
    config.mkdir()
    entry = {"auth": placeholder, "identitytoken": identity}
    (config / "config.json").write_text(json.dumps({"auths": {token_reg.host: entry}}))
    http = src_reg.http()
    images.image().push(http, repo, "v1")
    prefix = f"acr-{secrets.token_hex(3)}"
    svc = service(tmp_path, pg_url, DOCKER_CONFIG=str(config))
    try:
        body = f"""\
version: 1
mirrors:
  - name: acr
    source: {src_reg.host}/{repo}
    targets: [{token_reg.host}/{prefix}]
    tags: {{list: [v1]}}
"""
        r = svc.http.post("/api/mirrors", content=body, headers={"Content-Type": "application/yaml"})
        assert r.status_code == 201, r.text
        seen = len(ts.requests)
        r = svc.http.post("/api/mirrors/acr/run")
        assert r.status_code == 202, r.text
        run = wait_run(svc, "acr", r.json()["id"])
        assert run["state"] == "FINISHED", run
        (job_id,) = run["jobs"]
        assert_same_image(http, repo, "v1", token_reg.http(), f"{prefix}/{repo}", "v1")
        asked = ts.requests[seen:]
        assert {a.get("method") for a in asked} == {"POST"}  # the job too: never the placeholder's GET
        status = svc.http.get(f"/api/distribute/image/{job_id}")
        assert status.json()["value"] == "FINISHED"
        assert identity not in status.text
        assert identity not in svc.http.get("/api/mirrors/acr/runs").text
        with psycopg.connect(pg_url) as conn:
            row = conn.execute("SELECT row_to_json(jobs)::text, secrets FROM jobs WHERE id = %s", (job_id,)).fetchone()
            targets = conn.execute("SELECT row_to_json(t)::text FROM job_targets t WHERE job_id = %s", (job_id,))
            target_rows = " ".join(t for (t,) in targets.fetchall())
        assert row is not None
        stored, sealed = row
        assert identity not in stored
        assert sealed is not None
        assert identity.encode() not in bytes(sealed)
        assert identity not in target_rows
        assert identity not in svc.output()
    finally:
        svc.stop()


def test_a_run_with_one_target_registry_down_still_copies_to_the_others_and_fails_naming_it(
    tmp_path: Path, pg_url: str, src_reg: RegistryServer, open_reg: RegistryServer, repo: str
) -> None:
    http = src_reg.http()
    images.image().push(http, repo, "v1")
    prefix = f"svc-{secrets.token_hex(3)}"
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    svc = service(tmp_path, pg_url)
    try:
        body = doc_yaml(src_reg, repo, [f"{open_reg.host}/{prefix}", dead])
        assert svc.http.post("/api/mirrors", content=body).status_code == 201
        plan = svc.http.post("/api/mirrors/plan", content=body).json()
        (image,) = plan["mirrors"][0]["images"]
        assert [t["action"] for t in image["targets"]] == ["copy", "failed"]
        r = svc.http.post("/api/mirrors/app/run")
        assert r.status_code == 202, r.text
        run = wait_run(svc, "app", r.json()["id"])
        assert run["state"] == "FAILED", run
        assert (run["images_selected"], run["failed"], len(run["jobs"])) == (1, 1, 1), run  # was: no job at all
        assert f"v1: {dead}/{repo}: registry {dead}:" in run["error"], run
        assert_same_image(http, repo, "v1", open_reg.http(), f"{prefix}/{repo}", "v1")
    finally:
        svc.stop()
