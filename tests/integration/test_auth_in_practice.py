"""Authentication as real registries and users do it, end to end through ``regcast copy`` and service jobs:
token answers of every shape, the OAuth2 variant, Docker config files as docker writes them."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import trustme
from aiohttp import web

from regcast._exceptions import AuthenticationFailed
from regcast.registry.auth import Credentials
from regcast.registry.client import RegistryClient
from regcast.registry.mediatypes import DOCKER_MANIFEST
from regcast.registry.reference import parse_endpoint
from regcast.registry.session import ClientOptions
from tests.integration.test_token_faults import registry_asking_tokens_of
from tests.support import images
from tests.support.cli import regcast
from tests.support.faults import FaultProxy
from tests.support.hostile import HostileServer, challenge, registry_serving, serve
from tests.support.quirks import QuirkProxy
from tests.support.registry import RegistryServer
from tests.support.service import Service, basicauth
from tests.support.tokenserver import TokenServer


@contextmanager
def answering(ts: TokenServer, **fields: object) -> Iterator[TokenServer]:
    """The token server's answers carry ``fields`` (over its own) for the block."""
    ts.answer_fields = dict(fields)
    try:
        yield ts
    finally:
        ts.answer_fields = {}


PASSWORD = "Realm-redirect-PASSWORD-7"


def creds(reg: RegistryServer) -> str:
    user, password = next(iter(reg.users.items()))
    return f"{user}:{password}"


def test_a_token_answer_whose_expires_in_is_nan_is_used_not_asked_again_per_request(
    repo: str, src_reg: RegistryServer, token_reg: RegistryServer
) -> None:
    """``"expires_in": NaN`` (Python's JSON reader takes it): the token counted as never valid, so every
    request of the copy asked the token server again (one token per scope is what a copy needs)."""
    images.image().push(src_reg.http(), repo, "v1")
    ts = token_reg.token_server
    assert ts is not None
    before = len(ts.requests)
    with answering(ts, expires_in=float("nan")):
        r = regcast("copy", "--dest-creds", creds(token_reg), f"{src_reg.host}/{repo}:v1", f"{token_reg.host}/{repo}")
    assert r.returncode == 0, r.stderr
    asked = [str(q["scopes"]) for q in ts.requests[before:]]
    assert sorted(asked) == sorted(set(asked)), asked  # each scope asked once


def _docker_config(tmp_path: Path, text: str) -> dict[str, str]:
    directory = tmp_path / "docker-config-written"
    directory.mkdir(exist_ok=True)
    (directory / "config.json").write_text(text)
    return {"DOCKER_CONFIG": str(directory)}


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ('{"auths": {', "is not valid JSON (line 1 column 12)"),
        ('["auths"]', "is not a JSON object"),
    ],
)
def test_a_docker_config_that_is_not_one_is_said_once_not_a_silent_anonymous_copy(
    text: str, why: str, tmp_path: Path, repo: str, src_reg: RegistryServer, token_reg: RegistryServer
) -> None:
    """A broken config file (a hand edit, a half-written file): its credentials were dropped in silence, and
    the copy ended in a 401 that sent the user to check credentials they had given. Now one warning line names
    the file (once, though source and target both looked), then the copy goes on as without it."""
    images.image().push(src_reg.http(), repo, "v1")
    env = _docker_config(tmp_path, text)
    r = regcast("copy", f"{src_reg.host}/{repo}:v1", f"{token_reg.host}/{repo}", env=env)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    path = Path(env["DOCKER_CONFIG"]) / "config.json"
    said = [line for line in r.stderr.splitlines() if f"Docker config {path} {why}" in line]
    assert len(said) == 1 and said[0].endswith("no credentials are taken from it"), r.stderr


