"""Image layouts as an outside tester writes them (CONTRACT section 5): sha512 blobs, untagged entries."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path
from typing import Any

from tests.support import images
from tests.support.cli import regcast
from tests.support.images import signed_image
from tests.support.registry import RegistryServer

REF_NAME = "org.opencontainers.image.ref.name"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def _put(root: Path, data: bytes, algorithm: str) -> str:
    hexpart = hashlib.new(algorithm, data).hexdigest()
    (root / "blobs" / algorithm).mkdir(parents=True, exist_ok=True)
    (root / "blobs" / algorithm / hexpart).write_bytes(data)
    return f"{algorithm}:{hexpart}"


def hand_made_layout(root: Path, algorithm: str, ref_name: str | None) -> tuple[str, bytes]:
    """A one-image layout written by hand (as a tester's script or umoci would), every digest in
    ``algorithm``; ``ref_name`` None: an index entry without a name, as crane and oras write one."""
    config = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
    layer = b"layer bytes of " + algorithm.encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": _put(root, config, algorithm),
            "size": len(config),
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": _put(root, layer, algorithm),
                "size": len(layer),
            }
        ],
    }
    raw = json.dumps(manifest).encode()
    digest = _put(root, raw, algorithm)
    entry: dict[str, object] = {"mediaType": OCI_MANIFEST, "digest": digest, "size": len(raw)}
    if ref_name is not None:
        entry["annotations"] = {REF_NAME: ref_name}
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [entry]}))
    (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    return digest, raw


def index_entries(root: Path) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = json.loads((root / "index.json").read_text())["manifests"]
    return entries


def test_a_sha512_layout_keeps_its_digests_into_another_layout_and_back(
    tmp_path: Path, repo: str, open_reg: RegistryServer
) -> None:
    src = tmp_path / "sha512"
    digest, raw = hand_made_layout(src, "sha512", "docker.io/library/app:v5")
    copied = regcast("copy", f"oci:{src}:v5", f"oci:{tmp_path}/copy")
    assert copied.returncode == 0, copied.stderr
    [entry] = index_entries(tmp_path / "copy")
    assert entry["digest"] == digest  # was filed as sha256 under the tag: a digest the source never had
    assert entry["annotations"] == {REF_NAME: "v5"}
    assert (tmp_path / "copy" / "blobs" / "sha512" / digest.split(":")[1]).read_bytes() == raw
    again = regcast("copy", f"oci:{src}:v5", f"oci:{tmp_path}/copy")
    assert again.returncode == 0 and "already up to date" in again.stdout, again.stdout + again.stderr
    back = regcast("copy", f"oci:{tmp_path}/copy", f"127.0.0.1:{open_reg.port}/{repo}")
    assert back.returncode == 0, back.stderr
    assert f"ok 127.0.0.1:{open_reg.port}/{repo}:v5 {digest}" in back.stdout
    assert open_reg.http().get_manifest(repo, "v5").content == raw


def test_a_copy_by_digest_into_a_layout_without_tag_lists_it_unnamed(
    tmp_path: Path, repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    img = images.image().push(src_reg.http(), repo, "1.0")
    by_digest = f"127.0.0.1:{src_reg.port}/{repo}@{img.digest}"
    for where in (f"oci:{tmp_path}/dir", f"oci-archive:{tmp_path}/site.tar"):
        done = regcast("copy", by_digest, where)  # was a usage error: "name a tag when the source is a digest"
        assert done.returncode == 0, done.stderr
        assert f"ok {where}@{img.digest} {img.digest}" in done.stdout
        again = regcast("copy", by_digest, where)
        assert again.returncode == 0 and "already up to date" in again.stdout, again.stdout + again.stderr
    with tarfile.open(tmp_path / "site.tar") as tar:
        in_archive = tar.extractfile("index.json").read()  # type: ignore[union-attr]
    for index in ((tmp_path / "dir" / "index.json").read_bytes(), in_archive):
        assert json.loads(index)["manifests"] == [
            {"mediaType": img.root.media_type, "digest": img.digest, "size": len(img.root.raw)}
        ]
    back = regcast("copy", f"oci-archive:{tmp_path}/site.tar", f"127.0.0.1:{open_reg.port}/{repo}:imported")
    assert back.returncode == 0, back.stderr
    assert open_reg.http().get_manifest(repo, "imported").content == img.root.raw


def test_an_unnamed_entry_already_in_a_layout_stays_listed_once(
    tmp_path: Path, repo: str, src_reg: RegistryServer
) -> None:
    layout = tmp_path / "crane"
    digest, _ = hand_made_layout(layout, "sha256", None)
    img, *_ = signed_image(src_reg, repo)  # its referrers are several more index.json writes
    done = regcast("copy", f"127.0.0.1:{src_reg.port}/{repo}:v1", f"oci:{layout}")
    assert done.returncode == 0, done.stderr
    digests = [e["digest"] for e in index_entries(layout)]
    assert digests.count(digest) == 1, digests  # was repeated once per write
    assert img.digest in digests


def test_a_layout_source_that_is_not_there_or_of_the_other_kind_is_named_in_one_line(tmp_path: Path) -> None:
    archive = tmp_path / "site.tar"
    archive.write_bytes(b"")
    (tmp_path / "dir").mkdir()
    for src, msg in (
        (f"oci:{tmp_path}/nowhere", f"oci:{tmp_path}/nowhere: no such directory"),
        (f"oci:{archive}", f"oci:{archive}: a file, not a directory (an archive is oci-archive:{archive})"),
        (
            f"oci-archive:{tmp_path}/dir",
            f"oci-archive:{tmp_path}/dir: a directory, not an archive (a directory is oci:{tmp_path}/dir)",
        ),
        (f"oci:{tmp_path}/dir", f"oci:{tmp_path}/dir: not an OCI image layout (no index.json)"),
    ):
        done = regcast("copy", src, f"oci:{tmp_path}/out")
        assert done.returncode == 1
        assert done.stderr.strip().splitlines()[-1] == f"error: {msg}"
        assert "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


def test_a_hand_made_tar_is_read_and_extended(
    tmp_path: Path, repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    """``tar -cf site.tar -C dir .`` of a layout: ``./`` names, directory entries, blobs before
    index.json, and no ``oci-layout`` (a tester's script forgot it; skopeo reads such a layout)."""
    layout = tmp_path / "dir"
    digest, raw = hand_made_layout(layout, "sha256", "localhost/app:1.0")
    (layout / "oci-layout").unlink()
    archive = tmp_path / "site.tar"
    with tarfile.open(archive, "w", format=tarfile.GNU_FORMAT) as tar:
        for p in sorted(layout.rglob("*"), reverse=True):
            tar.add(p, arcname="./" + str(p.relative_to(layout)), recursive=False)
    back = regcast("copy", f"oci-archive:{archive}", f"127.0.0.1:{open_reg.port}/{repo}")
    assert back.returncode == 0, back.stderr
    assert f"ok 127.0.0.1:{open_reg.port}/{repo}:1.0 {digest}" in back.stdout
    img = images.image().push(src_reg.http(), repo, "2.0")
    added = regcast("copy", f"127.0.0.1:{src_reg.port}/{repo}:2.0", f"oci-archive:{archive}")
    assert added.returncode == 0, added.stderr
    with tarfile.open(archive) as tar:
        index = json.loads(tar.extractfile("index.json").read())  # type: ignore[union-attr]
        names = tar.getnames()
    assert [(e["digest"], e["annotations"][REF_NAME]) for e in index["manifests"]] == [
        (digest, "localhost/app:1.0"),
        (img.digest, "2.0"),
    ]
    assert "oci-layout" in names and f"blobs/{digest.replace(':', '/')}" in names
    for tag, want in (("1.0", raw), ("2.0", img.root.raw)):
        again = regcast("copy", f"oci-archive:{archive}:{tag}", f"127.0.0.1:{open_reg.port}/{repo}/again")
        assert again.returncode == 0, again.stderr
        assert open_reg.http().get_manifest(f"{repo}/again", tag).content == want


def test_an_image_without_a_name_is_read_by_digest(
    tmp_path: Path, repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    """Two unnamed entries (crane, oras, copies by digest): ``oci:DIR@DIGEST`` picks one; without it the
    error lists their digests."""
    one, two = images.image().push(src_reg.http(), repo, "1"), images.image().push(src_reg.http(), repo, "2")
    layout = f"oci:{tmp_path}/unnamed"
    for img in (one, two):
        assert regcast("copy", f"127.0.0.1:{src_reg.port}/{repo}@{img.digest}", layout).returncode == 0
    which = regcast("copy", layout, f"127.0.0.1:{open_reg.port}/{repo}:x")
    assert which.returncode == 1
    assert which.stderr.strip().splitlines()[-1] == (
        f"error: {layout} holds 2 images: name one as {layout}:TAG or {layout}@DIGEST "
        f"(tags: none; without a name: {one.digest}, {two.digest})"
    )
    done = regcast("copy", f"{layout}@{two.digest}", f"127.0.0.1:{open_reg.port}/{repo}:picked")
    assert done.returncode == 0, done.stderr  # was read as a directory named ...@sha256
    assert open_reg.http().get_manifest(repo, "picked").content == two.root.raw
    refused = regcast("copy", f"127.0.0.1:{src_reg.port}/{repo}:1", f"{layout}@{one.digest}")
    assert refused.returncode == 2
    assert f"{layout}@{one.digest}: a layout target is {layout} or {layout}:TAG" in refused.stderr


def named_layout(layout: Path, src_reg: RegistryServer, repo: str, names: dict[str, str]) -> Path:
    """A layout holding each image (by digest) under the full name given, as buildah and skopeo write them."""
    for digest in names:
        assert regcast("copy", f"127.0.0.1:{src_reg.port}/{repo}@{digest}", f"oci:{layout}").returncode == 0
    index = json.loads((layout / "index.json").read_text())
    for entry in index["manifests"]:
        entry["annotations"] = {REF_NAME: names[entry["digest"]]}
    (layout / "index.json").write_text(json.dumps(index))
    return layout


def test_skopeo_names_pick_the_image_by_its_full_reference(
    tmp_path: Path, repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    """``skopeo copy ... oci:DIR:localhost/app:1.0`` writes that whole name as ``ref.name``, and reads it back
    split at the first ``:``. Two images share the tag ``1.0`` under different names: the name decides."""
    a = images.image().push(src_reg.http(), repo, "a")
    b = images.image().push(src_reg.http(), repo, "b")
    layout = named_layout(
        tmp_path / "skopeo", src_reg, repo, {a.digest: "docker.io/library/a:1.0", b.digest: "localhost/app:1.0"}
    )
    archive = tmp_path / "skopeo.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(layout, arcname=".")
    dst = f"127.0.0.1:{open_reg.port}/{repo}"
    for src in (f"oci:{layout}", f"oci-archive:{archive}"):
        for img, name in ((b, "localhost/app:1.0"), (a, "docker.io/library/a:1.0")):
            done = regcast("copy", f"{src}:{name}", dst)  # was: no such directory {layout}:localhost/app
            assert done.returncode == 0, done.stderr
            assert f"ok {dst}:1.0 {img.digest}" in done.stdout
        missing = regcast("copy", f"{src}:localhost/nope:1.0", dst)
        assert missing.returncode == 1
        assert (
            missing.stderr.strip().splitlines()[-1]
            == f"error: {src} has no image named localhost/nope:1.0 (tags: 1.0, 1.0)"
        )


def test_submit_refuses_layouts_and_bad_references_in_one_line(tmp_path: Path) -> None:
    """``regcast submit`` queues a service job: registries only. ``oci:dir`` as a DST was read as
    ``docker.io/library/oci:dir`` (a job pushing to Docker Hub); a bad reference was a traceback."""
    server = "http://127.0.0.1:1"  # never reached: refused before any request
    for args, msg in (
        (["127.0.0.1:5000/app:1", f"oci:{tmp_path}/x"], f"oci:{tmp_path}/x: a service job copies between registries"),
        ([f"oci-archive:{tmp_path}/a.tar:1", "127.0.0.1:5000/app"], "an image layout is copied with regcast copy"),
        (["127.0.0.1:5000/Bad/X", "127.0.0.1:5000/app"], "invalid repository name 'Bad/X'"),
    ):
        done = regcast("submit", "--server", server, *args)
        assert done.returncode == 2, done.stderr
        assert msg in done.stderr
        assert "Traceback" not in done.stderr


def test_a_source_path_ending_in_a_colon_part_is_read_whole_when_it_is_there(
    tmp_path: Path, repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    """``oci-archive:/srv/my:app.tar`` reads ``:app.tar`` as a tag, by the grammar; a source whose path
    is then not there but the whole text is, is that path (a target keeps the grammar: it is created)."""
    img = images.image().push(src_reg.http(), repo, "1.0")
    for where in (f"oci:{tmp_path}/co:lon", f"oci-archive:{tmp_path}/my:app.tar"):
        made = regcast("copy", f"127.0.0.1:{src_reg.port}/{repo}:1.0", f"{where}:1.0")
        assert made.returncode == 0, made.stderr
        done = regcast("copy", where, f"127.0.0.1:{open_reg.port}/{repo}:{where.split(':')[0]}")
        assert done.returncode == 0, done.stderr  # was: no such directory / archive {tmp_path}/co, /my
        assert f"{img.digest}" in done.stdout
        tagged = regcast("copy", f"{where}:1.0", f"127.0.0.1:{open_reg.port}/{repo}")
        assert tagged.returncode == 0, tagged.stderr


def test_one_tag_under_two_full_names_is_never_a_silent_pick(
    tmp_path: Path, repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    """buildah and skopeo write full names (``docker.io/library/a:1.0``, ``localhost/b:1.0``): reading,
    ``:1.0`` names neither alone; writing ``:1.0`` moves the tag, as at a registry."""
    a, b, c = (images.image().push(src_reg.http(), repo, t) for t in ("a", "b", "c"))
    layout = named_layout(
        tmp_path / "names", src_reg, repo, {a.digest: "docker.io/library/a:1.0", b.digest: "localhost/b:1.0"}
    )
    dst = f"127.0.0.1:{open_reg.port}/{repo}"
    which = regcast("copy", f"oci:{layout}:1.0", dst)
    assert which.returncode == 1  # was: a's image, silently
    assert which.stderr.strip().splitlines()[-1] == (
        f"error: oci:{layout}: the tag 1.0 names 2 images (docker.io/library/a:1.0, localhost/b:1.0): name one in full"
    )
    named = regcast("copy", f"oci:{layout}:localhost/b:1.0", dst)
    assert named.returncode == 0 and f"ok {dst}:1.0 {b.digest}" in named.stdout, named.stdout + named.stderr
    put = regcast("copy", f"127.0.0.1:{src_reg.port}/{repo}:c", f"oci:{layout}:1.0")
    assert put.returncode == 0, put.stderr
    assert [(e["digest"], e["annotations"][REF_NAME]) for e in index_entries(layout)] == [(c.digest, "1.0")]
