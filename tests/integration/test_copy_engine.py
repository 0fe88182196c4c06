"""The copy engine against real registries: every image kind to three targets of mixed flavours."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from regcast.registry.manifest import Platform
from regcast.transfer.engine import CopyEngine, CopyResult, Target
from regcast.transfer.progress import TargetState
from regcast.transfer.remote import RegistryRepository
from tests.support import images
from tests.support.clients import client_for, target
from tests.support.images import IMAGE_KINDS
from tests.support.registry import RegistryServer
from tests.support.verify import assert_same_image


def run_copy(
    src: RegistryServer,
    repo: str,
    ref: str,
    targets: list[Target],
    engine: CopyEngine | None = None,
    platforms: list[Platform] | None = None,
) -> CopyResult:
    async def go() -> CopyResult:
        source = client_for(src, read_only=True)
        try:
            return await (engine or CopyEngine()).copy(
                RegistryRepository(source, repo), ref, targets, platforms=platforms
            )
        finally:
            await source.close()
            for t in targets:
                await t.repo.close()

    return asyncio.run(go())


@pytest.mark.parametrize("kind", list(IMAGE_KINDS))
def test_copy_to_three_mixed_targets(
    kind: str,
    repo: str,
    src_reg: RegistryServer,
    open_reg: RegistryServer,
    basic_reg: RegistryServer,
    token_reg: RegistryServer,
    ca_bundle: Path,
) -> None:
    img = IMAGE_KINDS[kind]().push(src_reg.http(), repo, "v1")
    regs = [open_reg, basic_reg, token_reg]
    targets = [target(r, repo, "v1", ca_bundle) for r in regs]
    result = run_copy(src_reg, repo, "v1", targets)
    assert result.ok, [(t.key, t.error) for t in result.targets]
    assert result.source_digest == img.digest
    for r in regs:
        assert assert_same_image(src_reg.http(), repo, "v1", r.http(), repo, "v1") == img.digest
    for t in result.targets:
        assert t.state is TargetState.FINISHED
        assert t.bytes_done == t.bytes_total


def test_deep_repository_path_and_rename(
    repo: str, src_reg: RegistryServer, token_reg: RegistryServer, basic_reg: RegistryServer, ca_bundle: Path
) -> None:
    deep = f"{repo}/a/b/c/d.e/f_g/h__i"
    images.image().push(src_reg.http(), deep, "1.0")
    result = run_copy(
        src_reg, deep, "1.0", [target(token_reg, deep, "1.0"), target(basic_reg, "renamed/x", "prod", ca_bundle)]
    )
    assert result.ok, [t.error for t in result.targets]
    assert_same_image(src_reg.http(), deep, "1.0", token_reg.http(), deep, "1.0")
    assert_same_image(src_reg.http(), deep, "1.0", basic_reg.http(), "renamed/x", "prod")


def test_reference_by_digest(repo: str, src_reg: RegistryServer, open_reg: RegistryServer) -> None:
    img = images.multi_platform().push(src_reg.http(), repo, None)
    result = run_copy(src_reg, repo, img.digest, [target(open_reg, repo, img.digest)])
    assert result.ok, result.targets[0].error
    assert_same_image(src_reg.http(), repo, img.digest, open_reg.http(), repo, img.digest)


def test_second_copy_transfers_nothing(
    repo: str, src_reg: RegistryServer, open_reg: RegistryServer, token_reg: RegistryServer
) -> None:
    images.multi_platform().push(src_reg.http(), repo, "v1")
    first = run_copy(src_reg, repo, "v1", [target(open_reg, repo, "v1"), target(token_reg, repo, "v1")])
    assert first.ok
    assert all(t.bytes_uploaded > 0 for t in first.targets)
    second = run_copy(
        src_reg, repo, "v1", [target(open_reg, repo, "v1", overwrite=True), target(token_reg, repo, "v1")]
    )
    assert second.ok
    for t in second.targets:
        assert t.bytes_uploaded == 0
        assert t.blobs_uploaded == 0
        assert t.manifests_pushed == 0
        assert t.notes == ["already up to date"]
    # overwrite on: done; overwrite off: the seed's rule, the tag exists so the target is skipped
    assert [(t.state, t.reason) for t in second.targets] == [
        (TargetState.FINISHED, None),
        (TargetState.SKIPPED, "up-to-date"),
    ]


def test_existing_blob_is_not_uploaded_again(repo: str, src_reg: RegistryServer, open_reg: RegistryServer) -> None:
    layers = [images.layer_bytes(), images.layer_bytes()]
    img = images.image(layers).push(src_reg.http(), repo, "v1")
    open_reg.http().push_blob(repo, layers[0], images.sha(layers[0]))
    images.image().push(open_reg.http(), repo, "other")  # a repository with tags: every blob is HEADed
    result = run_copy(src_reg, repo, "v1", [target(open_reg, repo, "v1")])
    t = result.targets[0]
    assert result.ok, t.error
    assert t.blobs_present == 1
    assert t.blobs_uploaded == len(img.blobs) - 1
    assert t.bytes_uploaded == sum(len(b) for d, b in img.blobs.items() if d != images.sha(layers[0]))
    assert_same_image(src_reg.http(), repo, "v1", open_reg.http(), repo, "v1")


def test_mount_within_the_source_registry(repo: str, src_reg: RegistryServer) -> None:
    img = images.image().push(src_reg.http(), repo, "v1")
    result = run_copy(src_reg, repo, "v1", [target(src_reg, repo + "-copy", "v1")])
    t = result.targets[0]
    assert result.ok, t.error
    assert t.blobs_mounted == len(img.blobs)
    assert t.bytes_uploaded == 0
    assert_same_image(src_reg.http(), repo, "v1", src_reg.http(), repo + "-copy", "v1")


def test_two_targets_on_one_registry_upload_once_then_mount(
    repo: str, src_reg: RegistryServer, token_reg: RegistryServer
) -> None:
    img = images.image().push(src_reg.http(), repo, "v1")
    result = run_copy(
        src_reg, repo, "v1", [target(token_reg, repo + "/one", "v1"), target(token_reg, repo + "/two", "v1")]
    )
    assert result.ok, [t.error for t in result.targets]
    uploaded = sum(t.blobs_uploaded for t in result.targets)
    mounted = sum(t.blobs_mounted for t in result.targets)
    assert uploaded == len(img.blobs)
    assert mounted == len(img.blobs)
    for name in ("/one", "/two"):
        assert_same_image(src_reg.http(), repo, "v1", token_reg.http(), repo + name, "v1")


def test_earlier_copy_makes_later_copy_mount(repo: str, src_reg: RegistryServer, open_reg: RegistryServer) -> None:
    img = images.image().push(src_reg.http(), repo, "v1")
    engine = CopyEngine()
    assert run_copy(src_reg, repo, "v1", [target(open_reg, repo + "/first", "v1")], engine).ok
    later = run_copy(src_reg, repo, "v1", [target(open_reg, repo + "/later", "v1")], engine)
    assert later.ok
    assert later.targets[0].blobs_mounted == len(img.blobs)
    assert later.targets[0].bytes_uploaded == 0
    assert_same_image(src_reg.http(), repo, "v1", open_reg.http(), repo + "/later", "v1")


def test_overwrite_false_skips_existing_tag(repo: str, src_reg: RegistryServer, open_reg: RegistryServer) -> None:
    images.image().push(src_reg.http(), repo, "v1")
    other = images.image().push(open_reg.http(), repo, "v1")
    result = run_copy(src_reg, repo, "v1", [target(open_reg, repo, "v1", overwrite=False)])
    assert (result.targets[0].state, result.targets[0].reason) == (TargetState.SKIPPED, "tag-differs")
    assert open_reg.http().get_manifest(repo, "v1").content == other.root.raw
    result = run_copy(src_reg, repo, "v1", [target(open_reg, repo, "v1", overwrite=True)])
    assert result.ok
    assert_same_image(src_reg.http(), repo, "v1", open_reg.http(), repo, "v1")


def test_platform_filter_single_and_multiple(repo: str, src_reg: RegistryServer, open_reg: RegistryServer) -> None:
    img = images.multi_platform().push(src_reg.http(), repo, "v1")
    arm = img.children[1]
    one = run_copy(
        src_reg, repo, "v1", [target(open_reg, repo + "/one", "v1")], platforms=[Platform.parse("linux/arm64")]
    )
    assert one.ok
    assert one.source_digest == arm.digest
    assert open_reg.http().get_manifest(repo + "/one", "v1").content == arm.raw
    two = run_copy(
        src_reg,
        repo,
        "v1",
        [target(open_reg, repo + "/two", "v1")],
        platforms=[Platform.parse("linux/amd64"), Platform.parse("linux/s390x")],
    )
    assert two.ok
    pushed = open_reg.http().get_manifest(repo + "/two", "v1").json()
    assert [m["platform"]["architecture"] for m in pushed["manifests"]] == ["amd64", "s390x"]
    for child in (img.children[0], img.children[2]):
        assert open_reg.http().get_manifest(repo + "/two", child.digest).content == child.raw
    assert open_reg.http().get_manifest(repo + "/two", arm.digest).status_code == 404


def test_corrupted_source_blob_is_never_committed(
    repo: str, src_reg: RegistryServer, open_reg: RegistryServer, token_reg: RegistryServer
) -> None:
    layer = images.layer_bytes(200_000)
    images.image([layer]).push(src_reg.http(), repo, "v1")
    path = src_reg.blob_path(images.sha(layer))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same length, one byte flipped: the registry serves it as is
    path.write_bytes(bytes(data))
    result = run_copy(src_reg, repo, "v1", [target(open_reg, repo, "v1"), target(token_reg, repo, "v1")])
    for t in result.targets:
        assert t.state is TargetState.FAILED
        assert "source registry" in (t.error or "")
        assert images.sha(layer) in (t.error or "")
    for reg in (open_reg, token_reg):
        assert reg.http().head_blob(repo, images.sha(layer)) == 404
        assert reg.http().get_manifest(repo, "v1").status_code == 404


def test_wrong_password_and_unreachable_target_fail_alone(
    repo: str,
    src_reg: RegistryServer,
    basic_reg: RegistryServer,
    open_reg: RegistryServer,
    token_reg: RegistryServer,
    ca_bundle: Path,
) -> None:
    images.image().push(src_reg.http(), repo, "v1")
    dead = RegistryServer("dead", Path("/nonexistent"), port=1)
    targets = [
        target(basic_reg, repo, "v1", ca_bundle, password="wrong-password-123"),
        target(token_reg, repo, "v1", password="wrong-token-pw-456"),
        target(dead, repo, "v1"),
        target(open_reg, repo, "v1"),
    ]
    result = run_copy(src_reg, repo, "v1", targets)
    basic, token, unreachable, good = result.targets
    assert basic.state is TargetState.FAILED
    assert basic_reg.host in (basic.error or "")
    assert "401" in (basic.error or "")
    assert "wrong-password-123" not in (basic.error or "")
    assert token.state is TargetState.FAILED
    assert token_reg.host in (token.error or "")
    assert "wrong-token-pw-456" not in (token.error or "")
    assert unreachable.state is TargetState.FAILED
    assert "127.0.0.1:1" in (unreachable.error or "")
    assert "\n" not in (unreachable.error or "")
    assert good.state is TargetState.FINISHED
    assert_same_image(src_reg.http(), repo, "v1", open_reg.http(), repo, "v1")


def test_tls_without_ca_fails_clearly(repo: str, src_reg: RegistryServer, basic_reg: RegistryServer) -> None:
    images.image().push(src_reg.http(), repo, "v1")
    result = run_copy(src_reg, repo, "v1", [target(basic_reg, repo, "v1")])
    assert result.targets[0].state is TargetState.FAILED
    assert "certificate" in (result.targets[0].error or "")
    ok = run_copy(src_reg, repo, "v1", [target(basic_reg, repo, "v1", verify_tls=False)])
    assert ok.ok, ok.targets[0].error


def test_large_layer_streams_in_many_chunks_to_three_targets(
    repo: str,
    src_reg: RegistryServer,
    open_reg: RegistryServer,
    basic_reg: RegistryServer,
    token_reg: RegistryServer,
    ca_bundle: Path,
) -> None:
    import os

    big = os.urandom(20 * 1024 * 1024 + 12345)  # 20+ chunks of 1 MiB, an odd tail
    img = images.image([big, images.layer_bytes(10)]).push(src_reg.http(), repo, "v1")
    targets = [target(r, repo, "v1", ca_bundle) for r in (open_reg, basic_reg, token_reg)]
    result = run_copy(src_reg, repo, "v1", targets)
    assert result.ok, [t.error for t in result.targets]
    for t in result.targets:
        assert t.bytes_uploaded == sum(len(b) for b in img.blobs.values())
    for r in (open_reg, basic_reg, token_reg):
        assert_same_image(src_reg.http(), repo, "v1", r.http(), repo, "v1")