def test_a_docker_config_entry_whose_auth_is_not_base64_is_named(
    tmp_path: Path, repo: str, src_reg: RegistryServer, token_reg: RegistryServer
) -> None:
    images.image().push(src_reg.http(), repo, "v1")
    env = _docker_config(tmp_path, json.dumps({"auths": {token_reg.host: {"auth": "bob:not-base64!"}}}))
    r = regcast("copy", f"{src_reg.host}/{repo}:v1", f"{token_reg.host}/{repo}", env=env)
    assert r.returncode == 1
    assert f"the 'auth' of '{token_reg.host}' is not base64 of USER:PASSWORD: not used" in r.stderr, r.stderr
    assert "not-base64" not in r.stderr.replace("is not base64", "")


@contextmanager
def post_answering(ts: TokenServer, status: int, body: dict[str, object]) -> Iterator[TokenServer]:
    """The token server answers every OAuth2 POST with ``status`` and ``body`` for the block (GET as usual)."""
    ts.oauth, ts.post_refusal = False, (status, body)
    try:
        yield ts
    finally:
        ts.oauth, ts.post_refusal = True, (404, {})


def test_an_identity_token_the_token_server_calls_expired_is_said_in_its_words(
    tmp_path: Path, repo: str, src_reg: RegistryServer, token_reg: RegistryServer
) -> None:
    """OAuth2's error body (RFC 6749 5.2) for a refresh token past its life: ``400 {"error": "invalid_grant",
    "error_description": ...}``. The line said only ``answered 400 Bad Request``; a 400 is an answer, not a realm
    without the POST, so no GET follows (it would send the placeholder user docker login stored)."""
    images.image().push(src_reg.http(), repo, "v1")
    ts = token_reg.token_server
    assert ts is not None
    placeholder = base64.b64encode(b"00000000-0000-0000-0000-000000000000:").decode()
    entry = {"auth": placeholder, "identitytoken": "identity-SECRET-expired"}
    env = _docker_config(tmp_path, json.dumps({"auths": {token_reg.host: entry}}))
    body: dict[str, object] = {"error": "invalid_grant", "error_description": "refresh token expired, run docker login"}
    before = len(ts.requests), ts.refused
    with post_answering(ts, 400, body):
        r = regcast("copy", f"{src_reg.host}/{repo}:v1", f"{token_reg.host}/{repo}", env=env)
    assert r.returncode == 1
    [error] = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert f"registry {token_reg.host}: token server refused: POST {ts.realm} answered 400 " in error, error
    assert error.endswith("invalid_grant: refresh token expired, run docker login"), error
    assert (len(ts.requests), ts.refused) == before  # no GET after it
    assert "identity-SECRET-expired" not in r.stdout + r.stderr


def test_a_realm_answering_the_oauth2_post_405_is_asked_with_get(
    tmp_path: Path, repo: str, src_reg: RegistryServer, token_reg: RegistryServer
) -> None:
    """Quay and Harbor's token endpoints know GET only and answer a POST 405 (others 404): docker's GET with
    the stored username and password follows, and the copy goes through. The realm is POSTed to once: a POST
    refused per scope (pull, then pull+push) doubled the token requests of every copy."""
    img = images.image().push(src_reg.http(), repo, "v1")
    ts = token_reg.token_server
    assert ts is not None
    user, password = next(iter(token_reg.users.items()))
    entry = {"username": user, "password": password, "identitytoken": "not-known-here"}
    env = _docker_config(tmp_path, json.dumps({"auths": {token_reg.host: entry}}))
    posted, asked = ts.posts_refused, len(ts.requests)
    with post_answering(ts, 405, {"errors": [{"code": "UNSUPPORTED", "message": "method not allowed"}]}):
        r = regcast("copy", f"{src_reg.host}/{repo}:v1", f"{token_reg.host}/{repo}", env=env)
    assert r.returncode == 0, r.stderr
    assert token_reg.http().get_manifest(repo, "v1").content == img.root.raw
    assert len(ts.requests) - asked == 2  # GETs: pull, then pull+push
    assert ts.posts_refused - posted == 1


