"""Security: API tokens, listening rules, outbound guards, and no secret in any output."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.support import images
from tests.support.cli import regcast
from tests.support.clients import client_for
from tests.support.faults import FaultProxy, copy, proxy, via
from tests.support.hostile import HostileServer, serve
from tests.support.registry import RegistryServer, free_port
from tests.support.service import FAST, REGCAST, Service, basicauth
from tests.support.tokenserver import TokenServer

TOKENS = ("tok-alpha-0123456789abcdef", "tok-beta-fedcba9876543210")


def test_api_tokens_guard_every_route_but_health(
    tmp_path: Path, repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    token_file = tmp_path / "tokens"
    token_file.write_text(f"# comment\n{TOKENS[1]}\n")
    svc = Service(tmp_path, {"REGCAST_API_TOKENS": TOKENS[0], "REGCAST_API_TOKENS_FILE": str(token_file)}).start()
    try:
        images.image().push(src_reg.http(), repo, "v1")
        body = {
            "source": {"endpoint": src_reg.endpoint, "image": repo, "ref": "v1"},
            "targets": [{"endpoint": open_reg.endpoint}],
        }
        assert svc.http.get("/healthz").status_code == 200
        assert svc.http.get("/readyz").status_code == 200
        for method, path in [
            ("POST", "/api/distribute/image"),
            ("GET", "/api/distribute/image"),
            ("GET", "/api/distribute/image/x"),
            ("DELETE", "/api/distribute/image/x"),
            ("GET", "/docs"),
            ("GET", "/openapi.json"),
        ]:
            for headers in ({}, {"Authorization": "Bearer wrong-token"}, {"Authorization": f"Basic {TOKENS[0]}"}):
                r = svc.http.request(method, path, headers=headers, json=body)
                assert r.status_code == 401, (method, path, headers)
                assert r.json() == {"status": "error", "msg": "unauthorized: send Authorization: Bearer <token>"}
        for token in TOKENS:
            r = svc.http.post("/api/distribute/image", json=body, headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 201
        assert "API authentication on (2 token(s))" in svc.output()
        assert TOKENS[0] not in svc.output()
        assert TOKENS[1] not in svc.output()
    finally:
        svc.stop()


def test_serve_refuses_public_address_without_tokens(tmp_path: Path) -> None:
    r = subprocess.run(
        [REGCAST, "serve", "--host", "0.0.0.0", "--port", str(free_port())],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 2
    assert "refusing to serve on 0.0.0.0 without authentication" in r.stderr


def test_allow_list_and_metadata_endpoints_refused(
    tmp_path: Path, repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    images.image().push(src_reg.http(), repo, "v1")
    svc = Service(
        tmp_path, {"REGCAST_ALLOWED_REGISTRIES": f"127.0.0.1:{src_reg.port}, 127.0.0.1:{open_reg.port}"}
    ).start()
    try:
        src = {"endpoint": src_reg.endpoint, "image": repo, "ref": "v1"}
        cases: list[tuple[dict[str, Any], str]] = [
            (
                {"targets": [{"endpoint": open_reg.endpoint}, {"endpoint": "http://127.0.0.1:1/v2"}]},
                "targets.1.endpoint: registry 127.0.0.1:1 is not in REGCAST_ALLOWED_REGISTRIES",
            ),
            (
                {"targets": [{"endpoint": "http://169.254.169.254/v2"}]},
                "targets.0.endpoint: registry 169.254.169.254 is a link-local/metadata address",
            ),
            (
                {"targets": [{"endpoint": open_reg.endpoint, "auth": {"url": "http://169.254.169.254/token"}}]},
                "targets.0.auth.url: 169.254.169.254 is a link-local/metadata address",
            ),
        ]
        for extra, msg in cases:
            r = svc.http.post("/api/distribute/image", json={"source": src, **extra})
            assert r.status_code == 400
            assert r.json()["msg"] == f"Failed to parse data: {msg}"
        r = svc.http.post("/api/distribute/image", json={"source": src, "targets": [{"endpoint": open_reg.endpoint}]})
        assert r.status_code == 201
    finally:
        svc.stop()
    done = subprocess.run(
        [REGCAST, "copy", f"{src_reg.host}/{repo}:v1", f"127.0.0.1:1/{repo}:v1"],
        capture_output=True,
        text=True,
        env={**FAST, "REGCAST_ALLOWED_REGISTRIES": f"127.0.0.1:{src_reg.port}", "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert done.returncode == 2
    assert "not in REGCAST_ALLOWED_REGISTRIES" in done.stderr


@pytest.mark.parametrize("scenario", ["evil_location", "evil_redirect"])
def test_locations_and_redirects_to_metadata_refused(
    scenario: str, faults: list[FaultProxy], repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    from regcast.transfer.engine import Target
    from regcast.transfer.progress import TargetState
    from regcast.transfer.remote import RegistryRepository

    images.image().push(src_reg.http(), repo, "v1")
    if scenario == "evil_location":
        p = proxy(faults, open_reg, scenario)
        result = copy(client_for(src_reg), repo, [Target("t", RegistryRepository(via(p), repo), "v1")])
    else:
        p = proxy(faults, src_reg, scenario)
        from tests.support.clients import target

        result = copy(via(p), repo, [target(open_reg, repo, "v1")])
    t = result.targets[0]
    assert t.state is TargetState.FAILED
    assert "169.254.169.254 is a link-local/metadata address" in (t.error or "")
    assert p.events["evil"] >= 1


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_no_secret_in_any_output(
    log_format: str,
    tmp_path: Path,
    repo: str,
    src_reg: RegistryServer,
    basic_reg: RegistryServer,
    token_reg: RegistryServer,
    ca_bundle: Path,
) -> None:
    """Passwords, seed auth headers/json and tokens appear in no route, log, database or CLI output."""
    secrets = ["Sekr1t-basic-PW", "Sekr1t-header-VALUE", "Sekr1t-json-VALUE", "Sekr1t-hook-PATH", "Sekr1t-hook-KEY"]
    ts = TokenServer(tmp_path, {"eve": "x"}).start()  # refuses these credentials; its answer must not leak
    images.image().push(src_reg.http(), repo, "v1")
    svc = Service(
        tmp_path, {"REGCAST_CA_BUNDLE": str(ca_bundle), "REGCAST_LOG_FORMAT": log_format, "REGCAST_NOTIFY_BACKOFF": "0"}
    ).start()
    try:
        ids = [
            svc.submit(
                {
                    "source": {"endpoint": src_reg.endpoint, "image": repo, "ref": "v1"},
                    "targets": [
                        {"endpoint": basic_reg.endpoint, "auth": basicauth(basic_reg, secrets[0])},
                        {
                            "endpoint": token_reg.endpoint,
                            "auth": {
                                "url": f"{ts.realm}?scope=x",
                                "token_type": "Bearer",
                                "header": {"Authorization": f"Basic {secrets[1]}"},
                                "json": {"password": secrets[2]},
                            },
                        },
                        {"endpoint": token_reg.endpoint, "image": f"{repo}/ok", "auth": basicauth(token_reg)},
                    ],
                    # nothing listens on port 1: every delivery fails, and its errors are shown and logged
                    "notify": {"url": f"http://127.0.0.1:1/hooks/{secrets[3]}", "secret": secrets[4]},
                }
            ),
        ]
        sts = [svc.wait(i) for i in ids]
        sts = [svc.wait_for(i, lambda s: len(s["notifications"]) == 5) for i in ids]  # REGCAST_NOTIFY_ATTEMPTS
        assert sts[0]["value"] == "FAILED"
        assert sts[0]["targets"][2]["state"] == "FINISHED"
        outputs = [json.dumps(st) for st in sts]
        outputs += [svc.http.get("/api/distribute/image").text, svc.http.delete(f"/api/distribute/image/{ids[0]}").text]
        outputs += [svc.http.get("/metrics").text, svc.output()]
        env = {"REGCAST_DATABASE_URL": f"sqlite:///{tmp_path / 'regcast.db'}", "PATH": "/usr/bin:/bin"}
        for args in (["jobs"], ["jobs", ids[0]], ["jobs", "--json"], ["jobs", ids[0], "--json"]):
            r = subprocess.run([REGCAST, *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
            assert r.returncode == 0, r.stderr
            outputs.append(r.stdout + r.stderr)
        stored = b"".join(f.read_bytes() for f in tmp_path.glob("regcast.db*"))
    finally:
        svc.stop()
        ts.stop()
    r = subprocess.run(
        [
            REGCAST,
            "copy",
            "--ca-bundle",
            str(ca_bundle),
            "--dest-creds",
            f"alice:{secrets[0]}",
            f"{src_reg.host}/{repo}:v1",
            f"{basic_reg.host}/{repo}:v1",
        ],
        capture_output=True,
        text=True,
        env={**FAST, "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    outputs.append(r.stdout + r.stderr)
    for secret in [*secrets, *basic_reg.users.values(), *token_reg.users.values()]:
        for out in outputs:
            assert secret not in out
        assert secret.encode() not in stored
    assert not any("Authorization: " in o or "Bearer ey" in o for o in outputs)


@pytest.mark.parametrize("command", [["jobs"], ["status", "some-job"], ["cancel", "some-job"]])
def test_a_server_url_never_shows_its_credentials(command: list[str]) -> None:
    """``--server http://user:password@host``: sent as Basic auth, never shown (the password was echoed in the
    "unreachable" line, and ``-v`` printed httpx's request line with it); a query's token is hidden."""
    port = free_port()  # nothing listens: the "unreachable" line is the one that showed the URL
    userinfo = regcast("-v", *command, "--server", f"http://ops:Sekr1t-server-PW@127.0.0.1:{port}", timeout=60)
    assert userinfo.returncode == 1
    assert (
        userinfo.stderr.splitlines()[-1] == f"error: regcast service http://127.0.0.1:{port} unreachable (ConnectError)"
    )
    query = regcast("-v", *command, "--server", f"http://127.0.0.1:{port}/?token=Sekr1t-server-TOKEN", timeout=60)
    assert query.returncode == 1
    shown = f"http://127.0.0.1:{port}/?token=REDACTED"
    assert query.stderr.splitlines()[-1] == f"error: regcast service {shown} unreachable (ConnectError)"
    assert "Sekr1t" not in userinfo.stdout + userinfo.stderr + query.stdout + query.stderr


def test_schemathesis_finds_no_server_error_or_undocumented_status(tmp_path: Path, src_reg: RegistryServer) -> None:
    """Fuzz every route from the service's own OpenAPI document (tokens on, outbound limited to loopback)."""
    import shutil
    import sys

    st = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert st, "schemathesis is a test dependency"
    svc = Service(
        tmp_path, {"REGCAST_API_TOKENS": TOKENS[0], "REGCAST_ALLOWED_REGISTRIES": f"127.0.0.1:{src_reg.port}"}
    ).start()
    try:
        r = subprocess.run(
            [
                st,
                "run",
                f"{svc.url}/openapi.json",
                "--checks",
                "not_a_server_error,status_code_conformance",
                "--max-examples",
                "40",
                "--seed",
                "20261128",
                "-H",
                f"Authorization: Bearer {TOKENS[0]}",
            ],
            capture_output=True,
            text=True,
            timeout=240,
            stdin=subprocess.DEVNULL,
        )
        log = svc.output()
    finally:
        svc.stop()
    assert r.returncode == 0, r.stdout[-3000:]
    assert "Traceback" not in log


