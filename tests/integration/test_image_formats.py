"""Image formats and shapes beyond tests/support/images.py's IMAGE_KINDS, copied with ``regcast copy`` as users
run it: every manifest byte for byte, every blob there, or one clear line saying why not (the formats audit).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

from tests.support import images
from tests.support.cli import regcast
from tests.support.hostile import HostileServer, serve
from tests.support.images import OCI_INDEX, OCI_MANIFEST, Image, Manifest, layer_bytes, sha
from tests.support.registry import RegistryHTTP, RegistryServer
from tests.support.verify import assert_same_image

SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
SCHEMA1_LINE = "Docker schema1 manifests are not supported (deprecated; convert to schema2)"


def _put(http: RegistryHTTP, repo: str, ref: str, raw: bytes, media_type: str) -> None:
    http.push_manifest(repo, ref, raw, media_type)


def _errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def _with_annotation(img: Image, value: bytes) -> Image:
    """``img`` with an annotation holding ``value`` as raw bytes (not necessarily UTF-8)."""
    doc = json.loads(img.root.raw)
    doc["annotations"] = {"org.example.note": "NOTE"}
    raw = json.dumps(doc).encode().replace(b"NOTE", value)
    return Image(Manifest(raw, img.root.media_type), img.children, img.blobs)


def test_manifests_holding_bytes_that_are_not_utf8_are_copied_byte_for_byte(
    repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    """An annotation written in Latin-1 (``caf\\xe9``): distribution stores it (Go reads such bytes as U+FFFD), so
    do skopeo and crane copy it; regcast refused the image as "not JSON". The bytes stay as they are, in an
    image, in an index and its child, and under a platform filter (which writes a new index)."""
    http = src_reg.http()
    latin1 = b"caf\xe9 \xff\xfe"
    img = _with_annotation(images.image(oci=True), latin1).push(http, repo, "v1")
    other = images.image(oci=True, arch="arm64").push(http, repo, None)
    idx = images.index(
        [(img, {"os": "linux", "architecture": "amd64"}), (other, {"os": "linux", "architecture": "arm64"})]
    )
    idx = _with_annotation(idx, latin1)
    _put(http, repo, "multi", idx.root.raw, OCI_INDEX)
    for ref in ("v1", "multi"):
        r = regcast("copy", f"{src_reg.host}/{repo}:{ref}", f"{open_reg.host}/{repo}:{ref}")
        assert r.returncode == 0, r.stderr
        assert_same_image(http, repo, ref, open_reg.http(), repo, ref)
    both = ("--platform", "linux/amd64", "--platform", "linux/arm64")
    r = regcast("copy", *both, f"{src_reg.host}/{repo}:multi", f"{open_reg.host}/{repo}:two")
    assert r.returncode == 0, r.stderr
    listed = json.loads(open_reg.http().get_manifest(repo, "two").content)["manifests"]
    assert [m["digest"] for m in listed] == [img.digest, other.digest]


def _schema1_signed() -> tuple[bytes, str]:
    """A signed schema1 manifest and the digest registries give it: its payload's, signatures left out (as
    distribution and containers/image's manifest.Digest compute it), never the digest of the bytes served."""
    doc = {
        "schemaVersion": 1,
        "name": "old/app",
        "tag": "v1",
        "architecture": "amd64",
        "fsLayers": [{"blobSum": "sha256:" + "a" * 64}],
        "history": [{"v1Compatibility": "{}"}],
    }
    payload = json.dumps(doc, indent=3).encode()
    signatures = (
        b',\n   "signatures": [\n      {"header": {"alg": "ES256"}, "signature": "c2ln", "protected": "cHJv"}\n   ]\n}'
    )
    return payload[:-2] + signatures, "sha256:" + hashlib.sha256(payload).hexdigest()


