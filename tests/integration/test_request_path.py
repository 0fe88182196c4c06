"""The request path as production runs it: no-op re-syncs, permanent faults, retried pings, retry events.

Counts come from a proxy in front of the real registry (every request it saw, by method and path)
and from regcast's own status; nothing here depends on how long anything took.
"""

from __future__ import annotations

import asyncio
import base64
from collections import Counter
from collections.abc import Iterator

import pytest

from regcast._exceptions import Failure, RegistryUnreachable
from regcast.registry.auth import SeedAuth
from regcast.registry.client import ClientOptions, RegistryClient
from regcast.registry.reference import Endpoint, parse_endpoint
from regcast.transfer.engine import CopyEngine, Target
from regcast.transfer.progress import TargetState
from regcast.transfer.remote import RegistryRepository
from tests.support import images
from tests.support.cli import regcast
from tests.support.clients import FAST_RETRY, client_for, target
from tests.support.faults import FaultProxy, copy, proxy, via
from tests.support.registries import TOKEN_USERS
from tests.support.registry import RegistryServer
from tests.support.service import Service
from tests.support.verify import assert_same_image


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    svc = Service(tmp_path_factory.mktemp("service")).start()
    yield svc
    svc.stop()


def manifest_requests(p: FaultProxy) -> Counter[str]:
    """Manifest requests the proxy forwarded, per method."""
    return Counter(method for method, path, _headers in p.seen if "/manifests/" in path)