def test_a_server_behind_a_basic_auth_proxy_is_reached_with_the_urls_credentials(hostile: list[HostileServer]) -> None:
    """A service behind a proxy asking for Basic: ``--server https://user:password@host`` sends them so."""
    wanted = "Basic " + base64.b64encode(b"ops:p@ss/w:rd").decode()
    status = {"id": "j1", "value": "FINISHED", "source": {"endpoint": "http://r/v2", "image": "a", "ref": "v1"}}

    async def answer(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != wanted:
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="ops"'})
        return web.json_response({**status, "targets": []})

    server = serve(hostile, answer)
    r = regcast("-v", "status", "j1", "--json", "--server", f"http://ops:p%40ss%2Fw%3Ard@127.0.0.1:{server.port}")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["value"] == "FINISHED"
    assert "p@ss" not in r.stderr and "p%40ss" not in r.stderr
    for bad, why in (
        (f"ops:Sekr1t@127.0.0.1:{server.port}", "write the scheme too"),  # it would go out over plain HTTP
        (f"http://ops:Sek/r1t@127.0.0.1:{server.port}", "percent-encoded"),  # the / split the URL there
        (f"http://@127.0.0.1:{server.port}", "needs a user"),
    ):
        r = regcast("status", "j1", "--server", bad)
        assert r.returncode == 1 and why in r.stderr, r.stderr
        assert "Sek" not in r.stderr and "r1t" not in r.stderr
