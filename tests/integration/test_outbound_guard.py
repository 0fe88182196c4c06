"""Issue 10 items 1-2: every outbound request (endpoints, auth.url, realms, redirects, Locations)
goes only where the outbound policy allows, checked on the address actually connected to.

Hostile registries and token servers run on loopback; hostile names are pointed at addresses by a
``StaticResolver`` (no DNS), and the autouse loopback jail (``support/loopback.py``) makes sure
that even with a guard broken no test could reach an address off this machine.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from regcast._exceptions import OutboundRefused, RegcastError
from regcast.registry.auth import SeedAuth
from regcast.registry.client import ClientOptions, RegistryClient
from regcast.registry.guards import OutboundPolicy
from regcast.registry.reference import parse_endpoint
from tests.support import images
from tests.support.clients import FAST_RETRY
from tests.support.hostile import HostileServer, challenge, serve
from tests.support.loopback import JAIL_ENV, StaticResolver
from tests.support.registry import RegistryServer
from tests.support.service import Service

NUMERIC_METADATA = [
    "0xa9fea9fe",
    "0xa9.0xfe.0xa9.0xfe",
    "2852039166",
    "0251.0376.0251.0376",
    "169.254.169.254",
    "[::ffff:169.254.169.254]",
    "[64:ff9b::a9fe:a9fe]",
]
UNICODE_METADATA = [
    "169\u3002254\u3002169\u3002254",
    "\uff11\uff16\uff19.\uff12\uff15\uff14.\uff11\uff16\uff19.\uff12\uff15\uff14",
    "metadata.google.internal\u3002",
    "metadata.google.internal.",
]
SECRET = "sa-token-from-the-metadata-service"


def client(endpoint: str, *, seed: SeedAuth | None = None, **options: Any) -> RegistryClient:
    options.setdefault("retry", FAST_RETRY)
    return RegistryClient(parse_endpoint(endpoint), seed_auth=seed, options=ClientOptions(**options))


def run(coro_fn: Any) -> Any:
    return asyncio.run(coro_fn())


async def manifest_of(c: RegistryClient, repo: str = "x/y", ref: str = "v1") -> Any:
    try:
        return await c.get_manifest(repo, ref)
    finally:
        await c.close()


@pytest.mark.parametrize("host", NUMERIC_METADATA)
def test_endpoint_in_any_numeric_form_is_refused_at_run_time(host: str) -> None:
    with pytest.raises(OutboundRefused, match="link-local/metadata"):
        run(lambda: manifest_of(client(f"http://{host}/v2")))


@pytest.mark.parametrize("host", NUMERIC_METADATA + UNICODE_METADATA)
def test_seed_auth_url_at_the_metadata_service_is_refused(host: str, hostile: list[HostileServer]) -> None:
    """The reported chain: auth.url at the metadata service with Metadata-Flavor, token sent to the registry."""

    async def registry(request: web.Request) -> web.StreamResponse:
        return challenge("http://127.0.0.1:1/token") if "Authorization" not in request.headers else web.Response()

    evil = serve(hostile, registry)
    seed = SeedAuth(url=f"http://{host}/computeMetadata/v1/token", header={"Metadata-Flavor": "Google"})
    with pytest.raises(OutboundRefused, match=r"link-local/metadata|cloud-metadata"):
        run(lambda: manifest_of(client(evil.endpoint, seed=seed)))
    assert evil.authorizations() == []


@pytest.mark.parametrize("host", NUMERIC_METADATA + UNICODE_METADATA)
def test_realm_redirect_and_location_at_metadata_in_any_spelling_are_refused(
    host: str, hostile: list[HostileServer]
) -> None:
    async def realm(request: web.Request) -> web.StreamResponse:
        return challenge(f"http://{host}/token")

    async def redirect(request: web.Request) -> web.StreamResponse:
        if request.path == "/v2/":
            return web.Response()
        return web.Response(status=307, headers={"Location": f"http://{host}/latest/meta-data/"})

    for handler in (realm, redirect):
        evil = serve(hostile, handler)
        with pytest.raises(OutboundRefused, match=r"link-local/metadata|cloud-metadata"):
            run(lambda evil=evil: manifest_of(client(evil.endpoint)))

    async def location(request: web.Request) -> web.StreamResponse:
        if request.path == "/v2/":
            return web.Response()
        return web.Response(status=202, headers={"Location": f"http://{host}/v2/x/y/blobs/uploads/1"})

    evil = serve(hostile, location)

    async def upload() -> None:
        from regcast.registry import blobs

        c = client(evil.endpoint)
        try:
            await blobs.start_upload(c, "x/y")
        finally:
            await c.close()

    with pytest.raises(OutboundRefused, match="upload Location"):
        run(upload)


def test_a_name_resolving_to_metadata_is_refused_at_connect_time(hostile: list[HostileServer]) -> None:
    """The resolved address is what is checked: a harmless name cannot lead to the metadata service."""
    resolver = StaticResolver({"registry.evil.test": ["169.254.169.254"]})
    with pytest.raises(OutboundRefused, match=r"address 169\.254\.169\.254 refused by the outbound policy"):
        run(lambda: manifest_of(client("http://registry.evil.test:80/v2", resolver=resolver)))
    assert resolver.asked == ["registry.evil.test"]
    mapped = StaticResolver({"registry.evil.test": ["::ffff:169.254.169.254"]})
    with pytest.raises(OutboundRefused, match="refused by the outbound policy"):
        run(lambda: manifest_of(client("http://registry.evil.test:80/v2", resolver=mapped)))


def test_rebinding_answer_connects_only_to_a_checked_address(
    hostile: list[HostileServer], src_reg: RegistryServer, repo: str
) -> None:
    """Metadata first, loopback second: the forbidden address is never connected to, the allowed one is."""
    img = images.image().push(src_reg.http(), repo, "v1")
    resolver = StaticResolver({"registry.evil.test": ["169.254.169.254", "127.0.0.1"]})
    m = run(lambda: manifest_of(client(f"http://registry.evil.test:{src_reg.port}/v2", resolver=resolver), repo))
    assert m.digest == img.digest


def test_block_private_refuses_loopback_by_name_and_by_address(src_reg: RegistryServer, repo: str) -> None:
    policy = OutboundPolicy(block_private=True)
    with pytest.raises(OutboundRefused, match="REGCAST_BLOCK_PRIVATE"):
        run(lambda: manifest_of(client(src_reg.endpoint, policy=policy), repo))
    resolver = StaticResolver({"registry.evil.test": ["127.0.0.1"]})
    with pytest.raises(OutboundRefused, match="REGCAST_BLOCK_PRIVATE"):
        run(
            lambda: manifest_of(
                client(f"http://registry.evil.test:{src_reg.port}/v2", policy=policy, resolver=resolver), repo
            )
        )


def test_allow_list_covers_realms_auth_urls_and_redirects(hostile: list[HostileServer]) -> None:
    """A listed registry cannot make regcast GET an unlisted host; token hosts may be listed apart."""
    answered: list[str] = []

    async def tokens(request: web.Request) -> web.StreamResponse:
        answered.append(request.path)
        return web.json_response({"token": "t0k3n-for-the-listed-registry"})

    token_host = serve(hostile, tokens)

    async def registry(request: web.Request) -> web.StreamResponse:
        if "Authorization" not in request.headers:
            return challenge(f"{token_host.url}/token")
        if request.path.startswith("/v2/x/y/manifests/"):
            return web.Response(status=307, headers={"Location": f"{token_host.url}/elsewhere"})
        return web.Response()

    reg = serve(hostile, registry)
    listed = OutboundPolicy(registries=(f"127.0.0.1:{reg.port}",))
    with pytest.raises(OutboundRefused, match="not in REGCAST_ALLOWED_REGISTRIES or REGCAST_ALLOWED_AUTH_HOSTS"):
        run(lambda: manifest_of(client(reg.endpoint, policy=listed)))
    seed = SeedAuth(url=f"{token_host.url}/seed-token", header={"X-Api-Key": "k"})
    with pytest.raises(OutboundRefused, match="not in REGCAST_ALLOWED_REGISTRIES"):
        run(lambda: manifest_of(client(reg.endpoint, policy=listed, seed=seed)))
    assert answered == []  # the unlisted host never saw a request
    with_auth = OutboundPolicy(registries=listed.registries, auth_hosts=(f"127.0.0.1:{token_host.port}",))
    refused = r"refusing redirect: 127\.0\.0\.1:\d+ is not in REGCAST_ALLOWED_REGISTRIES"
    with pytest.raises(OutboundRefused, match=refused):
        run(lambda: manifest_of(client(reg.endpoint, policy=with_auth)))
    assert answered == ["/token"]  # the token host was allowed; the redirect to it (a registry request) was not


def test_refusals_are_not_retried(hostile: list[HostileServer]) -> None:
    async def redirect(request: web.Request) -> web.StreamResponse:
        if request.path == "/v2/":
            return web.Response()
        return web.Response(status=307, headers={"Location": "http://0xa9fea9fe/"})

    evil = serve(hostile, redirect)
    retries: list[str] = []

    async def go() -> None:
        c = client(evil.endpoint)
        try:
            with c.watch_retries(retries.append):
                await c.get_manifest("x/y", "v1")
        finally:
            await c.close()

    with pytest.raises(RegcastError):
        run(go)
    assert retries == []
    assert [p for _m, p, _h in evil.seen] == ["/v2/", "/v2/x/y/manifests/v1"]


def test_the_loopback_jail_holds() -> None:
    """The safety net itself: no connect and no DNS query off this machine from a test."""
    with socket.socket() as s, pytest.raises(OSError, match="test jail"):
        s.connect(("169.254.169.254", 80))
    with pytest.raises(socket.gaierror):
        socket.getaddrinfo("metadata.google.internal", 80)
    assert socket.getaddrinfo("0xa9fea9fe", 80)[0][4][0] == "169.254.169.254"

    async def through_the_loop() -> None:  # the path aiohttp's resolver takes
        with pytest.raises(socket.gaierror):
            await asyncio.get_running_loop().getaddrinfo("metadata.google.internal", 80, flags=socket.AI_ADDRCONFIG)

    asyncio.run(through_the_loop())


def test_every_form_is_refused_at_submit(tmp_path: Path, src_reg: RegistryServer, repo: str) -> None:
    """400 naming the field, before any request; the service runs jailed to loopback all the same."""
    images.image().push(src_reg.http(), repo, "v1")
    svc = Service(tmp_path, {**JAIL_ENV, "REGCAST_ALLOWED_AUTH_HOSTS": "auth.example"}).start()
    try:
        src = {"endpoint": src_reg.endpoint, "image": repo, "ref": "v1"}
        for host in NUMERIC_METADATA + UNICODE_METADATA:
            for body, field in [
                (
                    {"source": {**src, "endpoint": f"http://{host}/v2"}, "targets": [{"endpoint": src_reg.endpoint}]},
                    "source.endpoint",
                ),
                (
                    {
                        "source": src,
                        "targets": [{"endpoint": src_reg.endpoint}, {"endpoint": f"https://{host}:5000/v2"}],
                    },
                    "targets.1.endpoint",
                ),
                (
                    {
                        "source": src,
                        "targets": [{"endpoint": src_reg.endpoint, "auth": {"url": f"http://{host}/token"}}],
                    },
                    "targets.0.auth.url",
                ),
                (
                    {
                        "source": src,
                        "targets": [{"endpoint": src_reg.endpoint}],
                        "notify": {"url": f"http://{host}/hook"},
                    },
                    "notify.url",
                ),
            ]:
                r = svc.http.post("/api/distribute/image", json=body)
                assert r.status_code == 400, (host, field, r.text)
                assert r.json()["msg"].startswith(f"Failed to parse data: {field}: "), (host, r.text)
        assert svc.http.get("/api/distribute/image").json()["total"] == 0
    finally:
        svc.stop()