# -- item 1: an up-to-date re-sync reads no manifest from the source ---------------------------------
def test_cli_resync_of_an_up_to_date_target_sends_no_manifest_get(
    faults: list[FaultProxy], repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    images.multi_platform().push(src_reg.http(), repo, "v1")
    p = proxy(faults, src_reg, "pass")
    src, dst = f"127.0.0.1:{p.port}/{repo}:v1", f"127.0.0.1:{open_reg.port}/{repo}:v1"
    first = regcast("copy", "--no-referrers", src, dst)
    assert first.returncode == 0, first.stderr
    assert manifest_requests(p)["GET"] >= 3  # the index and its two children were read once
    p.seen.clear()
    again = regcast("copy", "--no-referrers", src, dst)
    assert again.returncode == 0, again.stderr
    assert "already up to date" in again.stdout
    counts = manifest_requests(p)
    assert counts["GET"] == 0, [(m, path) for m, path, _h in p.seen if "manifests" in path or "referrers" in path]
    assert counts["HEAD"] == 1
    assert_same_image(src_reg.http(), repo, "v1", open_reg.http(), repo, "v1")


def test_service_resync_of_an_up_to_date_target_sends_no_manifest_get(
    service: Service, faults: list[FaultProxy], repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    images.image([b"layer " * 1000]).push(src_reg.http(), repo, "v1")
    p = proxy(faults, src_reg, "pass")
    body = {
        "source": {"endpoint": p.endpoint, "image": repo, "ref": "v1"},
        "targets": [{"endpoint": open_reg.endpoint, "overwrite": True}],
        "referrers": False,  # with referrers on, new signatures are looked for at the source (decisions.md)
    }
    assert service.wait(service.submit(body))["value"] == "FINISHED"
    p.seen.clear()
    st = service.wait(service.submit(body))
    assert st["value"] == "FINISHED", st
    assert st["finished_endpoints"] == [open_reg.endpoint]
    counts = manifest_requests(p)
    assert counts["GET"] == 0, [(m, path) for m, path, _h in p.seen if "manifests" in path or "referrers" in path]
    assert counts["HEAD"] >= 1  # the submit check and the worker's own HEAD


def test_resync_with_one_target_missing_plans_once_and_copies_only_there(
    faults: list[FaultProxy], repo: str, src_reg: RegistryServer, open_reg: RegistryServer, token_reg: RegistryServer
) -> None:
    img = images.image([b"x" * 5000, b"y" * 7000]).push(src_reg.http(), repo, "v1")
    p = proxy(faults, src_reg, "pass")
    assert copy(via(p), repo, [target(open_reg, repo, "v1")]).ok
    p.seen.clear()
    result = copy(via(p), repo, [target(open_reg, repo, "v1"), target(token_reg, repo, "v1")])
    assert result.ok, [t.error for t in result.targets]
    up_to_date, copied = result.targets
    assert up_to_date.notes == ["already up to date"]
    assert up_to_date.blobs_uploaded == 0
    assert copied.blobs_uploaded == len(img.blobs)
    assert manifest_requests(p)["GET"] == 1  # planned once, for the target that needed it
    assert_same_image(src_reg.http(), repo, "v1", token_reg.http(), repo, "v1")


# -- item 2: permanent faults end their target at once, with one line --------------------------------
def test_tls_to_a_plain_http_registry_fails_the_target_without_retries(
    service: Service, repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    images.image([b"tls " * 100]).push(src_reg.http(), repo, "v1")
    plain_as_https = f"https://127.0.0.1:{open_reg.port}/v2"  # verify_tls on: no HTTP fallback
    body = {
        "source": {"endpoint": src_reg.endpoint, "image": repo, "ref": "v1"},
        "targets": [{"endpoint": plain_as_https}, {"endpoint": open_reg.endpoint}],
    }
    st = service.wait(service.submit(body))
    assert st["value"] == "FAILED", st
    assert st["finished_endpoints"] == [open_reg.endpoint]
    bad = st["targets"][0]
    assert bad["state"] == "FAILED"
    assert bad["attempts"] == 1  # the job did not try it again: trying cannot fix TLS
    assert bad["retries"] == 0
    assert "TLS handshake failed" in bad["error"]
    assert f"127.0.0.1:{open_reg.port}" in bad["error"]
    assert "\n" not in bad["error"]


def test_an_invalid_url_is_not_retried(repo: str, src_reg: RegistryServer) -> None:
    images.image([b"url " * 100]).push(src_reg.http(), repo, "v1")
    bad = RegistryClient(Endpoint("http", "127.0.0.1:99999", ""))
    seen: list[str] = []

    async def go() -> None:
        with bad.watch_retries(seen.append):
            try:
                await bad.ping()
            finally:
                await bad.close()

    with pytest.raises(RegistryUnreachable) as info:
        asyncio.run(go())
    assert info.value.failure is Failure.INVALID_URL
    assert info.value.retryable is False
    assert seen == []
    unusable = RegistryRepository(RegistryClient(Endpoint("http", "127.0.0.1:99999", "")), repo)
    result = copy(client_for(src_reg), repo, [Target("bad", unusable, "v1")])
    (status,) = result.targets
    assert status.state is TargetState.FAILED
    assert status.retryable is False
    assert status.retries == 0
    assert "invalid URL" in (status.error or "")


# -- item 3: the ping goes through the same retrying path as every request --------------------------
def test_a_ping_answered_503_is_retried_like_any_request(
    faults: list[FaultProxy], repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    images.image([b"ping " * 100]).push(src_reg.http(), repo, "v1")
    p = proxy(faults, open_reg, "ping_5xx", count=2)
    t = Target("proxied", RegistryRepository(via(p), repo), "v1")
    result = copy(client_for(src_reg), repo, [t])
    assert result.ok, [s.error for s in result.targets]
    assert p.events["ping_5xx"] == 2
    assert result.targets[0].retries == 2
    assert_same_image(src_reg.http(), repo, "v1", open_reg.http(), repo, "v1")


# -- item 6: retries reach the listener of every target a client serves, without rebinding --------------
def test_retries_of_a_shared_client_are_counted_for_each_target(
    faults: list[FaultProxy], repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    images.image([b"shared " * 100]).push(src_reg.http(), repo, "v1")
    p = proxy(faults, open_reg, "burst_5xx", count=2)
    shared = via(p, retry=FAST_RETRY)
    targets = [
        Target("a", RegistryRepository(shared, f"{repo}/a"), "v1"),
        Target("b", RegistryRepository(shared, f"{repo}/b"), "v1"),
    ]

    async def go() -> list[int]:
        try:
            result = await CopyEngine().copy(RegistryRepository(client_for(src_reg), repo), "v1", targets)
            assert result.ok, [s.error for s in result.targets]
            return [s.retries for s in result.targets]
        finally:
            await shared.close()

    retries = asyncio.run(go())
    assert p.events["5xx"] == 2
    assert all(n >= 1 for n in retries), retries  # neither target's retries were taken by the other
    assert shared._retry_watchers == []  # the run left nothing bound to the client


def test_a_token_request_answered_5xx_is_retried_like_any_request(
    faults: list[FaultProxy], repo: str, src_reg: RegistryServer, token_reg: RegistryServer
) -> None:
    images.image([b"token " * 100]).push(src_reg.http(), repo, "v1")
    ts = token_reg.token_server
    assert ts is not None
    p = FaultProxy(ts.port, "burst_5xx", count=2).start()  # in front of the token server, not the registry
    faults.append(p)
    user, pw = next(iter(TOKEN_USERS.items()))
    auth = SeedAuth(
        url=f"http://127.0.0.1:{p.port}/token?service={ts.service}&scope=repository:{repo}:pull,push",
        token_type="Bearer",
        header={"Authorization": "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()},
    )
    dst = RegistryClient(parse_endpoint(token_reg.endpoint), seed_auth=auth, options=ClientOptions(retry=FAST_RETRY))
    result = copy(client_for(src_reg), repo, [Target("token", RegistryRepository(dst, repo), "v1")])
    assert result.ok, [s.error for s in result.targets]
    assert p.events["5xx"] == 2
    assert result.targets[0].retries == 2
    assert_same_image(src_reg.http(), repo, "v1", token_reg.http(), repo, "v1")


def test_a_request_cut_by_closing_its_client_is_not_retried(
    faults: list[FaultProxy], repo: str, src_reg: RegistryServer
) -> None:
    """The copy is over (the CLI closed its clients): a read still in flight fails once, quietly; it was
    retried (a warning on a finished command's stderr, a new session opened after the close)."""
    images.image().push(src_reg.http(), repo, "v1")
    p = proxy(faults, src_reg, "hold_manifest")

    async def go() -> list[str]:
        client = via(p)
        retried: list[str] = []
        with client.watch_retries(retried.append):
            read = asyncio.create_task(client.get_manifest(repo, "v1"))
            while not p.events["held_manifest"]:
                await asyncio.sleep(0.01)
            await client.close()
            with pytest.raises(RegistryUnreachable):
                await read
        await client.close()
        return retried

    try:
        assert asyncio.run(go()) == []
        assert p.count("GET", f"/v2/{repo}/manifests/v1") == 1
    finally:
        p.release()
