"""Operators' view over real HTTP: metrics, JSON logs, signed notifications, retry, filters, remote CLI."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import images
from tests.support.registries import BASIC_USERS, Registries
from tests.support.registry import RegistryServer, free_port
from tests.support.service import REGCAST, Service, basicauth, source
from tests.support.verify import assert_same_image
from tests.support.webhook import WebhookReceiver

TOKEN = "ops-api-token-0123456789"
HOOK_SECRET = "hook-s3cret-value"
LOG_FIELDS = {"time", "level", "logger", "event", "job_id", "target", "registry", "bytes", "error"}


def _service(directory: Path, env: dict[str, str]) -> Service:
    svc = Service(directory, {"REGCAST_API_TOKENS": TOKEN, **env}).start()
    svc.http.headers["Authorization"] = f"Bearer {TOKEN}"
    return svc


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, ca_bundle: Path) -> Iterator[Service]:
    svc = _service(
        tmp_path_factory.mktemp("ops"),
        {"REGCAST_CA_BUNDLE": str(ca_bundle), "REGCAST_NOTIFY_BACKOFF": "0.1", "REGCAST_LOG_FORMAT": "json"},
    )
    yield svc
    svc.stop()


def metrics(svc: Service) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = svc.http.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_after_a_known_job(
    tmp_path: Path, ca_bundle: Path, repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    svc = _service(tmp_path / "svc", {"REGCAST_CA_BUNDLE": str(ca_bundle)})
    try:
        assert svc.http.get("/metrics", headers={"Authorization": ""}).status_code == 401
        img = images.image([images.layer_bytes(300_000), images.layer_bytes(200_000)]).push(src_reg.http(), repo, "v1")
        size = sum(len(b) for b in img.blobs.values())
        job = svc.submit({"source": source(src_reg, repo), "targets": [{"endpoint": open_reg.endpoint}]})
        assert svc.wait(job)["value"] == "FINISHED"
        m = metrics(svc)
        assert m[("regcast_jobs_finished_total", (("outcome", "finished"),))] == 1
        assert m[("regcast_jobs", (("state", "FINISHED"),))] == 1
        assert m[("regcast_jobs", (("state", "QUEUED"),))] == 0
        assert m[("regcast_queue_depth_jobs", ())] == 0
        assert m[("regcast_transfers_in_flight", ())] == 0
        assert m[("regcast_target_written_bytes_total", (("registry", open_reg.host),))] == size
        assert m[("regcast_source_read_bytes_total", (("registry", src_reg.host),))] == size
        assert m[("regcast_blobs_total", (("outcome", "uploaded"),))] == 3
        assert m[("regcast_job_duration_seconds_count", (("outcome", "finished"),))] == 1
        assert m[("regcast_target_duration_seconds_count", (("state", "FINISHED"),))] == 1
        key = (
            "regcast_registry_requests_total",
            (("method", "PUT"), ("registry", open_reg.host), ("status_class", "2xx")),
        )
        assert m[key] == 4  # 3 blob uploads + 1 manifest
        assert (
            m[("regcast_registry_request_duration_seconds_count", (("method", "PUT"), ("registry", open_reg.host)))]
            == 4
        )
    finally:
        svc.stop()


def test_metrics_public_needs_no_token(tmp_path: Path) -> None:
    svc = _service(tmp_path / "svc", {"REGCAST_METRICS_PUBLIC": "true"})
    try:
        r = svc.http.get("/metrics", headers={"Authorization": ""})
        assert r.status_code == 200
        assert "regcast_jobs_finished_total" in r.text
        assert svc.http.get("/api/distribute/image", headers={"Authorization": ""}).status_code == 401
    finally:
        svc.stop()


def _verify(secret: str, header: str, body: bytes) -> bool:
    """What the README tells a receiver to do."""
    parts = dict(p.split("=", 1) for p in header.split(","))
    expected = hmac.new(secret.encode(), parts["t"].encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts["v1"]) and abs(time.time() - int(parts["t"])) < 300


def test_notification_signed_retried_and_filtered(
    service: Service, repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    hook = WebhookReceiver(script=[500, 500]).start()
    try:
        img = images.image().push(src_reg.http(), repo, "v1")
        # first a job whose hook only wants "failed": it finishes, so nothing may be sent for it
        quiet = service.submit(
            {
                "source": source(src_reg, repo),
                "targets": [{"endpoint": open_reg.endpoint}],
                "notify": {"url": hook.url, "events": ["failed"], "secret": HOOK_SECRET},
            }
        )
        assert service.wait(quiet)["value"] == "FINISHED"
        job = service.submit(
            {
                "source": source(src_reg, repo),
                "targets": [{"endpoint": open_reg.endpoint, "image": f"{repo}/b"}],
                "notify": {"url": hook.url, "events": ["finished"], "secret": HOOK_SECRET},
            }
        )
        assert service.wait(job)["value"] == "FINISHED"
        got = hook.wait_for(3)
        assert [d.answered for d in got] == [500, 500, 200]
        for d in got:
            assert _verify(HOOK_SECRET, d.headers["x-regcast-signature"], d.body)
            assert not _verify("another-secret", d.headers["x-regcast-signature"], d.body)
            assert d.headers["x-regcast-event"] == "finished"
        body = json.loads(got[-1].body)
        assert body["id"] == job
        assert body["event"] == "finished"
        assert body["in_sync"] is True
        assert body["source_digest"] == img.digest
        assert body["targets"] == [
            {"endpoint": open_reg.endpoint, "image": f"{repo}/b", "ref": "v1", "state": "FINISHED", "reason": None}
        ]
        assert {json.loads(d.body)["id"] for d in got} == {job}  # the filtered job sent nothing
        st = service.wait_for(job, lambda s: any(n["delivered"] for n in s["notifications"]))
        assert [(n["attempt"], n["status"], n["delivered"]) for n in st["notifications"]] == [
            (1, 500, False),
            (2, 500, False),
            (3, 200, True),
        ]
        shown = json.dumps(st)
        assert HOOK_SECRET not in shown
        assert "regcast-secret-path" not in shown
        assert service.status(quiet)["notifications"] == []
    finally:
        hook.stop()


def test_notify_url_guarded_and_validated(service: Service, repo: str, src_reg: RegistryServer) -> None:
    base = {"source": source(src_reg, repo), "targets": [{"endpoint": src_reg.endpoint}]}
    r = service.http.post("/api/distribute/image", json={**base, "notify": {"url": "ftp://x"}})
    assert r.status_code == 400
    assert "notify.url" in r.json()["msg"]
    r = service.http.post("/api/distribute/image", json={**base, "notify": {"url": "http://169.254.169.254/"}})
    assert r.status_code == 400
    assert "notify.url" in r.json()["msg"]
    r = service.http.post("/api/distribute/image", json={**base, "notify": {"url": "http://x/", "events": ["done"]}})
    assert r.status_code == 400
    assert "notify.events" in r.json()["msg"]


def test_retry_reruns_only_failed_targets(
    service: Service, registries: Registries, repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    images.image().push(src_reg.http(), repo, "v1")
    port = free_port()  # nothing listens there yet
    later = f"http://127.0.0.1:{port}/v2"
    job = service.submit(
        {"source": source(src_reg, repo), "targets": [{"endpoint": open_reg.endpoint}, {"endpoint": later}]}
    )
    st = service.wait(job)
    assert st["value"] == "FAILED"
    assert [t["state"] for t in st["targets"]] == ["FINISHED", "FAILED"]
    assert f"127.0.0.1:{port}" in st["targets"][1]["error"]
    first_attempts = st["targets"][0]["attempts"]
    assert service.http.post(f"/api/distribute/image/{job}/retry").status_code == 202
    reg = RegistryServer("late", registries.base / f"late-{port}", port=port).start()
    registries.started.append(reg)
    st = service.wait(job)
    assert st["value"] == "FINISHED", st
    assert st["targets"][0]["attempts"] == first_attempts  # the finished target was not redone
    assert_same_image(src_reg.http(), repo, "v1", reg.http(), repo, "v1")
    r = service.http.post(f"/api/distribute/image/{job}/retry")
    assert r.status_code == 409
    assert "FINISHED" in r.json()["msg"]
    assert service.http.post("/api/distribute/image/nope/retry").status_code == 404


def test_list_filters_by_image_and_target(
    service: Service, repo: str, src_reg: RegistryServer, open_reg: RegistryServer, basic_reg: RegistryServer
) -> None:
    images.image().push(src_reg.http(), repo, "v1")
    a = service.submit({"source": source(src_reg, repo), "targets": [{"endpoint": open_reg.endpoint}]})
    b = service.submit(
        {
            "source": source(src_reg, repo),
            "targets": [{"endpoint": basic_reg.endpoint, "auth": basicauth(basic_reg), "image": f"{repo}-renamed"}],
        }
    )
    service.wait(a)
    service.wait(b)

    def ids(**params: str) -> set[str]:
        r = service.http.get("/api/distribute/image", params={**params, "limit": "500"})
        assert r.status_code == 200
        return {j["id"] for j in r.json()["jobs"]}

    assert {a, b} <= ids(image=repo)
    assert ids(image=f"{repo}-renamed") == {b}
    assert a in ids(target=open_reg.host)
    assert b not in ids(target=open_reg.host)
    assert ids(target=basic_reg.host, image=repo) == {b}
    assert ids(image="no-such-image-anywhere") == set()


def test_json_logs_every_field_and_no_secret(
    service: Service, repo: str, src_reg: RegistryServer, basic_reg: RegistryServer
) -> None:
    images.image().push(src_reg.http(), repo, "v1")
    ok = service.submit(
        {"source": source(src_reg, repo), "targets": [{"endpoint": basic_reg.endpoint, "auth": basicauth(basic_reg)}]}
    )
    bad = service.submit(
        {
            "source": source(src_reg, repo),
            "targets": [
                {"endpoint": basic_reg.endpoint, "auth": basicauth(basic_reg, "wrong-Pa55word"), "image": f"{repo}/x"}
            ],
        }
    )
    assert service.wait(ok)["value"] == "FINISHED"
    assert service.wait(bad)["value"] == "FAILED"
    lines = [ln for ln in service.output().splitlines() if ln.strip()]
    records = [json.loads(ln) for ln in lines]  # every line is one JSON object
    for rec in records:
        assert set(rec) >= LOG_FIELDS, rec
    done = [r for r in records if r["job_id"] == ok and r["target"] == basic_reg.endpoint]
    assert done
    assert done[-1]["registry"] == basic_reg.host
    assert done[-1]["bytes"] > 0
    assert done[-1]["error"] is None
    failed = [r for r in records if r["job_id"] == bad and r["target"] and r["error"]]
    assert failed
    assert "401" in failed[-1]["error"]
    assert failed[-1]["registry"] == basic_reg.host
    text = service.output()
    for secret in [*BASIC_USERS.values(), "wrong-Pa55word", TOKEN, HOOK_SECRET, "regcast-secret-path"]:
        assert secret not in text


def _cli(*args: str, env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [REGCAST, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
    )


def test_remote_submit_passes_referrer_and_spool_choices(
    service: Service, repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    images.image().push(src_reg.http(), repo, "v1")
    env = {"REGCAST_SERVER": service.url, "REGCAST_API_TOKEN": TOKEN}
    dst = f"{open_reg.host}/{repo}/choices:v1"
    r = _cli("submit", f"{src_reg.host}/{repo}:v1", dst, "--no-referrers", "--spool", "--wait", env=env)
    assert r.returncode == 0, r.stderr
    st = json.loads(_cli("status", r.stdout.splitlines()[0].strip(), "--json", env=env).stdout)
    assert (st["referrers"], st["referrer_types"], st["spool"]) == (False, None, True)
    typed = "application/vnd.dev.cosign.artifact.sig.v1+json"
    r = _cli("submit", f"{src_reg.host}/{repo}:v1", dst, "--referrer-type", typed, "--no-spool", "--wait", env=env)
    assert r.returncode == 0, r.stderr
    st = json.loads(_cli("status", r.stdout.splitlines()[0].strip(), "--json", env=env).stdout)
    assert (st["referrers"], st["referrer_types"], st["spool"]) == (True, [typed], False)
    r = _cli("submit", f"{src_reg.host}/{repo}:v1", dst, "--wait", env=env)  # nothing asked: nothing sent
    st = json.loads(_cli("status", r.stdout.splitlines()[0].strip(), "--json", env=env).stdout)
    assert (st["referrers"], st["referrer_types"], st["spool"]) == (True, None, None)


def test_remote_cli(service: Service, repo: str, src_reg: RegistryServer, open_reg: RegistryServer) -> None:
    img = images.image().push(src_reg.http(), repo, "v1")
    env = {"REGCAST_SERVER": service.url, "REGCAST_API_TOKEN": TOKEN, "REGCAST_PROGRESS_INTERVAL": "0.2"}
    dst = f"{open_reg.host}/{repo}/remote:prod"
    r = _cli("submit", f"{src_reg.host}/{repo}:v1", dst, "--wait", env=env)
    assert r.returncode == 0, r.stderr
    job = r.stdout.splitlines()[0].strip()
    assert f"finished {open_reg.endpoint} {repo}/remote:prod" in r.stdout
    assert f"progress {open_reg.endpoint} {repo}/remote:prod FINISHED" in r.stderr  # not a terminal: lines
    assert_same_image(src_reg.http(), repo, "v1", open_reg.http(), f"{repo}/remote", "prod")
    watched = _cli("status", job, "--watch", env=env)
    assert watched.returncode == 0, watched.stderr
    assert f"progress {open_reg.endpoint} {repo}/remote:prod FINISHED" in watched.stderr
    st = _cli("status", job, "--json", env=env)
    assert st.returncode == 0
    assert json.loads(st.stdout)["source_digest"] == img.digest
    listed = _cli("jobs", "--json", "--limit", "500", env=env)
    assert listed.returncode == 0
    assert job in {j["id"] for j in json.loads(listed.stdout)["jobs"]}
    cancel = _cli("cancel", job, env=env)
    assert cancel.returncode == 1
    assert "409" in cancel.stderr
    assert "already FINISHED" in cancel.stderr
    no_token = _cli("status", job, env={**env, "REGCAST_API_TOKEN": ""})
    assert no_token.returncode == 1
    assert "401" in no_token.stderr
    nowhere = _cli("status", job, "--server", f"http://127.0.0.1:{free_port()}", env=env)
    assert nowhere.returncode == 1
    assert "unreachable" in nowhere.stderr
    assert "Traceback" not in nowhere.stderr


def test_copy_prints_progress_lines_when_not_a_terminal(
    repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    images.image([images.layer_bytes(1_000_000)]).push(src_reg.http(), repo, "v1")
    dst = f"{open_reg.host}/{repo}:v1"
    r = _cli("copy", f"{src_reg.host}/{repo}:v1", dst, env={"REGCAST_PROGRESS_INTERVAL": "0.05"})
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("progress ")]
    assert lines
    assert lines[-1].startswith(f"progress {dst} FINISHED")
    assert lines[-1].endswith("(100%)")
    assert "\x1b[" not in r.stderr  # no terminal escapes in a CI log


def test_dashboard_assets_served_open(service: Service) -> None:
    r = service.http.get("/", headers={"Authorization": ""})
    assert r.status_code == 200
    assert 'src="/ui/app.js"' in r.text
    assert "http" not in r.text.split("<body")[0].replace('content="width', "")
    for asset in ("/ui/app.js", "/ui/style.css"):
        assert service.http.get(asset, headers={"Authorization": ""}).status_code == 200
    assert service.http.get("/ui/nope.js", headers={"Authorization": ""}).status_code == 404
    assert service.http.get("/api/distribute/image", headers={"Authorization": ""}).status_code == 401


def test_sync_prints_progress_lines_when_not_a_terminal(
    tmp_path: Path, repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    images.image([images.layer_bytes(500_000)]).push(src_reg.http(), repo, "v1")
    doc = tmp_path / "mirrors.yaml"
    doc.write_text(
        f"version: 1\nmirrors:\n  - name: ci\n    source: {src_reg.host}/{repo}\n"
        f"    targets: ['{open_reg.host}/ci']\n    tags:\n      list: [v1]\n"
    )
    r = _cli("sync", str(doc), env={"REGCAST_PROGRESS_INTERVAL": "0.05"})
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("progress ")]
    assert lines, r.stderr
    assert lines[-1].startswith(f"progress {src_reg.host}/{repo}:v1 -> ")
    assert " FINISHED " in lines[-1]
    assert lines[-1].endswith("(100%)")
    assert "\x1b[" not in r.stderr
    assert_same_image(src_reg.http(), repo, "v1", open_reg.http(), f"ci/{repo}", "v1")


def test_mirror_run_notification(
    service: Service, repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    hook = WebhookReceiver(script=[503]).start()
    try:
        images.image().push(src_reg.http(), repo, "v1")
        name = "hooked-" + repo.rsplit("-", 1)[-1]
        doc = {
            "version": 1,
            "mirrors": [
                {
                    "name": name,
                    "source": f"{src_reg.host}/{repo}",
                    "targets": [f"{open_reg.host}/hooked"],
                    "tags": {"list": ["v1"]},
                    "notify": {"url": hook.url, "events": ["finished"], "secret": HOOK_SECRET},
                }
            ],
        }
        r = service.http.post("/api/mirrors", json=doc)
        assert r.status_code == 201, r.text
        shown = service.http.get(f"/api/mirrors/{name}").text
        assert HOOK_SECRET not in shown
        assert "regcast-secret-path" not in shown
        r = service.http.post(f"/api/mirrors/{name}/run")
        assert r.status_code == 202, r.text
        run_id = r.json()["id"]
        got = hook.wait_for(2)
        assert [d.answered for d in got] == [503, 200]
        assert all(_verify(HOOK_SECRET, d.headers["x-regcast-signature"], d.body) for d in got)
        body = json.loads(got[-1].body)
        assert body["event"] == "finished"
        assert body["mirror"] == name
        assert body["in_sync"] is True
        assert body["run"]["id"] == run_id
        assert body["run"]["copied"] == 1
        assert_same_image(src_reg.http(), repo, "v1", open_reg.http(), f"hooked/{repo}", "v1")
    finally:
        hook.stop()


def test_a_mirror_run_with_nothing_to_copy_is_notified_once(
    service: Service, repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    """A run whose every image is up to date queues no job and ends while planning: it still goes
    through ``MirrorService.settle`` to the mirror's hook, once, with its final state."""
    hook = WebhookReceiver().start()
    try:
        images.image().push(src_reg.http(), repo, "v1")
        name = "quiet-" + repo.rsplit("-", 1)[-1]
        notify = {"url": hook.url, "events": ["finished", "failed"], "secret": HOOK_SECRET}
        target = f"{open_reg.host}/quiet"
        doc = {
            "version": 1,
            "mirrors": [{"name": name, "source": f"{src_reg.host}/{repo}", "targets": [target], "notify": notify}],
        }
        assert service.http.post("/api/mirrors", json=doc).status_code == 201
        runs = []
        for expected in (1, 2, 3):  # the first copies; the next two find nothing changed
            r = service.http.post(f"/api/mirrors/{name}/run")
            assert r.status_code == 202, r.text
            runs.append(r.json()["id"])
            got = hook.wait_for(expected)
        assert_same_image(src_reg.http(), repo, "v1", open_reg.http(), f"quiet/{repo}", "v1")
        bodies = [json.loads(d.body) for d in got]
        assert [b["run"]["id"] for b in bodies] == runs  # one delivery per run, none twice
        assert all(_verify(HOOK_SECRET, d.headers["x-regcast-signature"], d.body) for d in got)
        for body in bodies[1:]:
            assert body["event"] == "finished"
            assert body["in_sync"] is True
            assert body["run"]["state"] == "FINISHED"
            assert body["run"]["jobs"] == []  # nothing to copy: no job queued
            assert body["run"]["up_to_date"] == 1
            assert body["run"]["finished_at"] is not None
        shown = service.http.get(f"/api/mirrors/{name}/runs").json()["runs"]
        assert [(x["id"], x["state"]) for x in shown] == [(i, "FINISHED") for i in reversed(runs)]
        assert len(hook.deliveries) == 3
    finally:
        hook.stop()


