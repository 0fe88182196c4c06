"""Issue 10 items 5-10: browsers, secrets in auth blocks, realms on other origins, hostile sizes,
control characters and the inputs that used to answer 500. Hostile servers run on loopback and
the service runs jailed to loopback (``JAIL_ENV``)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from regcast.registry import mediatypes as mt
from tests.support import images
from tests.support.hostile import HostileServer, challenge, registry_serving, serve
from tests.support.loopback import JAIL_ENV, StaticResolver
from tests.support.registry import RegistryServer
from tests.support.service import Service

SECRETS = ["Sekr1t-api-KEY-0001", "Sekr1t-client-SECRET-02", "Sekr1t-header-VALUE-003"]


@pytest.fixture
def svc(tmp_path: Path) -> Iterator[Service]:
    s = Service(tmp_path, JAIL_ENV).start()
    yield s
    s.stop()


def body_for(src: str, repo: str = "x/y", **source: Any) -> dict[str, Any]:
    return {"source": {"endpoint": src, "image": repo, "ref": "v1", **source}, "targets": [{"endpoint": src}]}


def test_cross_site_posts_and_rebinding_hosts_are_refused(
    svc: Service, src_reg: RegistryServer, repo: str, tmp_path: Path
) -> None:
    images.image().push(src_reg.http(), repo, "v1")
    raw = json.dumps(body_for(src_reg.endpoint, repo))
    csrf = svc.http.post(
        "/api/distribute/image",
        content=raw,
        headers={"Content-Type": "text/plain", "Origin": "http://evil.example"},
    )
    assert csrf.status_code == 403 and "cross-origin" in csrf.json()["msg"]
    for origin in ("null", f"http://127.0.0.1:{svc.port}.evil.example"):
        assert svc.http.post("/api/distribute/image", content=raw, headers={"Origin": origin}).status_code == 403
    rebound = svc.http.get("/api/distribute/image", headers={"Host": "rebind.evil.example"})
    assert rebound.status_code == 403 and "Host not allowed" in rebound.json()["msg"]
    assert svc.http.get("/healthz", headers={"Host": f"rebind.evil.example:{svc.port}"}).status_code == 403
    # curl: no Origin, an IP Host; a page of the service itself: its own Origin; localhost names
    assert svc.http.post("/api/distribute/image", content=raw).status_code == 201
    own = svc.http.post("/api/distribute/image", content=raw, headers={"Origin": svc.url})
    assert own.status_code == 201
    assert svc.http.get("/healthz", headers={"Host": f"localhost:{svc.port}"}).status_code == 200
    assert svc.http.get("/api/distribute/image").json()["total"] == 2  # the refused ones created nothing


def test_listed_origins_and_hosts_and_token_mode(tmp_path: Path) -> None:
    env = {**JAIL_ENV, "REGCAST_ALLOWED_ORIGINS": "https://ui.corp.example", "REGCAST_ALLOWED_HOSTS": "regcast.corp"}
    s = Service(tmp_path / "a", env).start()
    try:
        assert s.http.get("/api/distribute/image", headers={"Origin": "https://ui.corp.example"}).status_code == 200
        assert s.http.get("/api/distribute/image", headers={"Host": f"regcast.corp:{s.port}"}).status_code == 200
        assert s.http.get("/api/distribute/image", headers={"Host": "other.corp"}).status_code == 403
    finally:
        s.stop()
    t = Service(tmp_path / "b", {**JAIL_ENV, "REGCAST_API_TOKENS": "tok-0123456789abcdef"}).start()
    try:  # with tokens a rebinding page cannot authenticate: any Host goes, Origin is still checked
        auth = {"Authorization": "Bearer tok-0123456789abcdef"}
        assert t.http.get("/api/distribute/image", headers={**auth, "Host": "regcast.corp"}).status_code == 200
        r = t.http.get("/api/distribute/image", headers={**auth, "Origin": "http://evil.example"})
        assert r.status_code == 403
    finally:
        t.stop()


@pytest.mark.parametrize(
    ("source", "field"),
    [
        ({"endpoint": "http://127.0.0.1:5000\n/v2"}, "source.endpoint"),
        ({"endpoint": "http://127.0.0.1:5000/v2\r\nX-Forged: 1"}, "source.endpoint"),
        ({"ref": "v1\x1b[31m"}, "source.ref"),
        (
            {"auth": {"url": "http://127.0.0.1:1/token", "header": {"X-Key": "a\r\nInjected: yes"}}},
            "source.auth.header.X-Key",
        ),
        ({"auth": {"url": "http://127.0.0.1:1/token", "header": {"Bad Name": "v"}}}, "source.auth.header"),
        ({"auth": {"url": "http://127.0.0.1:1/tok\u2028en"}}, "source.auth.url"),
        ({"auth": {"url": "http://127.0.0.1:1/t", "json": json.loads("[" * 100 + "]" * 100)}}, "source.auth.json"),
    ],
)
def test_control_characters_and_deep_bodies_are_400_naming_the_field(
    svc: Service, source: dict[str, Any], field: str
) -> None:
    body = body_for("http://127.0.0.1:5000/v2")
    body["source"].update(source)
    r = svc.http.post("/api/distribute/image", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["msg"].startswith(f"Failed to parse data: {field}"), r.text


def test_a_200k_deep_body_is_400_not_500(svc: Service) -> None:
    r = svc.http.post("/api/distribute/image", content=b"[" * 200_000 + b"]" * 200_000)
    assert r.status_code == 400 and "nested deeper than" in r.json()["msg"]
    assert "Traceback" not in svc.output() and "RecursionError" not in svc.output()


def test_deep_source_manifest_without_digest_header_is_a_clean_failure(
    svc: Service, hostile: list[HostileServer]
) -> None:
    deep = b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","x":' + b"[" * 200_000
    deep += b"]" * 200_000 + b"}"
    src = serve(hostile, registry_serving({"v1": (deep[: 4 * 1024 * 1024], mt.OCI_MANIFEST)}, digest_header=False))
    r = svc.http.post("/api/distribute/image", json=body_for(src.endpoint))
    assert r.status_code == 502, r.text
    assert "nested too deeply" in r.json()["msg"] or "not JSON" in r.json()["msg"]
    assert "Traceback" not in svc.output()


def test_hostile_sizes_fail_the_job_once_with_a_clear_reason(
    svc: Service, hostile: list[HostileServer], open_reg: RegistryServer
) -> None:
    """A layer of 2^63 bytes: refused when parsed (0 <= size < 2^53), one attempt, no dead monitor."""
    config = b"{}"
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": {"mediaType": mt.OCI_CONFIG, "digest": images.sha(config), "size": 2},
            "layers": [{"mediaType": mt.OCI_LAYER, "digest": images.sha(b"x"), "size": 2**63}],
        }
    ).encode()
    src = serve(hostile, registry_serving({"v1": (manifest, mt.OCI_MANIFEST)}))
    job = svc.submit({**body_for(src.endpoint), "targets": [{"endpoint": open_reg.endpoint}]})
    st = svc.wait(job)
    assert st["value"] == "FAILED" and "is not below 2^53" in json.dumps(st), st
    out = svc.output()
    assert "Task exception was never retrieved" not in out and "OverflowError" not in out
    assert out.count("claimed by") == 1  # ran once: a permanent content error is not retried


def test_auth_url_query_values_and_seed_headers_never_surface(
    svc: Service, hostile: list[HostileServer], tmp_path: Path, src_reg: RegistryServer, repo: str
) -> None:
    """The token server echoes what it got (query, headers) in its body and reason: none of it comes back."""

    async def token_server(request: web.Request) -> web.StreamResponse:
        echo = f"{request.path_qs} {dict(request.headers)}"
        return web.Response(status=401, reason="Denied " + request.headers.get("X-Token", ""), text=echo)

    tokens = serve(hostile, token_server)

    async def registry(request: web.Request) -> web.StreamResponse:
        return challenge(f"{tokens.url}/realm")

    reg = serve(hostile, registry)
    auth = {
        "url": f"{tokens.url}/token?api_key={SECRETS[0]}&client_secret={SECRETS[1]}",
        "header": {"X-Token": SECRETS[2]},
    }
    r = svc.http.post("/api/distribute/image", json=body_for(reg.endpoint, auth=auth))  # as the source
    assert r.status_code == 502
    outputs = [r.text]
    images.image().push(src_reg.http(), repo, "v1")
    job = svc.submit(
        {"source": body_for(src_reg.endpoint, repo)["source"], "targets": [{"endpoint": reg.endpoint, "auth": auth}]}
    )
    st = svc.wait(job)
    assert st["value"] == "FAILED" and "Denied REDACTED" in json.dumps(st), st
    outputs += [json.dumps(st), svc.http.get("/api/distribute/image").text, svc.output()]
    stored = b"".join(f.read_bytes() for f in tmp_path.glob("regcast.db*"))
    assert sum(SECRETS[0] in p for _m, p, _h in tokens.seen) >= 2  # the token server did get them
    for secret in SECRETS:
        assert all(secret not in o for o in outputs), (secret, [o for o in outputs if secret in o])
        assert secret.encode() not in stored


def test_remote_control_characters_are_escaped_in_status_and_log(svc: Service, hostile: list[HostileServer]) -> None:
    forged = "denied\n2026-01-01 00:00:00 INFO regcast.worker: job 0: FINISHED\x1b[2J"

    async def registry(request: web.Request) -> web.StreamResponse:
        if request.path == "/v2/" or request.method == "HEAD":  # no digest on HEAD: regcast GETs the manifest
            return web.json_response({})
        return web.json_response({"errors": [{"code": "DENIED\r\n", "message": forged}]}, status=400)

    reg = serve(hostile, registry)
    r = svc.http.post("/api/distribute/image", json=body_for(reg.endpoint))
    assert r.status_code == 502
    msg = r.json()["msg"]
    assert "\n" not in msg and "\x1b" not in msg and "\\n2026-01-01" in msg
    out = svc.output()
    assert "\x1b" not in out and "\nINFO regcast.worker: job 0: FINISHED" not in out


def test_basic_credentials_never_go_to_a_realm_on_another_port_over_http(
    hostile: list[HostileServer], caplog: pytest.LogCaptureFixture
) -> None:
    """Same host, another port, plain http: another origin, so no Basic header (issue 10 item 7); said once in
    the log, so a 401 that follows is not a mystery."""
    import asyncio

    from regcast.registry.auth import Credentials
    from regcast.registry.client import ClientOptions, RegistryClient
    from regcast.registry.reference import parse_endpoint
    from tests.support.clients import FAST_RETRY

    async def realm(request: web.Request) -> web.StreamResponse:
        return web.json_response({"token": "anonymous-token-0123"})

    tokens = serve(hostile, realm)

    async def registry(request: web.Request) -> web.StreamResponse:
        if "Authorization" not in request.headers:
            return challenge(f"http://registry.evil.test:{tokens.port}/token")
        return web.json_response({"errors": [{"code": "NOT_FOUND", "message": "x"}]}, status=404)

    reg = serve(hostile, registry)

    async def go() -> None:
        c = RegistryClient(  # a name that is not loopback by its text, pointed at loopback without DNS
            parse_endpoint(f"http://registry.evil.test:{reg.port}/v2"),
            credentials=Credentials("alice", "Sekr1t-PW-realm"),
            options=ClientOptions(retry=FAST_RETRY, resolver=StaticResolver({"registry.evil.test": ["127.0.0.1"]})),
        )
        try:
            assert await c.head_manifest("x/y", "v1") is None
        finally:
            await c.close()

    with caplog.at_level(logging.WARNING, logger="regcast"):
        asyncio.run(go())
    withheld = [r.getMessage() for r in caplog.records if "credentials not sent" in r.getMessage()]
    assert len(withheld) == 1 and f"http://registry.evil.test:{tokens.port}/token" in withheld[0]
    assert tokens.seen and tokens.authorizations() == []  # asked anonymously
    assert reg.authorizations() == ["Bearer anonymous-token-0123"] * len(reg.authorizations())


def test_api_answers_are_json_even_for_a_refused_origin(svc: Service) -> None:
    r = httpx.post(f"{svc.url}/api/distribute/image", content=b"{}", headers={"Origin": "http://evil.example"})
    assert r.status_code == 403 and r.json()["status"] == "error"


def test_plain_http_fallback_never_sends_basic_credentials_unless_asked(hostile: list[HostileServer]) -> None:
    """verify_tls false and no TLS spoken: the password goes in clear only to loopback or with allow_plain_http."""
    import asyncio
    from dataclasses import replace

    from regcast._exceptions import OutboundRefused
    from regcast.registry.auth import Credentials
    from regcast.registry.client import ClientOptions, RegistryClient
    from regcast.registry.reference import parse_endpoint
    from tests.support.clients import FAST_RETRY

    async def registry(request: web.Request) -> web.StreamResponse:
        if "Authorization" not in request.headers:
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="r"'})
        return web.json_response({"errors": [{"code": "NOT_FOUND", "message": "x"}]}, status=404)

    reg = serve(hostile, registry)
    resolver = StaticResolver({"registry.evil.test": ["127.0.0.1"]})

    async def head(host: str, allow: bool) -> str | None:
        where = replace(parse_endpoint(f"https://{host}:{reg.port}/v2"), fallback_http=True)
        options = ClientOptions(retry=FAST_RETRY, verify_tls=False, resolver=resolver, allow_plain_http=allow)
        c = RegistryClient(where, credentials=Credentials("alice", "Sekr1t-plain-PW"), options=options)
        try:
            return await c.head_manifest("x/y", "v1")
        finally:
            await c.close()

    with pytest.raises(OutboundRefused, match="refusing to send its credentials over plain HTTP"):
        asyncio.run(head("registry.evil.test", False))
    assert reg.authorizations() == []
    assert asyncio.run(head("registry.evil.test", True)) is None
    assert asyncio.run(head("127.0.0.1", False)) is None
    assert len(reg.authorizations()) >= 2 and all(a.startswith("Basic ") for a in reg.authorizations())
