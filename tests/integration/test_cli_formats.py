"""``regcast copy`` over image formats and references as a demanding docker/skopeo/crane user writes them.

Platform choice as docker and containerd make it, nested indexes, digest sources under a platform filter.
"""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

from regcast.layouts.index import REF_NAME
from tests.support import images
from tests.support.cli import regcast
from tests.support.faults import FaultProxy, proxy
from tests.support.proxy import TcpProxy
from tests.support.quirks import QuirkProxy
from tests.support.registry import RegistryServer
from tests.support.verify import assert_same_image


def test_a_platform_without_variant_picks_the_default_variant_as_docker_does(
    repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    """Docker Hub's official images list ``arm/v5`` before ``arm/v7``: ``docker pull --platform linux/arm``
    gets ``v7`` (containerd's default variant), not the first ``arm`` listed."""
    platforms = ("linux/amd64", "linux/arm/v5", "linux/arm/v7", "linux/arm64/v9", "linux/arm64/v8")
    img = images.multi_platform(oci=False, platforms=platforms).push(src_reg.http(), repo, "v1")
    for asked, child in [("linux/arm", 2), ("linux/arm64", 4), ("linux/arm/v5", 1)]:
        r = regcast("copy", "--platform", asked, f"{src_reg.host}/{repo}:v1", f"{open_reg.host}/{repo}:{child}")
        assert r.returncode == 0, r.stderr
        assert open_reg.http().get_manifest(repo, str(child)).content == img.children[child].raw, asked


def test_a_digest_source_under_a_platform_filter_lands_by_the_copied_digest(
    repo: str, src_reg: RegistryServer, open_reg: RegistryServer, tmp_path: Path
) -> None:
    """``SRC@sha256:<index>`` with ``--platform``: a DST without tag keeps the digest, and what it holds is the
    platform's manifest (or a new index), under its own digest; the index's digest cannot name it."""
    img = images.multi_platform(platforms=("linux/amd64", "linux/arm64", "linux/s390x")).push(src_reg.http(), repo)
    src = f"{src_reg.host}/{repo}@{img.digest}"
    arm = img.children[1]
    r = regcast("copy", "--platform", "linux/arm64", src, f"{open_reg.host}/{repo}", f"oci:{tmp_path / 'l'}")
    assert r.returncode == 0, r.stderr
    assert f"ok {open_reg.host}/{repo}@{arm.digest} {arm.digest} (" in r.stdout  # not @<the index's digest>
    assert f"ok oci:{tmp_path / 'l'}@{arm.digest} {arm.digest} (" in r.stdout
    assert open_reg.http().get_manifest(repo, arm.digest).content == arm.raw
    assert open_reg.http().get_manifest(repo, img.digest).status_code == 404
    index = json.loads((tmp_path / "l" / "index.json").read_text())
    assert [(e["digest"], e.get("annotations")) for e in index["manifests"]] == [(arm.digest, None)]
    two = regcast("copy", "--platform", "linux/arm64", "--platform", "linux/amd64", src, f"{open_reg.host}/{repo}/two")
    assert two.returncode == 0, two.stderr
    (copied,) = [line.split()[2] for line in two.stdout.splitlines() if line.startswith("ok ")]
    got = open_reg.http().get_manifest(f"{repo}/two", copied)
    assert got.status_code == 200
    assert [m["digest"] for m in got.json()["manifests"]] == [img.children[0].digest, arm.digest]


def test_a_target_named_by_another_digest_fails_before_any_upload(
    repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    img = images.image().push(src_reg.http(), repo, "v1")
    other = "sha256:" + "0" * 64
    r = regcast("copy", f"{src_reg.host}/{repo}:v1", f"{open_reg.host}/{repo}@{other}")
    assert r.returncode == 1
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: {open_reg.host}/{repo}@{other}: the image copied is {img.digest}, not the {other} this target names"
    ]
    assert all(open_reg.http().head_blob(repo, b) == 404 for b in img.blobs)


def test_a_platform_filter_finds_its_manifests_inside_a_nested_index(
    repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    """An index of indexes names no platform at its top: containerd walks into the inner index, so does the
    filter (it said "the index has no manifest for platform linux/arm64 (it has: none)")."""
    img = images.nested_index().push(src_reg.http(), repo, "v1")
    amd, arm = img.children[0], img.children[1]
    one = regcast("copy", "--platform", "linux/arm64", f"{src_reg.host}/{repo}:v1", f"{open_reg.host}/{repo}:arm")
    assert one.returncode == 0, one.stderr
    assert open_reg.http().get_manifest(repo, "arm").content == arm.raw
    args = ["--platform", "linux/arm64", "--platform", "linux/amd64"]
    two = regcast("copy", *args, f"{src_reg.host}/{repo}:v1", f"{open_reg.host}/{repo}:both")
    assert two.returncode == 0, two.stderr
    got = open_reg.http().get_manifest(repo, "both").json()
    assert [(m["digest"], m["platform"]["architecture"]) for m in got["manifests"]] == [
        (amd.digest, "amd64"),
        (arm.digest, "arm64"),
    ]
    assert_same_image(src_reg.http(), repo, arm.digest, open_reg.http(), repo, arm.digest)
    assert_same_image(src_reg.http(), repo, amd.digest, open_reg.http(), repo, amd.digest)


def test_several_platforms_keep_the_attestations_buildx_lists_for_them(
    repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    """buildx pushes provenance as ``unknown/unknown`` manifests in the index, each naming its image: the new
    index of a multi-platform filter keeps those of the platforms kept (they were all dropped)."""
    img = images.index_with_attestation(("amd64", "arm64", "s390x")).push(src_reg.http(), repo, "v1")
    args = ["--platform", "linux/amd64", "--platform", "linux/s390x"]
    r = regcast("copy", *args, f"{src_reg.host}/{repo}:v1", f"{open_reg.host}/{repo}:v1")
    assert r.returncode == 0, r.stderr
    got = open_reg.http().get_manifest(repo, "v1").json()
    kept = [img.children[i].digest for i in (0, 2, 3, 5)]
    assert [m["digest"] for m in got["manifests"]] == kept
    for digest in kept:
        assert_same_image(src_reg.http(), repo, digest, open_reg.http(), repo, digest)


def test_referrers_a_target_holds_are_not_written_again(
    repo: str, src_reg: RegistryServer, open_reg: RegistryServer, faults: list[FaultProxy]
) -> None:
    """A second copy re-PUT every signature and SBOM, the cosign tag too: a tag-immutable registry (ECR,
    Harbor rules) refuses that, so every copy after the first failed there; a copy onto its own source wrote."""
    images.signed_image(src_reg, repo)
    target = proxy(faults, open_reg, "pass")
    src, dst = f"{src_reg.host}/{repo}:v1", f"127.0.0.1:{target.port}/{repo}:v1"
    first = regcast("copy", src, dst)
    assert first.returncode == 0, first.stderr
    assert "3 referrers" in first.stdout
    written = len(target.seen)
    again = regcast("copy", src, dst)
    assert again.returncode == 0, again.stderr
    assert "already up to date, 3 referrers" in again.stdout
    assert [m for m, _p, _h in target.seen[written:] if m not in ("GET", "HEAD")] == []
    own = proxy(faults, src_reg, "pass")
    at_source = f"127.0.0.1:{own.port}/{repo}:v1"
    onto_itself = regcast("copy", at_source, at_source)
    assert onto_itself.returncode == 0, onto_itself.stderr
    assert [m for m, _p, _h in own.seen if m not in ("GET", "HEAD")] == []


def test_no_overwrite_never_pushes_over_a_tag_it_could_not_check(
    repo: str, src_reg: RegistryServer, open_reg: RegistryServer, faults: list[FaultProxy]
) -> None:
    """Credentials that may push but not read cannot tell whether the tag exists: with ``--no-overwrite`` the
    target fails rather than push over what may be there (it pushed, replacing the tag)."""
    img = images.image().push(src_reg.http(), repo, "v1")
    there = images.image().push(open_reg.http(), repo, "v1")
    blind = QuirkProxy(open_reg.port, "push_only").start()
    faults.append(blind)
    dst = f"127.0.0.1:{blind.port}/{repo}:v1"
    r = regcast("copy", "--no-overwrite", f"{src_reg.host}/{repo}:v1", dst)
    assert r.returncode == 1, r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith(f"error: {dst}: ")
    assert "overwrite is off" in r.stderr
    assert blind.events["read_denied"] >= 1
    assert open_reg.http().get_manifest(repo, "v1").content == there.root.raw
    by_digest = regcast(
        "copy", "--no-overwrite", f"{src_reg.host}/{repo}:v1", f"127.0.0.1:{blind.port}/{repo}@{img.digest}"
    )
    assert by_digest.returncode == 0, by_digest.stderr  # a digest names one content: nothing to replace
    assert open_reg.http().get_manifest(repo, img.digest).content == img.root.raw


def test_an_index_whose_child_is_gone_is_not_called_a_missing_image(
    repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    """A child manifest garbage-collected at the source (or never mirrored): the image is there, incomplete;
    "source image ... not found" sent users looking for a typo in the reference."""
    img = images.multi_platform(platforms=("linux/amd64", "linux/arm64")).push(src_reg.http(), repo, "v1")
    gone = img.children[1].digest
    src_reg.blob_path(gone).unlink()
    r = regcast("copy", f"{src_reg.host}/{repo}:v1", f"{open_reg.host}/{repo}:v1")
    assert r.returncode == 1
    (line,) = [x for x in r.stderr.splitlines() if not x.startswith("progress ")]
    assert line.startswith(f"error: registry {src_reg.host}: index {img.digest} lists {gone}, which is not there (")
    assert "not found" not in line
    one = regcast("copy", "--platform", "linux/arm64", f"{src_reg.host}/{repo}:v1", f"{open_reg.host}/{repo}:arm")
    assert one.returncode == 1
    assert f"index {img.digest} lists {gone}, which is not there" in one.stderr
    assert open_reg.http().get_manifest(repo, "v1").status_code == 404


def test_a_layout_holding_one_image_and_its_referrers_is_read_without_a_tag(
    repo: str, src_reg: RegistryServer, open_reg: RegistryServer, tmp_path: Path
) -> None:
    """``regcast copy reg/app:v1 oci:DIR`` writes the image and its signatures and SBOMs under their referrer
    tags; ``regcast copy oci:DIR reg2/app`` said "holds 4 images: name one" (air-gapped transfer, CONTRACT 5)."""
    img, sig, sbom, _sbom_sig = images.signed_image(src_reg, repo)
    for layout in (f"oci:{tmp_path / 'dir'}", f"oci-archive:{tmp_path / 'a.tar'}"):
        out = regcast("copy", f"{src_reg.host}/{repo}:v1", layout)
        assert out.returncode == 0, out.stderr
        back = regcast("copy", layout, f"{open_reg.host}/{repo}/back")
        assert back.returncode == 0, back.stderr
        assert f"ok {open_reg.host}/{repo}/back:v1 {img.digest} " in back.stdout
        assert "3 referrers" in back.stdout
        dst = open_reg.http()
        assert dst.get_manifest(f"{repo}/back", images.cosign_tag(img.digest)).content == sig.root.raw
        assert sbom.digest in [e["digest"] for e in images.index_entries(dst, f"{repo}/back", img.digest)]


def test_credentials_kept_in_a_helper_are_named_not_silently_skipped(
    repo: str, src_reg: RegistryServer, basic_reg: RegistryServer, ca_bundle: Path, tmp_path: Path
) -> None:
    """Docker Desktop keeps logins in ``credsStore``; regcast runs no helper: it says so (once), then the
    registry's 401 follows, rather than a bare 401 that looked like a wrong password."""
    images.image().push(src_reg.http(), repo, "v1")
    (tmp_path / "config.json").write_text(json.dumps({"auths": {basic_reg.host: {}}, "credsStore": "desktop"}))
    dsts = [f"{basic_reg.host}/{repo}:a", f"{basic_reg.host}/{repo}:b"]
    r = regcast(
        "copy", "--ca-bundle", str(ca_bundle), f"{src_reg.host}/{repo}:v1", *dsts, env={"DOCKER_CONFIG": str(tmp_path)}
    )
    assert r.returncode == 1
    warned = [line for line in r.stderr.splitlines() if line.startswith("warning: ")]
    assert warned == [
        f"warning: {basic_reg.host}: the Docker config keeps its credentials in the credential helper "
        "docker-credential-desktop, which regcast does not run; going anonymous "
        "(give --dest-creds, --dest-creds-file or REGCAST_DEST_CREDS)"
    ]


def test_an_archive_read_while_the_same_copy_rewrites_it_still_reads_its_blobs(
    repo: str, src_reg: RegistryServer, open_reg: RegistryServer, tmp_path: Path
) -> None:
    """``oci-archive:a.tar:v1`` to ``a.tar:new`` and two registries, one slow: the archive target is done at
    once and renames a new archive over the path (a grown index.json moves every blob); the slow target,
    detached, reads its blobs from the source again later: by path, at the old offsets in the new file."""
    img = images.image([os.urandom(3 * 1024 * 1024) for _ in range(2)], oci=True).push(src_reg.http(), repo, "v1")
    archive = tmp_path / "a.tar"
    assert regcast("copy", f"{src_reg.host}/{repo}:v1", f"oci-archive:{archive}:v1").returncode == 0
    before = index_json_blocks(archive)
    slow = TcpProxy(open_reg.port, upload_rate=1024 * 1024).start()  # detached after 1 s: a second read
    try:
        grown = f"oci-archive:{archive}:{'t' * 128}"  # index.json grows past a 512-byte tar block: the blobs move
        dsts = [grown, f"{open_reg.host}/{repo}/fast", f"127.0.0.1:{slow.port}/{repo}/slow"]
        r = regcast("copy", f"oci-archive:{archive}:v1", *dsts)
    finally:
        slow.stop()
    assert r.returncode == 0, r.stderr
    assert index_json_blocks(archive) > before  # the blobs did move
    for path in (f"{repo}/fast", f"{repo}/slow"):
        assert open_reg.http().get_manifest(path, "v1").content == img.root.raw
        assert_same_image(src_reg.http(), repo, "v1", open_reg.http(), path, "v1")


def index_json_blocks(archive: Path) -> int:
    with tarfile.open(archive) as tar:
        return -(-tar.getmember("index.json").size // 512)


def test_one_platform_asked_twice_is_one_platform(repo: str, src_reg: RegistryServer, open_reg: RegistryServer) -> None:
    """A script's list with a repeat (or ``linux/x86_64`` beside ``linux/amd64``): the platform's image manifest,
    not a new index listing it alone (another digest, and an index where one image was asked for)."""
    img = images.multi_platform(platforms=("linux/amd64", "linux/arm64")).push(src_reg.http(), repo, "v1")
    args = ["--platform", "linux/amd64", "--platform", "linux/x86_64", "--platform", "Linux/AMD64"]
    r = regcast("copy", *args, f"{src_reg.host}/{repo}:v1", f"{open_reg.host}/{repo}:v1")
    assert r.returncode == 0, r.stderr
    assert open_reg.http().get_manifest(repo, "v1").content == img.children[0].raw


def test_platforms_comma_separated_as_buildx_and_podman_take_them(
    repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    img = images.multi_platform(platforms=("linux/amd64", "linux/arm64", "linux/s390x")).push(
        src_reg.http(), repo, "v1"
    )
    src = f"{src_reg.host}/{repo}:v1"
    comma = regcast("copy", "--platform", "linux/amd64,linux/s390x", src, f"{open_reg.host}/{repo}:comma")
    assert comma.returncode == 0, comma.stderr
    repeated = regcast("copy", "--platform", "linux/amd64", "--platform", "linux/s390x", src, f"{open_reg.host}/{repo}")
    assert repeated.returncode == 0, repeated.stderr
    got = open_reg.http().get_manifest(repo, "comma")
    assert got.content == open_reg.http().get_manifest(repo, "v1").content
    assert [m["digest"] for m in got.json()["manifests"]] == [img.children[0].digest, img.children[2].digest]
    bad = regcast("copy", "--platform", "linux/amd64,linux", src, f"{open_reg.host}/{repo}:bad")
    assert bad.returncode == 2
    assert "invalid platform 'linux'" in bad.stderr


def test_a_docker_save_archive_is_read_by_the_names_docker_wrote(
    repo: str, src_reg: RegistryServer, open_reg: RegistryServer, tmp_path: Path
) -> None:
    """``docker save alpine busybox`` (25+) writes an OCI layout whose entries both say ref.name ``latest``, the
    full name in ``io.containerd.image.name``: ``oci-archive:x.tar:alpine:latest`` picks one, as docker reads it."""
    alpine, busybox = images.image().push(src_reg.http(), repo, "a"), images.image().push(src_reg.http(), repo, "b")
    layout = tmp_path / "saved"
    for img in (alpine, busybox):
        assert regcast("copy", f"{src_reg.host}/{repo}@{img.digest}", f"oci:{layout}").returncode == 0
    index = json.loads((layout / "index.json").read_text())
    for entry, name in zip(index["manifests"], ("alpine", "busybox"), strict=True):
        entry["annotations"] = {"io.containerd.image.name": f"docker.io/library/{name}:latest", REF_NAME: "latest"}
    (layout / "index.json").write_text(json.dumps(index))
    archive = tmp_path / "saved.tar"
    with tarfile.open(archive, "w") as tar:
        for p in sorted(layout.rglob("*")):
            tar.add(p, arcname=str(p.relative_to(layout)), recursive=False)
    dst = f"{open_reg.host}/{repo}/loaded"
    for name, img in (("alpine:latest", alpine), ("docker.io/library/busybox:latest", busybox)):
        r = regcast("copy", f"oci-archive:{archive}:{name}", dst)
        assert r.returncode == 0, r.stderr
        assert f"ok {dst}:latest {img.digest} " in r.stdout
    both = regcast("copy", f"oci-archive:{archive}:latest", dst)
    assert both.returncode == 1
    assert "(docker.io/library/alpine:latest, docker.io/library/busybox:latest): name one in full" in both.stderr
