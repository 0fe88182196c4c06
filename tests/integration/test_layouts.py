"""OCI image layouts as source and target: registry -> archive/directory -> another registry."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import tarfile
from pathlib import Path

import pytest

from regcast.layouts import LayoutRepository, open_layout
from regcast.registry.client import RegistryClient
from regcast.transfer.engine import CopyEngine, CopyResult, Target, TransferOptions
from regcast.transfer.progress import TargetState
from regcast.transfer.remote import RegistryRepository
from regcast.transfer.repository import Repository
from tests.support import images
from tests.support.cli import regcast
from tests.support.clients import client_for, target
from tests.support.faults import FaultProxy, proxy, via
from tests.support.images import IMAGE_KINDS, signed_image
from tests.support.registry import RegistryServer
from tests.support.verify import assert_same_image

REF_NAME = "org.opencontainers.image.ref.name"
MiB = 1024 * 1024


def copy(source: Repository, ref: str, targets: list[Target], options: TransferOptions | None = None) -> CopyResult:
    async def go() -> CopyResult:
        try:
            return await CopyEngine(options or TransferOptions()).copy(source, ref, targets)
        finally:
            await source.close()
            for t in targets:
                await t.repo.close()

    return asyncio.run(go())


def from_registry(reg: RegistryServer, repo: str) -> RegistryRepository:
    return RegistryRepository(client_for(reg, read_only=True), repo)


def layout_target(text: str, tag: str) -> Target:
    return Target(text, open_layout(text, writable=True), tag)


def archive_members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isreg()}  # type: ignore[union-attr]


@pytest.fixture
def out(tmp_path: Path) -> Path:
    """A directory of its own (tmp_path also holds the test's Docker config)."""
    d = tmp_path / "out"
    d.mkdir()
    return d


def ok(result: CopyResult) -> None:
    assert result.ok, [(t.key, t.state, t.error) for t in result.targets]


@pytest.mark.parametrize("kind", list(IMAGE_KINDS))
def test_registry_to_archive_to_registry_is_byte_identical(
    kind: str, out: Path, repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    img = IMAGE_KINDS[kind]().push(src_reg.http(), repo, "v1")
    archive = out / "carry.tar"
    ok(copy(from_registry(src_reg, repo), "v1", [layout_target(f"oci-archive:{archive}", "v1")]))

    members = archive_members(archive)
    assert json.loads(members["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads(members["index.json"])
    assert [(e["digest"], e["annotations"][REF_NAME]) for e in index["manifests"]] == [(img.digest, "v1")]
    for name, data in members.items():  # every blob file hashes to its name
        if name.startswith("blobs/sha256/"):
            assert hashlib.sha256(data).hexdigest() == name.rsplit("/", 1)[1]
    assert not [p for p in out.iterdir() if p.name != "carry.tar"]  # no staging left behind

    result = copy(open_layout(f"oci-archive:{archive}:v1"), "v1", [target(open_reg, repo, "v1")])
    ok(result)
    assert result.source_digest == img.digest
    assert assert_same_image(src_reg.http(), repo, "v1", open_reg.http(), repo, "v1") == img.digest


def test_multi_tag_layouts_share_blobs(
    out: Path, repo: str, src_reg: RegistryServer, open_reg: RegistryServer, token_reg: RegistryServer
) -> None:
    shared = images.layer_bytes(64 * 1024)
    one = images.image([shared, images.layer_bytes(1000)]).push(src_reg.http(), repo, "v1")
    two = images.image([shared, images.layer_bytes(2000)]).push(src_reg.http(), repo, "v2")
    three = images.multi_platform(oci=True).push(src_reg.http(), repo, "v3")
    archive, directory = out / "all.tar", out / "dir"
    for tag in ("v1", "v2", "v3"):
        ok(
            copy(
                from_registry(src_reg, repo),
                tag,
                [layout_target(f"oci-archive:{archive}", tag), layout_target(f"oci:{directory}", tag)],
            )
        )
    members = archive_members(archive)
    on_disk = {
        str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*") if p.is_file() and p.name[0] != "."
    }
    for layout in (members, on_disk):
        entries = json.loads(layout["index.json"])["manifests"]
        assert {e["annotations"][REF_NAME]: e["digest"] for e in entries} == {
            "v1": one.digest,
            "v2": two.digest,
            "v3": three.digest,
        }
        assert f"blobs/sha256/{images.sha(shared)[7:]}" in layout  # stored once, used by two tags
        assert set(layout) - {"index.json", "oci-layout"} == {
            f"blobs/sha256/{d[7:]}"
            for img in (one, two, three)
            for d in [*img.blobs, img.digest, *(c.digest for c in img.children)]
        }  # blobs and manifests, each once
    # each tag back out, from each kind of layout, to a registry
    for tag, src in [("v1", f"oci-archive:{archive}"), ("v2", f"oci:{directory}"), ("v3", f"oci-archive:{archive}")]:
        ok(copy(open_layout(f"{src}:{tag}"), tag, [target(open_reg, repo, tag), target(token_reg, repo, tag)]))
        for reg in (open_reg, token_reg):
            assert_same_image(src_reg.http(), repo, tag, reg.http(), repo, tag)


def test_many_tags_one_archive_rewrite(out: Path, repo: str, src_reg: RegistryServer) -> None:
    """The mirror-set way: autocommit off, one copy per tag, one commit at the end."""
    imgs = {tag: images.image().push(src_reg.http(), repo, tag) for tag in ("a", "b", "c")}
    archive = out / "mirror.tar"

    async def go() -> None:
        layout = open_layout(f"oci-archive:{archive}", writable=True, autocommit=False)
        source = from_registry(src_reg, repo)
        try:
            for tag in imgs:
                ok(await CopyEngine().copy(source, tag, [Target("layout", layout, tag)]))
            assert not archive.exists()  # nothing committed yet
            await layout.flush()
        finally:
            await layout.close()
            await source.close()

    asyncio.run(go())
    index = json.loads(archive_members(archive)["index.json"])
    assert {e["annotations"][REF_NAME]: e["digest"] for e in index["manifests"]} == {
        t: i.digest for t, i in imgs.items()
    }
    assert [p.name for p in out.iterdir()] == ["mirror.tar"]


def test_tampered_blob_in_archive_is_refused_before_any_commit(
    out: Path, repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    layer = os.urandom(256 * 1024)
    img = images.image([layer]).push(src_reg.http(), repo, "v1")
    archive = out / "carry.tar"
    ok(copy(from_registry(src_reg, repo), "v1", [layout_target(f"oci-archive:{archive}", "v1")]))
    with tarfile.open(archive) as tar:
        member = tar.getmember(f"blobs/sha256/{images.sha(layer)[7:]}")
    with open(archive, "r+b") as f:  # one byte changed, size unchanged
        f.seek(member.offset_data + 1000)
        byte = f.read(1)
        f.seek(member.offset_data + 1000)
        f.write(bytes([byte[0] ^ 0xFF]))

    result = copy(open_layout(f"oci-archive:{archive}"), "v1", [target(open_reg, repo, "v1")])
    t = result.targets[0]
    assert t.state is TargetState.FAILED
    assert f"source oci-archive:{archive}" in (t.error or "")
    assert images.sha(layer) in (t.error or "")
    assert open_reg.http().head_blob(repo, images.sha(layer)) == 404  # never committed
    assert open_reg.http().get_manifest(repo, "v1").status_code == 404
    assert img.digest  # the untampered manifest was readable; the layer was not


def test_interrupted_write_leaves_no_layout_that_looks_complete(
    faults: list[FaultProxy], out: Path, repo: str, src_reg: RegistryServer
) -> None:
    images.image([os.urandom(MiB), os.urandom(MiB)]).push(src_reg.http(), repo, "v1")
    p = proxy(faults, src_reg, "corrupt_always")
    source = RegistryRepository(client_for_proxy(p), repo)
    archive, directory = out / "out.tar", out / "dir"
    result = copy(
        source, "v1", [layout_target(f"oci-archive:{archive}", "v1"), layout_target(f"oci:{directory}", "v1")]
    )
    assert [t.state for t in result.targets] == [TargetState.FAILED, TargetState.FAILED]
    assert not archive.exists()
    assert not (directory / "index.json").exists()
    leftovers = [p for p in directory.rglob("*") if p.is_file()] if directory.exists() else []
    assert leftovers == []  # no temporary blob file left either
    assert [p.name for p in out.iterdir() if p.name != "dir"] == []


def client_for_proxy(p: FaultProxy) -> RegistryClient:
    return via(p)


def test_one_source_read_fans_out_to_registries_and_an_archive(
    faults: list[FaultProxy],
    out: Path,
    repo: str,
    src_reg: RegistryServer,
    open_reg: RegistryServer,
    token_reg: RegistryServer,
    basic_reg: RegistryServer,
    ca_bundle: Path,
) -> None:
    img = images.image([os.urandom(3 * MiB), os.urandom(MiB)]).push(src_reg.http(), repo, "v1")
    p = proxy(faults, src_reg, "pass")
    archive = out / "a.tar"
    targets = [target(r, repo, "v1", ca_bundle) for r in (open_reg, token_reg, basic_reg)]
    ok(
        copy(
            RegistryRepository(client_for_proxy(p), repo),
            "v1",
            [*targets, layout_target(f"oci-archive:{archive}", "v1")],
            TransferOptions(detach_after=0),  # reads counted exactly: no detach on a loaded machine
        )
    )
    blob_gets = [path for method, path, _h in p.seen if method == "GET" and "/blobs/" in path]
    assert len(blob_gets) == len(img.blobs)  # each blob read from the source once
    for r in (open_reg, token_reg, basic_reg):
        assert_same_image(src_reg.http(), repo, "v1", r.http(), repo, "v1")
    assert json.loads(archive_members(archive)["index.json"])["manifests"][0]["digest"] == img.digest


def test_cli_export_and_import(out: Path, repo: str, src_reg: RegistryServer, open_reg: RegistryServer) -> None:
    img = images.multi_platform(oci=True).push(src_reg.http(), repo, "1.0")
    archive = out / "site.tar"
    done = regcast("copy", f"127.0.0.1:{src_reg.port}/{repo}:1.0", f"oci-archive:{archive}")
    assert done.returncode == 0, done.stderr
    assert f"ok oci-archive:{archive}:1.0 {img.digest}" in done.stdout
    back = regcast("copy", f"oci-archive:{archive}", f"127.0.0.1:{open_reg.port}/{repo}/imported")
    assert back.returncode == 0, back.stderr
    assert assert_same_image(src_reg.http(), repo, "1.0", open_reg.http(), f"{repo}/imported", "1.0") == img.digest
    # a second run finds the target up to date; a layout source is never written to
    before = archive.stat().st_mtime_ns
    again = regcast("copy", f"oci-archive:{archive}:1.0", f"127.0.0.1:{open_reg.port}/{repo}/imported")
    assert again.returncode == 0
    assert "already up to date" in again.stdout
    assert archive.stat().st_mtime_ns == before


def test_cli_layout_errors_are_one_line(out: Path, repo: str, src_reg: RegistryServer) -> None:
    missing = regcast("copy", f"oci-archive:{out}/nope.tar", f"oci:{out}/out")
    assert missing.returncode == 1
    assert missing.stderr.strip() == f"error: oci-archive:{out}/nope.tar: no such archive"
    for tag in ("a", "b"):
        images.image().push(src_reg.http(), repo, tag)
        assert regcast("copy", f"127.0.0.1:{src_reg.port}/{repo}:{tag}", f"oci:{out}/two").returncode == 0
    ambiguous = regcast("copy", f"oci:{out}/two", f"oci:{out}/other")
    assert ambiguous.returncode == 1
    assert f"oci:{out}/two holds 2 images: name one as oci:{out}/two:TAG (tags: a, b)" in ambiguous.stderr
    no_tag = regcast("copy", f"oci:{out}/two:c", f"oci:{out}/other")
    assert no_tag.returncode == 1
    assert "has no tag c (tags: a, b)" in no_tag.stderr
    assert "Traceback" not in missing.stderr + ambiguous.stderr + no_tag.stderr


def test_layout_source_refuses_writes(out: Path) -> None:
    layout = LayoutRepository(open_layout(f"oci:{out}/x").ref)
    with pytest.raises(Exception, match="refusing to write to source"):
        asyncio.run(layout.put_manifest("v1", b"{}", "application/json"))
    assert not (out / "x").exists()


def test_referrers_travel_through_an_archive(
    out: Path, repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    from regcast.transfer.referrers import ReferrerOptions

    img, sig, sbom, sbom_sig = signed_image(src_reg, repo)
    archive = out / "signed.tar"

    async def go(source: Repository, ref: str, t: Target) -> CopyResult:
        try:
            return await CopyEngine().copy(source, ref, [t], referrers=ReferrerOptions())
        finally:
            await source.close()
            await t.repo.close()

    there = asyncio.run(go(from_registry(src_reg, repo), "v1", layout_target(f"oci-archive:{archive}", "v1")))
    ok(there)
    assert there.targets[0].referrers == 3
    tags = {e["annotations"][REF_NAME] for e in json.loads(archive_members(archive)["index.json"])["manifests"]}
    fallback = img.digest.replace(":", "-")
    assert tags == {"v1", fallback, f"{fallback}.sig", sbom.digest.replace(":", "-")}

    back = asyncio.run(go(open_layout(f"oci-archive:{archive}:v1"), "v1", target(open_reg, repo, "v1")))
    ok(back)
    assert back.targets[0].referrers == 3
    assert_same_image(src_reg.http(), repo, "v1", open_reg.http(), repo, "v1")
    for ref in (images.cosign_tag(img.digest), sbom.digest, sbom_sig.digest):
        assert_same_image(src_reg.http(), repo, ref, open_reg.http(), repo, ref)
    assert images.index_entries(open_reg.http(), repo, img.digest) == [images.referrer_descriptor(sbom)]
    assert open_reg.http().get_manifest(repo, images.cosign_tag(img.digest)).content == sig.root.raw