def _serving(manifests: dict[str, tuple[bytes, str, str]]) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A registry serving ``ref -> (bytes, Content-Type, Docker-Content-Digest)``; 404 for anything else."""

    async def handle(request: web.Request) -> web.StreamResponse:
        if request.path == "/v2/":
            return web.json_response({})
        ref = request.path.rsplit("/manifests/", 1)[-1]
        if "/manifests/" in request.path and ref in manifests:
            raw, ctype, digest = manifests[ref]
            headers = {"Content-Type": ctype, "Docker-Content-Digest": digest}
            return web.Response(body=b"" if request.method == "HEAD" else raw, headers=headers)
        return web.json_response({"errors": [{"code": "MANIFEST_UNKNOWN", "message": "unknown"}]}, status=404)

    return handle


def test_a_signed_schema1_source_is_refused_as_schema1_not_as_corrupt(
    hostile: list[HostileServer], open_reg: RegistryServer
) -> None:
    """A registry announces a signed schema1 manifest by its payload's digest: regcast said "manifest bytes hash to
    X, not the Y asked for" (naming the registry twice), sending users after a corrupt registry. By tag, by digest
    and as a manifest list's child, the one line says it is schema1; nothing is written."""
    raw, digest = _schema1_signed()
    child = {
        "mediaType": SCHEMA1_SIGNED,
        "size": len(raw),
        "digest": digest,
        "platform": {"os": "linux", "architecture": "amd64"},
    }
    listed = json.dumps({"schemaVersion": 2, "mediaType": images.DOCKER_LIST, "manifests": [child]}).encode()
    src = serve(
        hostile,
        _serving(
            {
                "v1": (raw, SCHEMA1_SIGNED, digest),
                digest: (raw, SCHEMA1_SIGNED, digest),
                "list": (listed, images.DOCKER_LIST, sha(listed)),
            }
        ),
    )
    host = f"127.0.0.1:{src.port}"
    for shown, named in ((":v1", "v1"), (f"@{digest}", digest), (":list", digest)):
        r = regcast("copy", f"{host}/old/app{shown}", f"{open_reg.host}/old/schema1:v1")
        assert r.returncode == 1, r.stdout
        assert _errors(r.stderr) == [f"error: registry {host}: manifest old/app:{named}: {SCHEMA1_LINE}"]
    assert open_reg.http().get_manifest("old/schema1", "v1").status_code == 404


@pytest.mark.parametrize("off", [100, -100], ids=["says-more", "says-less"])
def test_a_layer_its_manifest_gives_the_wrong_size_fails_saying_so_once(
    off: int, repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    """distribution does not check a descriptor's size against its blob: a manifest saying 100 bytes more (or
    less) than the layer holds is served. Said more, its bytes hash right, so "has N bytes hashing to <the same
    digest>" read as corruption; said less, "is longer than its N bytes": both were read again in full. Now one
    line says the manifest is wrong, after one read (said less: from the answer's length, before reading it),
    and nothing is pushed."""
    http = src_reg.http()
    config, layer = b'{"architecture":"amd64","os":"linux"}', layer_bytes(20_000)
    for blob in (config, layer):
        http.push_blob(repo, blob, sha(blob))
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": images.OCI_CONFIG, "size": len(config), "digest": sha(config)},
        "layers": [{"mediaType": images.OCI_LAYER, "size": len(layer) + off, "digest": sha(layer)}],
    }
    _put(http, repo, "v1", json.dumps(doc).encode(), OCI_MANIFEST)
    r = regcast("-v", "copy", f"{src_reg.host}/{repo}:v1", f"{open_reg.host}/{repo}:v1")
    assert r.returncode == 1
    said = f"blob {sha(layer)} is {len(layer)} bytes, not the {len(layer) + off} its manifest says; not committed"
    assert _errors(r.stderr) == [f"error: {open_reg.host}/{repo}:v1: source registry {src_reg.host}: {said}"]
    assert f"blob {sha(layer)} failed" not in r.stderr  # not read again: reading cannot change it
    assert open_reg.http().get_manifest(repo, "v1").status_code == 404


class _NoForeignUrls(RegistryServer):
    """distribution as it ships: no ``validation.manifests.urls.allow``, so it takes no foreign layer URL."""

    def config(self) -> str:
        allow = "validation:\n  manifests:\n    urls:\n      allow:\n        - ^https?://\n"
        assert allow in super().config()
        return super().config().replace(allow, "")


def test_a_registry_refusing_foreign_layer_urls_is_named_with_the_layer(
    tmp_path: Path, repo: str, src_reg: RegistryServer
) -> None:
    """distribution 2.8 answers such a manifest 500 with ``UNKNOWN`` first and ``MANIFEST_BLOB_UNKNOWN <digest>``
    after it: regcast said "500 UNKNOWN: unknown error". The line now names the foreign layer and why it is not
    there; the layer is still never pushed, and the tag not written."""
    target = _NoForeignUrls("no-urls", tmp_path / "no-urls").start()
    try:
        img = images.foreign_layer_image().push(src_reg.http(), repo, "v1")
        foreign = json.loads(img.root.raw)["layers"][-1]["digest"]
        r = regcast("copy", f"{src_reg.host}/{repo}:v1", f"{target.host}/{repo}:v1")
        assert r.returncode == 1
        (line,) = _errors(r.stderr)
        assert f"answered 500 MANIFEST_BLOB_UNKNOWN: blob unknown to registry ({foreign}): " in line
        assert line.endswith(
            f": {foreign} is a foreign layer (urls), never pushed; this registry refuses its URL "
            "(distribution: validation.manifests.urls.allow)"
        )
        assert target.http().head_blob(repo, foreign) == 404
        assert target.http().get_manifest(repo, "v1").status_code == 404
    finally:
        target.stop()


