"""Registry quirks beyond the named faults: how other registries and gateways answer (tests/support/quirks.py)."""

from __future__ import annotations

import os

import pytest

from regcast.transfer.engine import Target
from regcast.transfer.remote import RegistryRepository
from tests.support import images
from tests.support.clients import client_for, target
from tests.support.faults import FaultProxy, copy, via
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


def test_basic_challenge_listed_before_bearer(
    faults: list[FaultProxy], repo: str, src_reg: RegistryServer, token_reg: RegistryServer
) -> None:
    images.image().push(src_reg.http(), repo, "v1")
    p = quirk(faults, token_reg, "basic_and_bearer")
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