def test_docker_hubs_wrong_password_answer_is_said_in_its_words(
    hostile: list[HostileServer], open_reg: RegistryServer
) -> None:
    """auth.docker.io refuses a wrong password with ``401 {"details": "incorrect username or password"}``
    (no OCI ``errors``): docker shows those words; regcast showed ``answered 401 Unauthorized``."""

    async def hub_auth(_request: web.Request) -> web.StreamResponse:
        return web.json_response({"details": "incorrect username or password"}, status=401)

    realm = serve(hostile, hub_auth)
    src = registry_asking_tokens_of(hostile, realm)
    r = regcast("copy", "--src-creds", "u:Hub-PASSWORD-9", f"127.0.0.1:{src.port}/a/b:v1", f"{open_reg.host}/a/hub")
    assert r.returncode == 1
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: registry 127.0.0.1:{src.port}: token server refused: GET {realm.url}/token?service=evil&"
        "scope=repository:a/b:pull answered 401 incorrect username or password (check the credentials)"
    ], r.stderr
    assert len(realm.seen) == 1  # refused once: not asked again


def test_a_mirror_sets_registry_kept_in_a_credential_helper_is_warned_about(
    tmp_path: Path, repo: str, src_reg: RegistryServer, token_reg: RegistryServer
) -> None:
    """``regcast sync`` (and the service's runs) took the Docker config's ``auths`` but said nothing of a
    ``credsStore`` keeping the target's credentials: the pass failed on a 401 with no hint why. Now the same
    warning as ``regcast copy`` gives, once, with the document's way out."""
    images.image().push(src_reg.http(), repo, "v1")
    env = _docker_config(tmp_path, json.dumps({"auths": {token_reg.host: {}}, "credsStore": "secretservice"}))
    doc = tmp_path / "mirrors.yaml"
    mirror = {"name": "m", "source": f"{src_reg.host}/{repo}", "targets": [f"{token_reg.host}/helper"]}
    doc.write_text(json.dumps({"version": 1, "mirrors": [mirror]}))
    r = regcast("sync", str(doc), env=env)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    said = [line for line in r.stderr.splitlines() if "credential helper docker-credential-secretservice" in line]
    assert len(said) == 1, r.stderr
    assert said[0].endswith(
        f"{token_reg.host}: the Docker config keeps its credentials in the credential helper "
        "docker-credential-secretservice, which regcast does not run; going anonymous (give its username and "
        "password in the mirror document's registries)"
    ), said


def test_tokens_that_expire_mid_copy_are_fetched_again_once_each_and_the_copy_goes_through(
    repo: str, src_reg: RegistryServer, token_reg: RegistryServer, faults: list[FaultProxy]
) -> None:
    """A registry that stops taking each token after a few requests (its lifetime, shorter than the copy):
    the requests in flight together come back 401 ``invalid_token`` at once. Each token is asked for again
    once for all of them, and the copy is done."""
    img = images.image([images.layer_bytes(2048) for _ in range(16)]).push(src_reg.http(), repo, "v1")
    ts = token_reg.token_server
    assert ts is not None
    front = QuirkProxy(token_reg.port, "tokens_expire", uses=20).start()
    faults.append(front)
    before = len(ts.requests)
    r = regcast("copy", "--dest-creds", creds(token_reg), f"{src_reg.host}/{repo}:v1", f"127.0.0.1:{front.port}/{repo}")
    assert r.returncode == 0, r.stderr
    assert token_reg.http().get_manifest(repo, "v1").content == img.root.raw
    fetched = len(ts.requests) - before
    assert front.events["expired"] >= 1  # tokens did expire mid-copy
    # each refused token replaced about once (the requests refused together share the new one), not once per 401
    assert fetched <= 2 + 2 * front.events["expired_tokens"], (fetched, front.events)


