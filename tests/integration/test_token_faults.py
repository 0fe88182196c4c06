"""Token servers that fail: down, silent, answering a page instead of a token. A copy ends in one line that
names the registry, holds no secret, and is not retried inside its own retries."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import pytest
from aiohttp import web

from tests.support import images
from tests.support.cli import regcast
from tests.support.hostile import HostileServer, challenge, serve
from tests.support.registry import RegistryServer
from tests.support.service import Service

PASSWORD = "Tk9-token-faults-PASSWORD"


def registry_asking_tokens_of(hostile: list[HostileServer], realm: HostileServer) -> HostileServer:
    """A registry whose every answer is a 401 naming ``realm``'s /token (loopback: credentials go there)."""

    async def handle(_request: web.Request) -> web.StreamResponse:
        return challenge(f"{realm.url}/token")

    return serve(hostile, handle)


def test_a_token_server_that_never_answers_is_given_up_after_its_own_two_timeouts(
    hostile: list[HostileServer], open_reg: RegistryServer
) -> None:
    """The token request has its own retries (two timeouts end it); the manifest request that asked for the
    token must not try it all again: that made four timeouts, twice the stall the request path allows."""

    async def silent(_request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    realm = serve(hostile, silent)
    src = registry_asking_tokens_of(hostile, realm)
    r = regcast(
        "copy",
        "--src-creds",
        f"u:{PASSWORD}",
        f"127.0.0.1:{src.port}/a/b:v1",
        f"{open_reg.host}/a/silent-realm",
        env={"REGCAST_REQUEST_TIMEOUT": "1"},
    )
    assert r.returncode == 1
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: registry 127.0.0.1:{src.port}: GET {realm.url}/token: timed out"], r.stderr
    assert len(realm.seen) == 2
    assert PASSWORD not in r.stdout + r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize(
    ("answer", "what"),
    [
        (b"<html>Sign in</html>", "answered with something that is not JSON"),
        (b'["not", "an", "object"]', "answer is not a JSON object"),
        (b'{"expires_in": 300}', "answer has no 'token' or 'access_token'"),
        # a CR/LF in the token: aiohttp refused the header, 'internal error (ValueError: ...)' naming nothing
        (b'{"token": "t\\r\\nX-Injected: 1"}', "answer's token is not printable ASCII (a header cannot carry it)"),
        (b'{"token": "caf\\u00e9"}', "answer's token is not printable ASCII (a header cannot carry it)"),
    ],
)
def test_a_token_answer_that_is_no_token_names_the_registry(
    answer: bytes, what: str, hostile: list[HostileServer], open_reg: RegistryServer
) -> None:
    """A login page, an error page or JSON without a token in a 200: one line naming the registry (and the
    token server it sent us to), not a bare "token server answered ..." that says nothing of where."""

    async def page(_request: web.Request) -> web.StreamResponse:
        return web.Response(body=answer, content_type="text/html")

    realm = serve(hostile, page)
    src = registry_asking_tokens_of(hostile, realm)
    r = regcast("copy", "--src-creds", f"u:{PASSWORD}", f"127.0.0.1:{src.port}/a/b:v1", f"{open_reg.host}/a/page")
    assert r.returncode == 1
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: registry 127.0.0.1:{src.port}: token server {realm.url}/token {what}"], r.stderr
    assert PASSWORD not in r.stdout + r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("padded", [True, False])
def test_a_token_server_quoting_the_basic_credentials_it_got_never_shows_them(
    padded: bool, hostile: list[HostileServer], open_reg: RegistryServer
) -> None:
    """A token server quoting the credential it refused as it got it (the base64 of ``user:password``, without
    the ``Basic`` word, padded or not) showed the password encoded in the error line."""
    user = "ux"  # "ux:" + PASSWORD is 28 bytes: its base64 ends in "="
    encoded = base64.b64encode(f"{user}:{PASSWORD}".encode()).decode()
    assert encoded.endswith("=")

    async def quoting(request: web.Request) -> web.StreamResponse:
        sent = request.headers.get("Authorization", "").partition(" ")[2]
        quoted = sent if padded else sent.rstrip("=")
        return web.json_response({"errors": [{"code": "DENIED", "message": f"refused {quoted}"}]}, status=401)

    realm = serve(hostile, quoting)
    src = registry_asking_tokens_of(hostile, realm)
    r = regcast("copy", "--src-creds", f"{user}:{PASSWORD}", f"127.0.0.1:{src.port}/a/b:v1", f"{open_reg.host}/a/q")
    assert r.returncode == 1
    assert realm.authorizations() == [f"Basic {encoded}"]  # it did get them (a loopback realm)
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].endswith("answered 401 DENIED: refused REDACTED (check the credentials)")
    assert encoded.rstrip("=") not in r.stdout + r.stderr and PASSWORD not in r.stdout + r.stderr


def test_a_job_target_whose_token_server_answers_a_page_fails_alone_naming_its_registry(
    tmp_path: Path, hostile: list[HostileServer], repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    """The same through the service: that target FAILED with the line in its status, the other FINISHED."""
    images.image().push(src_reg.http(), repo, "v1")

    async def page(_request: web.Request) -> web.StreamResponse:
        return web.Response(text=f"<html>wrong password {PASSWORD}</html>", content_type="text/html")

    realm = serve(hostile, page)
    bad = registry_asking_tokens_of(hostile, realm)
    svc = Service(tmp_path).start()
    try:
        job = svc.submit(
            {
                "source": {"endpoint": src_reg.endpoint, "image": repo, "ref": "v1"},
                "targets": [
                    {"endpoint": bad.endpoint, "auth": {"basicauth": {"user": "u", "password": PASSWORD}}},
                    {"endpoint": open_reg.endpoint},
                ],
            }
        )
        st = svc.wait(job)
        log = svc.output()
    finally:
        svc.stop()
    assert st["value"] == "FAILED"
    failed, done = st["targets"]
    assert failed["state"] == "FAILED" and done["state"] == "FINISHED"
    line = f"registry 127.0.0.1:{bad.port}: token server {realm.url}/token answered with something that is not JSON"
    assert failed["error"] == line
    assert PASSWORD not in str(st) and PASSWORD not in log