def _no_media_type_index(http: RegistryHTTP, repo: str) -> str:
    """An OCI index and its children without ``mediaType`` (optional in OCI): the Content-Type comes from the source."""
    imgs = [images.oci_without_media_type(), images.image(oci=True, arch="arm64")]
    entries = []
    for img, arch in zip(imgs, ("amd64", "arm64"), strict=True):
        img.push(http, repo, None)
        entries.append(
            {"size": len(img.root.raw), "digest": img.digest, "platform": {"os": "linux", "architecture": arch}}
        )
    _put(http, repo, "v1", json.dumps({"schemaVersion": 2, "manifests": entries}).encode(), OCI_INDEX)
    return "v1"


def _nondistributable_kinds(http: RegistryHTTP, repo: str) -> str:
    """OCI's three non-distributable layer types with ``urls`` (not at the source): none pushed, the rest is."""
    foreign = [
        {
            "mediaType": f"application/vnd.oci.image.layer.nondistributable.v1.tar{ext}",
            "size": 512,
            "urls": ["https://x.invalid/l"],
        }
        for ext in ("", "+gzip", "+zstd")
    ]
    for f in foreign:
        f["digest"] = sha(os.urandom(512))
    images.image([layer_bytes()], oci=True, foreign=foreign).push(http, repo, "v1")
    return "v1"


def _one_blob_everywhere(http: RegistryHTTP, repo: str) -> str:
    """The empty JSON blob as config and as two layers: one upload, three descriptors."""
    desc = {"mediaType": "application/vnd.oci.empty.v1+json", "size": 2, "digest": sha(b"{}")}
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/x.t",
        "config": desc,
        "layers": [desc, desc],
    }
    http.push_blob(repo, b"{}", sha(b"{}"))
    _put(http, repo, "v1", json.dumps(doc).encode(), OCI_MANIFEST)
    return "v1"


def _index_of_everything(http: RegistryHTTP, repo: str) -> str:
    """One image listed twice (two platforms), a Helm chart without platform, an artifact as ``unknown/unknown``."""
    img, chart, art = images.image(oci=True), images.helm_chart(), images.artifact_without_layers()
    for m in (img, chart, art):
        m.push(http, repo, None)

    def entry(m: Image, **extra: object) -> dict[str, object]:
        return {"mediaType": OCI_MANIFEST, "size": len(m.root.raw), "digest": m.digest, **extra}

    manifests = [
        entry(img, platform={"os": "linux", "architecture": "amd64"}),
        entry(img, platform={"os": "linux", "architecture": "arm64"}),
        entry(chart, artifactType="application/vnd.cncf.helm.config.v1+json"),
        entry(art, platform={"os": "unknown", "architecture": "unknown"}),
    ]
    raw = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}, indent=1).encode() + b"\n"
    _put(http, repo, "v1", raw, OCI_INDEX)
    return "v1"


def _keys_in_another_case(http: RegistryHTTP, repo: str) -> str:
    """Keys as Go reads them: any case, the last one winning (``"layers": [], "Layers": [...]``, an index's
    ``Manifests``); distribution takes them so and checks those blobs are there: they must be copied too."""
    img = images.image(oci=True)
    for digest, data in img.blobs.items():
        http.push_blob(repo, data, digest)
    raw = img.root.raw.replace(b'"layers":', b'"layers":[],"Layers":')
    _put(http, repo, sha(raw), raw, OCI_MANIFEST)
    entry = {
        "mediaType": OCI_MANIFEST,
        "size": len(raw),
        "digest": sha(raw),
        "Platform": {"OS": "linux", "architecture": "amd64"},
    }
    _put(
        http,
        repo,
        "v1",
        json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "Manifests": [entry]}).encode(),
        OCI_INDEX,
    )
    return "v1"


SHAPES: dict[str, Callable[[RegistryHTTP, str], str]] = {
    "keys-in-another-case": _keys_in_another_case,
    "index-without-media-types": _no_media_type_index,
    "oci-nondistributable-kinds": _nondistributable_kinds,
    "one-blob-as-config-and-layers": _one_blob_everywhere,
    "index-of-everything": _index_of_everything,
}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_shapes_a_registry_holds_are_copied_exactly(
    shape: str, repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    http = src_reg.http()
    ref = SHAPES[shape](http, repo)
    r = regcast("copy", f"{src_reg.host}/{repo}:{ref}", f"{open_reg.host}/{repo}:{ref}")
    assert r.returncode == 0, r.stderr
    assert_same_image(http, repo, ref, open_reg.http(), repo, ref)