def _token_registry(hostile: list[HostileServer], realm: str) -> tuple[HostileServer, bytes]:
    """A registry serving one manifest (``a/b:v1``) to ``Bearer good-token`` and challenging the rest."""
    raw = images.image().root.raw
    serving = registry_serving({"v1": (raw, DOCKER_MANIFEST)})

    async def handle(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != "Bearer good-token":
            return challenge(realm)
        return await serving(request)

    return serve(hostile, handle), raw


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_token_realm_that_redirects_is_followed_credentials_kept_on_its_own_server(
    status: int, hostile: list[HostileServer]
) -> None:
    """A realm written ``http://`` behind a proxy that redirects to its https:// (Harbor's ext_endpoint), or a
    token endpoint moved: docker (Go's client) and the seed (requests) follow the redirect, the Basic
    credentials kept only while the server stays the same. regcast answered 'token server refused: ...
    answered 301'."""
    basic = "Basic " + base64.b64encode(f"u:{PASSWORD}".encode()).decode()

    async def token_server(request: web.Request) -> web.StreamResponse:
        if request.path == "/old-token":  # moved, on the same server: the credentials follow
            return web.Response(status=status, headers={"Location": f"/token?{request.query_string}"})
        if request.headers.get("Authorization") != basic:
            return web.json_response({"details": "no credentials"}, status=401)
        return web.json_response({"token": "good-token", "expires_in": 300})

    async def elsewhere(request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, headers={"Location": f"{moved.url}/token?{request.query_string}"})

    moved = serve(hostile, token_server)
    other = serve(hostile, elsewhere)

    def get(realm: str) -> bytes:
        registry, raw = _token_registry(hostile, realm)

        async def go() -> bytes:
            creds = Credentials("u", PASSWORD)
            async with RegistryClient(parse_endpoint(registry.endpoint), credentials=creds) as client:
                assert (await client.get_manifest("a/b", "v1")).raw == raw
                return raw

        return asyncio.run(go())

    get(f"{moved.url}/old-token")
    assert moved.authorizations() == [basic, basic]  # asked at /old-token, then at /token
    with pytest.raises(AuthenticationFailed, match="no credentials"):  # another server: none carried there
        get(f"{other.url}/token")
    assert other.authorizations() == [basic]  # the realm itself (loopback, beside the registry)
    assert moved.authorizations() == [basic, basic]


def test_an_anonymous_pull_from_a_token_registry_asks_an_anonymous_token(
    repo: str, token_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    """No credentials anywhere (flag, variable, Docker config): a public repository of a token registry is
    read with the token the token server gives anyone (asked without Authorization), as docker pull does."""
    img = images.image().push(token_reg.http(), repo, "v1")
    ts = token_reg.token_server
    assert ts is not None
    before = len(ts.requests)
    ts.anonymous_pull = True
    try:
        r = regcast("copy", f"{token_reg.host}/{repo}:v1", f"{open_reg.host}/{repo}")
    finally:
        ts.anonymous_pull = False
    assert r.returncode == 0, r.stderr
    assert open_reg.http().get_manifest(repo, "v1").content == img.root.raw
    asked = ts.requests[before:]
    assert asked and all(q["user"] is None for q in asked), asked
    assert {s for q in asked for s in q["scopes"]} == {f"repository:{repo}:pull"}  # type: ignore[attr-defined]


def test_a_private_repository_read_without_credentials_says_none_were_given(
    tmp_path: Path, repo: str, token_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    """No credentials anywhere and a repository the anonymous token may not read: the line said 'check the
    credentials' of credentials nobody gave; now it says none were given (by regcast copy and a job alike)."""
    images.image().push(token_reg.http(), repo, "v1")
    r = regcast("copy", f"{token_reg.host}/{repo}:v1", f"{open_reg.host}/{repo}/anon")
    assert r.returncode == 1
    [error] = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert error.startswith(f"error: registry {token_reg.host}: getting manifest {repo}:v1: "), error
    assert error.endswith(
        f"(insufficient_scope: repository:{repo}:pull) (no credentials were given for this registry)"
    ), error
    r = regcast("copy", "--src-creds", creds(token_reg), f"{token_reg.host}/{repo}:v1", f"{token_reg.host}/{repo}:v2")
    assert r.returncode == 1  # read with credentials; the target, on the same registry, has none
    [error] = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert error.endswith("(no credentials were given for this registry)"), error
    images.image().push(open_reg.http(), repo, "v1")
    r = regcast("copy", "--dest-creds", "bob:wrong-pw", f"{open_reg.host}/{repo}:v1", f"{token_reg.host}/{repo}")
    assert "(check the credentials)" in r.stderr  # given, and refused: the old hint


def test_a_job_reads_token_answers_as_real_token_servers_write_them_and_says_refusals_in_their_words(
    tmp_path: Path, repo: str, src_reg: RegistryServer, token_reg: RegistryServer, hostile: list[HostileServer]
) -> None:
    """Through the service: ``basicauth`` answering a Bearer challenge whose token server names its token
    ``access_token`` only, writes ``expires_in`` as a string and ``issued_at`` an hour ago (its clock) -> the
    target FINISHED; a Docker Hub style refusal -> that target FAILED alone, the refusal's words in its
    status, no password anywhere."""
    images.image().push(src_reg.http(), repo, "v1")
    ts = token_reg.token_server
    assert ts is not None

    async def hub_auth(_request: web.Request) -> web.StreamResponse:
        return web.json_response({"details": "incorrect username or password"}, status=401)

    refusing = registry_asking_tokens_of(hostile, serve(hostile, hub_auth))
    past = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).isoformat()
    ts.token_field = "access_token"
    svc = Service(tmp_path).start()
    try:
        with answering(ts, expires_in="300", issued_at=past):
            job = svc.submit(
                {
                    "source": {"endpoint": src_reg.endpoint, "image": repo, "ref": "v1"},
                    "targets": [
                        {"endpoint": token_reg.endpoint, "auth": basicauth(token_reg)},
                        {"endpoint": refusing.endpoint, "auth": {"basicauth": {"user": "u", "password": PASSWORD}}},
                    ],
                }
            )
            st = svc.wait(job)
        log = svc.output()
    finally:
        ts.token_field = "token"
        svc.stop()
    done, refused = st["targets"]
    assert done["state"] == "FINISHED", st
    assert refused["state"] == "FAILED" and "answered 401 incorrect username or password" in refused["error"], st
    assert refused["error"].startswith(f"registry 127.0.0.1:{refusing.port}: token server refused"), st
    assert PASSWORD not in str(st) and PASSWORD not in log


def test_an_https_token_server_on_another_host_gets_the_credentials(
    hostile: list[HostileServer], ca: tuple[trustme.CA, Path]
) -> None:
    """Docker Hub's shape: the registry on one host, its token server on another over HTTPS (auth.docker.io).
    The guards that keep credentials from plain-HTTP realms elsewhere must not keep them from this one."""
    basic = "Basic " + base64.b64encode(f"u:{PASSWORD}".encode()).decode()

    async def token_server(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != basic:
            return web.json_response({"details": "no credentials"}, status=401)
        return web.json_response({"token": "good-token", "expires_in": 300})

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca[0].issue_cert("localhost").configure_cert(context)
    auth_host = serve(hostile, token_server, tls=context)
    realm = f"https://localhost:{auth_host.port}/token"  # another host name than the registry's 127.0.0.1
    registry, raw = _token_registry(hostile, realm)

    async def go() -> bytes:
        options = ClientOptions(ca_bundle=str(ca[1]))
        creds = Credentials("u", PASSWORD)
        async with RegistryClient(parse_endpoint(registry.endpoint), credentials=creds, options=options) as client:
            return (await client.get_manifest("a/b", "v1")).raw

    assert asyncio.run(go()) == raw
    assert auth_host.authorizations() == [basic]