def test_service_wide_hook_and_retention(
    tmp_path: Path, repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    """REGCAST_NOTIFY_URL catches a job that asked for nothing; REGCAST_JOB_RETENTION purges it at the next start."""
    hook = WebhookReceiver().start()
    directory = tmp_path / "svc"
    env = {"REGCAST_NOTIFY_URL": hook.url, "REGCAST_NOTIFY_SECRET": HOOK_SECRET, "REGCAST_NOTIFY_EVENTS": "finished"}
    svc = _service(directory, env)
    try:
        images.image().push(src_reg.http(), repo, "v1")
        job = svc.submit({"source": source(src_reg, repo), "targets": [{"endpoint": open_reg.endpoint}]})
        assert svc.wait(job)["value"] == "FINISHED"
        got = hook.wait_for(1)
        assert json.loads(got[0].body)["id"] == job
        assert _verify(HOOK_SECRET, got[0].headers["x-regcast-signature"], got[0].body)
        st = svc.wait_for(job, lambda s: bool(s["notifications"]))
        assert st["notifications"][0]["origin"] == "service"
    finally:
        svc.stop()
        hook.stop()
    kept = _service(directory, {"REGCAST_JOB_RETENTION": "30d"})
    try:
        assert kept.status(job)["value"] == "FINISHED"
    finally:
        kept.stop()
    purged = _service(directory, {"REGCAST_JOB_RETENTION": "1s"})
    try:
        deadline = time.monotonic() + 60
        while purged.http.get(f"/api/distribute/image/{job}").status_code != 404 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert purged.http.get(f"/api/distribute/image/{job}").status_code == 404
    finally:
        purged.stop()


def _notified_once(hook: WebhookReceiver, job: str, state: str, svc: Service) -> None:
    """The job's end, signed, was delivered to the hook, and counted once in the service's metrics."""
    [got] = hook.wait_for(1)
    sent = json.loads(got.body)
    assert (sent["id"], sent["state"], sent["event"]) == (job, state, state.lower())
    assert _verify(HOOK_SECRET, got.headers["x-regcast-signature"], got.body)
    assert f'regcast_jobs_finished_total{{outcome="{state.lower()}"}} 1.0' in svc.http.get("/metrics").text


def test_a_job_the_reaper_gives_up_on_is_notified_and_counted(
    tmp_path: Path, repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    """Its worker killed on its last attempt, the job ends FAILED in the reaper, not in a worker's
    conclusion: the 'failed' hook and the job counter used to miss it."""
    from tests.support.proxy import TcpProxy

    hook = WebhookReceiver().start()
    slow = TcpProxy(src_reg.port, rate=4 * 1024 * 1024).start()
    images.image([os.urandom(8 * 1024 * 1024) for _ in range(2)]).push(src_reg.http(), repo, "v1")
    env = {
        "REGCAST_NOTIFY_URL": hook.url,
        "REGCAST_NOTIFY_SECRET": HOOK_SECRET,
        "REGCAST_NOTIFY_EVENTS": "failed",
        "REGCAST_MAX_ATTEMPTS": "1",
    }
    first = _service(tmp_path, env)
    second = None
    try:
        body = {"source": {**source(src_reg, repo), "endpoint": f"http://127.0.0.1:{slow.port}/v2"}}
        job = first.submit({**body, "targets": [{"endpoint": open_reg.endpoint}]})
        first.wait_for(job, lambda s: s["value"] == "RUNNING" and s["targets"][0]["bytes_done"] > 0)
        first.kill()
        second = _service(tmp_path, env)
        st = second.wait(job)
        assert st["value"] == "FAILED"
        assert "gave up after 1 attempts" in st["error"]
        _notified_once(hook, job, "FAILED", second)
    finally:
        first.stop()
        if second is not None:
            second.stop()
        slow.stop()
        hook.stop()


def test_a_queued_job_cancelled_is_notified(tmp_path: Path, repo: str, src_reg: RegistryServer) -> None:
    """A queued job is cancelled by the API at once, no worker concluding it: its 'cancelled' hook
    and the job counter used to miss it."""
    hook = WebhookReceiver().start()
    env = {"REGCAST_NOTIFY_URL": hook.url, "REGCAST_NOTIFY_SECRET": HOOK_SECRET, "REGCAST_NOTIFY_EVENTS": "cancelled"}
    svc = Service(tmp_path, {"REGCAST_API_TOKENS": TOKEN, **env}, args=["--no-workers"]).start()
    svc.http.headers["Authorization"] = f"Bearer {TOKEN}"
    try:
        images.image().push(src_reg.http(), repo, "v1")
        job = svc.submit({"source": source(src_reg, repo), "targets": [{"endpoint": "http://127.0.0.1:1/v2"}]})
        r = svc.http.delete(f"/api/distribute/image/{job}")
        assert (r.status_code, r.json()["value"]) == (200, "CANCELLED")
        _notified_once(hook, job, "CANCELLED", svc)
    finally:
        svc.stop()
        hook.stop()
