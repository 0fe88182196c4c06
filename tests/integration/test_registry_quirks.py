"""Registry quirks beyond the named faults: how other registries and gateways answer (tests/support/quirks.py)."""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import json
import logging
import os
import re
import time
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp import web

from regcast._exceptions import DigestMismatch, RegistryUnreachable, UnsupportedManifest
from regcast.mirrors.tags import list_tags
from regcast.registry import referrers
from regcast.registry.client import ClientOptions, RegistryClient
from regcast.registry.reference import parse_endpoint
from regcast.transfer.engine import Target
from regcast.transfer.progress import TargetState
from regcast.transfer.remote import RegistryRepository
from tests.support import images
from tests.support.cli import regcast
from tests.support.clients import FAST_RETRY, client_for, target
from tests.support.faults import FaultProxy, copy, via
from tests.support.hostile import HostileServer, registry_serving, serve
from tests.support.quirks import QuirkProxy
from tests.support.registry import RegistryServer
from tests.support.verify import assert_same_image

MiB = 1024 * 1024


def quirk(faults: list[FaultProxy], reg: RegistryServer, scenario: str, **kw: object) -> QuirkProxy:
    p = QuirkProxy(reg.port, scenario, **kw).start()
    faults.append(p)
    return p


@pytest.mark.parametrize("side", ["source", "target"])
@pytest.mark.parametrize("scenario", ["bare_hex_digest", "upper_hex_digest"])
def test_a_malformed_digest_header_is_not_trusted(
    scenario: str, side: str, faults: list[FaultProxy], repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    """``Docker-Content-Digest`` is optional: a malformed one is ignored (the bytes are hashed), an upper-case
    one read as the same digest; neither fails the copy, and a second copy finds the target up to date."""
    img = images.image().push(src_reg.http(), repo, "v1")
    p = quirk(faults, src_reg if side == "source" else open_reg, scenario)
    for attempt in range(2):
        source = via(p) if side == "source" else client_for(src_reg)
        dest = Target("t", RegistryRepository(via(p) if side == "target" else client_for(open_reg), repo), "v1")
        result = copy(source, repo, [dest])
        assert result.ok, result.targets[0].error
        assert result.source_digest == img.digest
        assert result.targets[0].blobs_uploaded == (0 if attempt else len(img.blobs))
    assert p.events["rewritten"] >= 1
    assert_same_image(src_reg.http(), repo, "v1", open_reg.http(), repo, "v1")


def test_manifest_content_type_with_charset(
    faults: list[FaultProxy], repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    images.oci_without_media_type().push(src_reg.http(), repo, "v1")
    p = quirk(faults, src_reg, "charset")
    result = copy(via(p), repo, [target(open_reg, repo, "v1")])
    assert result.ok, result.targets[0].error
    assert p.events["rewritten"] >= 1
    assert_same_image(src_reg.http(), repo, "v1", open_reg.http(), repo, "v1")


@pytest.mark.parametrize("scenario", ["basic_and_bearer", "basic_then_bearer_headers"])
def test_basic_challenge_listed_before_bearer(
    scenario: str, faults: list[FaultProxy], repo: str, src_reg: RegistryServer, token_reg: RegistryServer
) -> None:
    """One header or one per challenge, Basic first: the registry's token is what it wants."""
    images.image().push(src_reg.http(), repo, "v1")
    p = quirk(faults, token_reg, scenario)
    result = copy(client_for(src_reg), repo, [Target("t", RegistryRepository(via(p, token_reg), repo), "v1")])
    assert result.ok, result.targets[0].error
    assert p.events["rewritten"] >= 1
    assert_same_image(src_reg.http(), repo, "v1", token_reg.http(), repo, "v1")


def test_a_clean_but_short_blob_body_is_never_committed(
    faults: list[FaultProxy], repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    images.image([os.urandom(MiB)]).push(src_reg.http(), repo, "v1")
    p = quirk(faults, src_reg, "short_blob")
    result = copy(via(p), repo, [target(open_reg, repo, "v1")])
    t = result.targets[0]
    assert not result.ok
    assert "source registry" in (t.error or "") and "not committed" in (t.error or "")
    assert p.events["short"] >= 2  # read again in full before giving up
    assert open_reg.http().get_manifest(repo, "v1").status_code == 404


def test_a_stalled_blob_read_is_cut_and_resumed(
    faults: list[FaultProxy], repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    """Never a hang: a source that stops sending mid-body is cut by the read timeout and resumed with Range."""
    img = images.image([os.urandom(2 * MiB)]).push(src_reg.http(), repo, "v1")
    p = quirk(faults, src_reg, "stall_blob", count=1)
    started = time.monotonic()
    result = copy(via(p, read_timeout=1.0), repo, [target(open_reg, repo, "v1")])
    assert result.ok, result.targets[0].error
    assert p.events["stalled"] == 1
    assert p.count("GET", "/blobs/") == len(img.blobs) + 1
    assert time.monotonic() - started < 30
    assert_same_image(src_reg.http(), repo, "v1", open_reg.http(), repo, "v1")


def test_a_manifest_that_never_comes_fails_in_bounded_time(
    faults: list[FaultProxy], repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    images.image().push(src_reg.http(), repo, "v1")
    p = quirk(faults, src_reg, "stall_manifest")
    started = time.monotonic()
    with pytest.raises(RegistryUnreachable, match=f"registry 127.0.0.1:{p.port}: GET .*/manifests/v1: timed out"):
        copy(via(p, request_timeout=1.0), repo, [target(open_reg, repo, "v1")])
    assert p.events["stalled"] == FAST_RETRY.timeouts == 2  # not every try: a second timeout ends it
    assert time.monotonic() - started < 30


def test_a_mount_the_token_server_will_not_grant_falls_back_to_an_upload(repo: str, token_reg: RegistryServer) -> None:
    """Docker Hub across organisations, robot accounts: the token server leaves out ``pull`` on the mount's
    source repository (no error, a narrower token); the registry answers the mount 401 insufficient_scope.
    The blob is uploaded instead, and the copy succeeds."""
    ts = token_reg.token_server
    assert ts
    img = images.image([os.urandom(MiB), os.urandom(1000)]).push(token_reg.http(), repo, "v1")
    asked: list[list[str]] = []

    def no_pull_beside_push(_user: str | None, scopes: list[str]) -> list[str]:
        asked.append(scopes)
        pushing = any(s.endswith("push") for s in scopes)
        return [s for s in scopes if not (pushing and s == f"repository:{repo}:pull")]

    ts.grant = no_pull_beside_push
    try:
        result = copy(client_for(token_reg), repo, [target(token_reg, f"{repo}/copy", "v1")])
    finally:
        ts.grant = None
    t = result.targets[0]
    assert result.ok, t.error
    assert [f"repository:{repo}/copy:pull,push", f"repository:{repo}:pull"] in asked  # the mount was asked for
    assert t.blobs_mounted == 0 and t.blobs_uploaded == len(img.blobs)
    assert_same_image(token_reg.http(), repo, "v1", token_reg.http(), f"{repo}/copy", "v1")


@pytest.mark.parametrize("strategy", ["monolithic", "chunked"])
def test_uploads_answered_200_instead_of_201_or_202(
    strategy: str, faults: list[FaultProxy], repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    img = images.image([os.urandom(MiB), os.urandom(1000)]).push(src_reg.http(), repo, "v1")
    p = quirk(faults, open_reg, "upload_200")
    dest = Target("t", RegistryRepository(via(p, upload_strategy=strategy), repo), "v1")
    result = copy(client_for(src_reg), repo, [dest])
    assert result.ok, result.targets[0].error
    assert p.events["PUT 200"] == len(img.blobs)
    assert p.events["PATCH 200"] == (len(img.blobs) if strategy == "chunked" else 0)
    assert_same_image(src_reg.http(), repo, "v1", open_reg.http(), repo, "v1")


@pytest.mark.parametrize("status", [429, 503])
@pytest.mark.parametrize("form", ["seconds", "http-date"])
def test_retry_after_is_honoured_in_seconds_or_as_a_date(
    status: int,
    form: str,
    faults: list[FaultProxy],
    repo: str,
    src_reg: RegistryServer,
    open_reg: RegistryServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A 429, or a 503 of a registry in maintenance, says when to come back: that is the wait (not the backoff)."""
    images.image().push(src_reg.http(), repo, "v1")

    def three_seconds_from_now() -> str:
        return email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=3), usegmt=True)

    retry_after = "2" if form == "seconds" else three_seconds_from_now
    p = quirk(faults, src_reg, "not_now", count=FAST_RETRY.attempts - 1, status=status, retry_after=retry_after)
    with caplog.at_level(logging.INFO, logger="regcast"):
        result = copy(via(p), repo, [target(open_reg, repo, "v1")])
    assert result.ok, result.targets[0].error
    assert p.events["not_now"] == FAST_RETRY.attempts - 1
    waits = [float(m.group(1)) for m in re.finditer(rf"answered {status}; retry \d+ in ([\d.]+)s", caplog.text)]
    assert len(waits) == FAST_RETRY.attempts - 1
    # the registry's wait, far over the backoff (0.2 s at most): 2 s, or a date 2-3 s ahead when it was read
    assert all(1.0 <= w <= 3.0 for w in waits), waits
    assert_same_image(src_reg.http(), repo, "v1", open_reg.http(), repo, "v1")


def test_a_registry_without_manifest_head_is_asked_with_get(
    faults: list[FaultProxy], repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    images.image().push(src_reg.http(), repo, "v1")
    p = quirk(faults, open_reg, "no_head")
    for attempt in range(2):
        dest = Target("t", RegistryRepository(via(p), repo), "v1")
        result = copy(client_for(src_reg), repo, [dest])
        assert result.ok, result.targets[0].error
        assert result.targets[0].manifests_pushed == (0 if attempt else 1)  # the second copy found it there
    assert p.events["head_refused"] >= 2
    assert_same_image(src_reg.http(), repo, "v1", open_reg.http(), repo, "v1")


def test_a_401_without_a_challenge_is_answered_with_the_one_of_the_ping(
    faults: list[FaultProxy], repo: str, src_reg: RegistryServer, token_reg: RegistryServer
) -> None:
    """gcr.io: only ``GET /v2/`` names the token server; a later 401 without a challenge drops the token
    and asks the remembered realm again."""
    assert token_reg.token_server
    img = images.image([os.urandom(MiB), os.urandom(1000)]).push(src_reg.http(), repo, "v1")
    p = quirk(faults, token_reg, "gcr_401")
    before = len(token_reg.token_server.requests)
    result = copy(client_for(src_reg), repo, [Target("t", RegistryRepository(via(p, token_reg), repo), "v1")])
    assert result.ok, result.targets[0].error
    assert p.events["401"] == 1
    pushes = [r for r in token_reg.token_server.requests[before:] if any("push" in s for s in r["scopes"])]  # type: ignore[attr-defined]
    assert len(pushes) >= 2  # asked again after the 401
    assert result.targets[0].blobs_uploaded == len(img.blobs)
    assert_same_image(src_reg.http(), repo, "v1", token_reg.http(), repo, "v1")


def test_a_tag_announcing_another_digest_than_its_bytes_is_copied_by_its_bytes(
    faults: list[FaultProxy],
    repo: str,
    src_reg: RegistryServer,
    open_reg: RegistryServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A registry announcing a wrong digest by tag (seen in the wild): the bytes are asked for by their own
    digest, and served so they are what it holds: copied, with a warning, under their true digest."""
    img = images.image().push(src_reg.http(), repo, "v1")
    p = quirk(faults, src_reg, "wrong_digest")
    with caplog.at_level(logging.WARNING, logger="regcast"):
        result = copy(via(p), repo, [target(open_reg, repo, "v1")])
    assert result.ok, result.targets[0].error
    assert result.source_digest == img.digest
    assert f"announced as sha256:{'0' * 64}, but the registry holds its bytes as {img.digest}" in caplog.text
    assert_same_image(src_reg.http(), repo, "v1", open_reg.http(), repo, "v1")


@pytest.mark.parametrize("count", [1, 100])
def test_a_manifest_corrupted_on_its_way_is_read_again_or_fails_clearly(
    count: int, faults: list[FaultProxy], repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    """The header is right, the bytes changed on the way: the registry serves no manifest by the bytes'
    digest, so the tag is read again; corrupted every time, the copy fails naming both digests and
    nothing is pushed."""
    img = images.image().push(src_reg.http(), repo, "v1")
    p = quirk(faults, src_reg, "corrupt_manifest", count=count)
    if count == 1:
        result = copy(via(p), repo, [target(open_reg, repo, "v1")])
        assert result.ok, result.targets[0].error
        assert result.source_digest == img.digest
        assert_same_image(src_reg.http(), repo, "v1", open_reg.http(), repo, "v1")
    else:
        with pytest.raises(DigestMismatch, match=f"not the {img.digest} asked for") as failed:
            copy(via(p), repo, [target(open_reg, repo, "v1")])
        assert str(failed.value).count(f"manifest {repo}:v1") == 1  # named once, though read twice
        assert p.events["corrupted"] == 2
        assert open_reg.http().get_manifest(repo, "v1").status_code == 404


def test_a_manifest_body_cut_mid_way_is_read_again(
    faults: list[FaultProxy], repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    """A reset while a manifest's body comes (the answer had begun: no request-level retry saw it) is retried
    like any broken read, up to the retry policy's attempts (the cuts land on the first manifest read, the
    root by tag; a child by digest goes through the same reader)."""
    pairs = [(images.image([os.urandom(1000)]), {"os": "linux", "architecture": a}) for a in ("amd64", "arm64")]
    images.index(pairs).push(src_reg.http(), repo, "v1")
    p = quirk(faults, src_reg, "reset_manifest", count=FAST_RETRY.attempts - 1)
    result = copy(via(p), repo, [target(open_reg, repo, "v1")])
    assert result.ok, result.targets[0].error
    assert p.events["reset"] == FAST_RETRY.attempts - 1
    assert_same_image(src_reg.http(), repo, "v1", open_reg.http(), repo, "v1")


def test_a_tag_list_page_cut_mid_way_is_read_again(
    faults: list[FaultProxy], repo: str, src_reg: RegistryServer
) -> None:
    img = images.image()
    for tag in ("a", "b", "c"):
        img.push(src_reg.http(), repo, tag)
    p = quirk(faults, src_reg, "reset_tags", count=FAST_RETRY.attempts - 1)

    async def listed() -> list[str]:
        async with via(p) as client:
            return await list_tags(client, repo, page_size=2)

    assert sorted(asyncio.run(listed())) == ["a", "b", "c"]
    assert p.events["reset"] == FAST_RETRY.attempts - 1


def test_a_sha512_layer_is_copied_under_its_digest(
    repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    layer, config = os.urandom(5000), b'{"architecture":"amd64","os":"linux"}'
    layer_digest = "sha512:" + hashlib.sha512(layer).hexdigest()
    raw = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": images.sha(config),
                "size": len(config),
            },
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": len(layer)}
            ],
        }
    ).encode()
    http = src_reg.http()
    http.push_blob(repo, layer, layer_digest)
    http.push_blob(repo, config, images.sha(config))
    http.push_manifest(repo, "v1", raw, "application/vnd.oci.image.manifest.v1+json")
    result = copy(client_for(src_reg), repo, [target(open_reg, repo, "v1")])
    assert result.ok, result.targets[0].error
    assert open_reg.http().get_blob(repo, layer_digest).content == layer
    assert open_reg.http().get_manifest(repo, "v1").content == raw


def test_push_refused_for_lack_of_scope_says_so(repo: str, src_reg: RegistryServer, token_reg: RegistryServer) -> None:
    """A token server grants less than asked without an error; the registry's 401 says insufficient_scope and
    which scope: the target's reason says it too (not just 'check the credentials')."""
    ts = token_reg.token_server
    assert ts
    images.image().push(src_reg.http(), repo, "v1")

    def pull_only(_user: str | None, scopes: list[str]) -> list[str]:
        return [s.replace("pull,push", "pull") for s in scopes]

    ts.grant = pull_only
    try:
        result = copy(client_for(src_reg), repo, [target(token_reg, repo, "v1")])
    finally:
        ts.grant = None
    t = result.targets[0]
    assert t.state is TargetState.FAILED
    # distribution names the actions in map order: pull,push or push,pull
    wanted = rf"\(insufficient_scope: repository:{re.escape(repo)}:(pull,push|push,pull)\)"
    assert re.search(wanted, t.error or ""), t.error


@pytest.mark.parametrize("body", [{"manifests": None}, {}])
def test_an_empty_referrers_page_may_say_null_or_nothing(body: dict[str, object], hostile: list[HostileServer]) -> None:
    digest = images.sha(b"subject")

    async def handle(request: web.Request) -> web.StreamResponse:
        if request.path == "/v2/":
            return web.json_response({})
        assert request.path == f"/v2/a/b/referrers/{digest}"
        index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", **body}
        return web.json_response(index, content_type="application/vnd.oci.image.index.v1+json")

    reg = serve(hostile, handle)

    async def listed() -> referrers.Listing | None:
        async with RegistryClient(parse_endpoint(reg.endpoint), options=ClientOptions(retry=FAST_RETRY)) as client:
            return await referrers.list_referrers(client, "a/b", digest)

    assert asyncio.run(listed()) == referrers.Listing([], False)


@pytest.mark.parametrize("body", [{}, {"errors": [{"code": "UNSUPPORTED", "message": "no"}]}])
def test_a_referrers_answer_that_is_not_an_index_is_not_taken_for_none(
    body: dict[str, object], hostile: list[HostileServer]
) -> None:
    """``{}`` or an error body answered 200 says nothing about referrers: refused as unreadable (the
    copy names it as left out), never read as "no referrers", which would skip the fallback tag."""
    digest = images.sha(b"subject")

    async def handle(request: web.Request) -> web.StreamResponse:
        if request.path == "/v2/":
            return web.json_response({})
        return web.json_response(body)

    reg = serve(hostile, handle)

    async def listed() -> referrers.Listing | None:
        async with RegistryClient(parse_endpoint(reg.endpoint), options=ClientOptions(retry=FAST_RETRY)) as client:
            return await referrers.list_referrers(client, "a/b", digest)

    with pytest.raises(UnsupportedManifest, match="no 'manifests' list"):
        asyncio.run(listed())


def test_a_manifest_in_its_own_formatting_keeps_every_byte(
    repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    """Keys out of order, tabs and CRLF, escaped and raw non-ASCII, a trailing newline: the digest is the
    hash of exactly these bytes, so they travel unchanged (never parsed and written again)."""
    layer, config = os.urandom(2000), b'{"os":"linux","architecture":"amd64"}'
    http = src_reg.http()
    http.push_blob(repo, layer, images.sha(layer))
    http.push_blob(repo, config, images.sha(config))
    lsha, csha = images.sha(layer), images.sha(config)
    raw = (
        f'{{\r\n\t"layers": [ {{"size": {len(layer)}, "digest": "{lsha}", "mediaType": '
        '"application/vnd.oci.image.layer.v1.tar"} ],'
        f'\r\n\t"config": {{"digest": "{csha}", "mediaType": "application/vnd.oci.image.config.v1+json", '
        f'"size": {len(config)}}},'
        '\r\n\t"annotations": {"caf\\u00e9": "na\u00efve \U0001f433"},'
        '\r\n\t"mediaType": "application/vnd.oci.image.manifest.v1+json", "schemaVersion": 2\r\n}\n'
    ).encode()
    http.push_manifest(repo, "v1", raw, "application/vnd.oci.image.manifest.v1+json")
    result = copy(client_for(src_reg), repo, [target(open_reg, repo, "v1")])
    assert result.ok, result.targets[0].error
    assert result.source_digest == images.sha(raw)
    assert open_reg.http().get_manifest(repo, "v1").content == raw
    assert open_reg.http().get_manifest(repo, images.sha(raw)).status_code == 200


@pytest.mark.parametrize("scenario", ["upload_lost", "upload_corrupt"])
def test_an_upload_the_registry_lost_or_got_mangled_goes_again_in_a_new_session(
    scenario: str, faults: list[FaultProxy], repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    """BLOB_UPLOAD_UNKNOWN (replicas without shared upload state, a restart) or DIGEST_INVALID (regcast sent
    verified bytes: they changed on the way) is no verdict on the blob: a new session passes."""
    img = images.image([os.urandom(MiB)]).push(src_reg.http(), repo, "v1")
    p = quirk(faults, open_reg, scenario)
    result = copy(client_for(src_reg), repo, [Target("t", RegistryRepository(via(p), repo), "v1")])
    assert result.ok, result.targets[0].error
    assert p.events["lost"] + p.events["corrupt answered 400"] == 1
    assert result.targets[0].retries == 1
    assert result.targets[0].blobs_uploaded == len(img.blobs)
    assert_same_image(src_reg.http(), repo, "v1", open_reg.http(), repo, "v1")


def test_a_schema1_source_is_refused_in_one_clear_line(hostile: list[HostileServer], open_reg: RegistryServer) -> None:
    """Old registries still serve Docker schema1 (signed) manifests; converting one changes its digest, so it
    is refused, saying why, before anything is written."""
    signed = {"schemaVersion": 1, "name": "a/b", "tag": "v1", "architecture": "amd64", "fsLayers": [], "history": []}
    raw = json.dumps({**signed, "signatures": [{"header": {}, "signature": "x", "protected": "y"}]}, indent=3)
    src = serve(
        hostile, registry_serving({"v1": (raw.encode(), "application/vnd.docker.distribution.manifest.v1+prettyjws")})
    )
    r = regcast("copy", f"127.0.0.1:{src.port}/a/b:v1", f"{open_reg.host}/a/schema1")
    assert r.returncode == 1
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: registry 127.0.0.1:{src.port}: manifest a/b:v1: Docker schema1 manifests are not supported "
        "(deprecated; convert to schema2)"
    ]
    assert open_reg.http().get_manifest("a/schema1", "v1").status_code == 404


def test_blobs_starting_at_once_share_one_token_request(
    repo: str, src_reg: RegistryServer, token_reg: RegistryServer
) -> None:
    """The token server is asked once per scope, not once per blob that starts without the token (token
    servers rate-limit too)."""
    ts = token_reg.token_server
    assert ts
    img = images.image([os.urandom(100_000) for _ in range(8)]).push(src_reg.http(), repo, "v1")
    before = len(ts.requests)
    result = copy(client_for(src_reg), repo, [target(token_reg, repo, "v1")])
    assert result.ok, result.targets[0].error
    assert result.targets[0].blobs_uploaded == len(img.blobs)
    asked = [str(r["scopes"]) for r in ts.requests[before:]]
    assert sorted(asked) == sorted(set(asked)), asked  # each scope set asked for once


@pytest.mark.parametrize("strategy", ["monolithic", "chunked"])
def test_upload_locations_on_another_server_are_followed(
    strategy: str, faults: list[FaultProxy], repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    """An upload service on another host (absolute Locations there): the upload goes there, PATCHes and PUT
    (the registry's credentials stay with its own host, as docker and crane do: tests/unit/test_auth.py)."""
    img = images.image([os.urandom(MiB), os.urandom(1000)]).push(src_reg.http(), repo, "v1")
    elsewhere = quirk(faults, open_reg, "pass")
    p = quirk(faults, open_reg, "location_elsewhere", elsewhere=f"127.0.0.1:{elsewhere.port}")
    dest = Target("t", RegistryRepository(via(p, upload_strategy=strategy), repo), "v1")
    result = copy(client_for(src_reg), repo, [dest])
    assert result.ok, result.targets[0].error
    assert p.events["elsewhere"] >= len(img.blobs)
    assert p.count("PUT", "/blobs/uploads/") == 0  # every upload PUT went to the other server
    assert elsewhere.count("PUT", "/blobs/uploads/") == len(img.blobs)
    assert_same_image(src_reg.http(), repo, "v1", open_reg.http(), repo, "v1")


def test_a_registry_that_never_answers_ends_the_cli_copy_in_one_line(
    hostile: list[HostileServer], open_reg: RegistryServer
) -> None:
    """Never a hang: a source that takes the connection and never answers is given up after a second
    timeout (REGCAST_REQUEST_TIMEOUT each), in one error line."""

    async def never(_request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    src = serve(hostile, never)
    started = time.monotonic()
    r = regcast(
        "copy", f"127.0.0.1:{src.port}/a/b:v1", f"{open_reg.host}/a/never", env={"REGCAST_REQUEST_TIMEOUT": "1"}
    )
    assert r.returncode == 1
    assert time.monotonic() - started < 30
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].endswith("timed out"), r.stderr
    assert len([p for m, p, _h in src.seen if p == "/v2/"]) == 2


def test_a_push_answered_with_a_wrong_digest_is_checked_by_the_digest_sent(
    faults: list[FaultProxy],
    repo: str,
    src_reg: RegistryServer,
    open_reg: RegistryServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The target announces another digest for the manifest pushed: asked by the digest sent, it serves the
    very bytes, so only its header was wrong (a warning); a target that stored other bytes fails."""
    img = images.image().push(src_reg.http(), repo, "v1")
    p = quirk(faults, open_reg, "wrong_put_digest")
    with caplog.at_level(logging.WARNING, logger="regcast"):
        result = copy(client_for(src_reg), repo, [Target("t", RegistryRepository(via(p), repo), "v1")])
    assert result.ok, result.targets[0].error
    assert p.events["rewritten"] >= 1
    assert f"it holds it as {img.digest}" in caplog.text
    assert_same_image(src_reg.http(), repo, "v1", open_reg.http(), repo, "v1")

    p2 = quirk(faults, open_reg, "reserialise_put")
    result = copy(client_for(src_reg), repo, [Target("t", RegistryRepository(via(p2), f"{repo}/other"), "v1")])
    t = result.targets[0]
    assert t.state is TargetState.FAILED
    assert "stored manifest v1 as sha256:" in (t.error or "") and f"not {img.digest}" in (t.error or ""), t.error


def test_a_tag_pushed_holding_other_bytes_fails_though_the_digest_sent_is_there(
    faults: list[FaultProxy], repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    """Pushed by tag, the tag itself is read back: the target already holds the digest sent (an earlier
    push by digest), so a GET by that digest serves the right bytes while the tag names rewritten ones."""
    img = images.image().push(src_reg.http(), repo, "v1")
    img.push(open_reg.http(), repo, None)  # the same image, by digest only
    p = quirk(faults, open_reg, "reserialise_put")
    result = copy(client_for(src_reg), repo, [Target("t", RegistryRepository(via(p), repo), "v1")])
    t = result.targets[0]
    assert p.events["reserialised"] >= 1
    assert t.state is TargetState.FAILED, "the tag holds other bytes, yet the copy claims it in sync"
    assert "stored manifest v1 as sha256:" in (t.error or "") and f"not {img.digest}" in (t.error or ""), t.error
    held = open_reg.http().get_manifest(repo, "v1")
    assert held.headers["Docker-Content-Digest"] != img.digest  # what the failure is about


@pytest.mark.parametrize("body", [{"name": "a/b", "tags": None}, {"name": "a/b"}, {"name": "a/b", "tags": []}])
def test_a_tag_list_saying_none_as_null_or_nothing_is_empty(
    body: dict[str, object], hostile: list[HostileServer]
) -> None:
    async def handle(request: web.Request) -> web.StreamResponse:
        if request.path == "/v2/":
            return web.json_response({})
        assert request.path == "/v2/a/b/tags/list"
        return web.json_response(body)

    reg = serve(hostile, handle)

    async def listed() -> list[str]:
        async with RegistryClient(parse_endpoint(reg.endpoint), options=ClientOptions(retry=FAST_RETRY)) as client:
            return await list_tags(client, "a/b")

    assert asyncio.run(listed()) == []


def test_a_tag_page_size_over_the_registrys_maximum_is_left_to_the_registry(
    faults: list[FaultProxy], repo: str, src_reg: RegistryServer
) -> None:
    img = images.image()
    for tag in ("a", "b", "c"):
        img.push(src_reg.http(), repo, tag)
    p = quirk(faults, src_reg, "max_tags", max=100)

    async def listed() -> list[str]:
        async with via(p) as client:
            return await list_tags(client, repo)  # n=1000

    assert sorted(asyncio.run(listed())) == ["a", "b", "c"]
    assert p.events["n_refused"] == 1
