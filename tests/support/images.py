"""Test images built by the tests: schema2, OCI, manifest lists, indexes, artifacts, odd layers."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field

from tests.support.registry import RegistryHTTP, RegistryServer

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_NONDIST = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer_bytes(size: int = 4096, seed: bytes | None = None) -> bytes:
    """A real gzip'd tar with one file of random content (``size`` bytes before compression)."""
    content = seed if seed is not None else os.urandom(size)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("file.bin")
        info.size = len(content)
        tar.addfile(info, io.BytesIO(content))
    return gzip.compress(buf.getvalue(), mtime=0)


@dataclass
class Manifest:
    raw: bytes
    media_type: str

    @property
    def digest(self) -> str:
        return sha(self.raw)


@dataclass
class Image:
    """A root manifest, its child manifests (push order) and every blob's bytes."""

    root: Manifest
    children: list[Manifest] = field(default_factory=list)
    blobs: dict[str, bytes] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        return self.root.digest

    def push(self, http: RegistryHTTP, repo: str, tag: str | None = "latest") -> Image:
        for digest, data in self.blobs.items():
            http.push_blob(repo, data, digest)
        for child in self.children:
            http.push_manifest(repo, child.digest, child.raw, child.media_type)
        http.push_manifest(repo, tag or self.digest, self.root.raw, self.root.media_type)
        return self


def _desc(media_type: str, data: bytes, **extra: object) -> dict[str, object]:
    return {"mediaType": media_type, "size": len(data), "digest": sha(data), **extra}


def image(
    layers: list[bytes] | None = None,
    *,
    oci: bool = False,
    pretty: bool = False,
    arch: str = "amd64",
    foreign: list[dict[str, object]] | None = None,
) -> Image:
    layers = layers if layers is not None else [layer_bytes(), layer_bytes()]
    config = json.dumps(
        {
            "architecture": arch,
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": []},
            "config": {"Env": [f"N={os.urandom(4).hex()}"]},
        }
    ).encode()
    ctype, ltype, mtype = (
        (OCI_CONFIG, OCI_LAYER, OCI_MANIFEST) if oci else (DOCKER_CONFIG, DOCKER_LAYER, DOCKER_MANIFEST)
    )
    layer_descs = [_desc(ltype, data) for data in layers] + list(foreign or [])
    doc: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": mtype,
        "config": _desc(ctype, config),
        "layers": layer_descs,
    }
    if pretty:
        # non-canonical: odd key order, indentation, trailing newline
        doc = {"layers": doc["layers"], "schemaVersion": 2, "config": doc["config"], "mediaType": mtype}
        raw = (json.dumps(doc, indent=4) + "\n").encode()
    else:
        raw = json.dumps(doc, separators=(",", ":")).encode()
    blobs = {sha(config): config}
    blobs.update({sha(data): data for data in layers})
    return Image(Manifest(raw, mtype), [], blobs)


def index(images: list[tuple[Image, dict[str, str]]], *, oci: bool = True) -> Image:
    itype = OCI_INDEX if oci else DOCKER_LIST
    doc = {
        "schemaVersion": 2,
        "mediaType": itype,
        "manifests": [
            {"mediaType": img.root.media_type, "size": len(img.root.raw), "digest": img.digest, "platform": plat}
            for img, plat in images
        ],
    }
    raw = json.dumps(doc, indent=2).encode()
    blobs: dict[str, bytes] = {}
    for img, _ in images:
        blobs.update(img.blobs)
    return Image(Manifest(raw, itype), [img.root for img, _ in images], blobs)


def multi_platform(
    oci: bool = True,
    platforms: tuple[str, ...] = ("linux/amd64", "linux/arm64/v8", "linux/s390x"),
    shared_base: bool = True,
) -> Image:
    base = layer_bytes(8192)
    imgs = []
    for p in platforms:
        parts = p.split("/")
        plat = {"os": parts[0], "architecture": parts[1]}
        if len(parts) == 3:
            plat["variant"] = parts[2]
        layers = ([base] if shared_base else []) + [layer_bytes(2048)]
        imgs.append((image(layers, oci=oci, arch=parts[1]), plat))
    return index(imgs, oci=oci)


def helm_chart() -> Image:
    config = json.dumps({"name": "demo", "version": "1.2.3", "apiVersion": "v2"}).encode()
    chart = layer_bytes(3000)
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": _desc("application/vnd.cncf.helm.config.v1+json", config),
        "layers": [_desc("application/vnd.cncf.helm.chart.content.v1.tar+gzip", chart)],
        "annotations": {"org.opencontainers.image.title": "demo"},
    }
    raw = json.dumps(doc).encode()
    return Image(Manifest(raw, OCI_MANIFEST), [], {sha(config): config, sha(chart): chart})


def artifact_with_empty_config(subject: Image | None = None) -> Image:
    """An OCI 1.1 artifact: artifactType, the empty JSON config, and optionally a subject."""
    empty = b"{}"
    payload = b'{"sbom": "' + os.urandom(8).hex().encode() + b'"}'
    doc: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/spdx+json",
        "config": _desc("application/vnd.oci.empty.v1+json", empty),
        "layers": [_desc("application/spdx+json", payload)],
    }
    if subject is not None:
        doc["subject"] = {"mediaType": subject.root.media_type, "digest": subject.digest, "size": len(subject.root.raw)}
    raw = json.dumps(doc).encode()
    return Image(Manifest(raw, OCI_MANIFEST), [], {sha(empty): empty, sha(payload): payload})


def foreign_layer_image() -> Image:
    data = os.urandom(512)  # never pushed anywhere: it lives "at a foreign URL"
    foreign = {
        "mediaType": DOCKER_FOREIGN,
        "size": len(data),
        "digest": sha(data),
        "urls": ["https://example.invalid/layer.tar.gz"],
    }
    return image([layer_bytes()], foreign=[foreign])


def zstd_image() -> Image:
    """OCI layers compressed with zstd (containerd, podman --compression-format zstd)."""
    img = image(oci=True)
    doc = json.loads(img.root.raw)
    for layer in doc["layers"]:
        layer["mediaType"] = OCI_LAYER_ZSTD
    raw = json.dumps(doc, separators=(",", ":")).encode()
    return Image(Manifest(raw, OCI_MANIFEST), [], img.blobs)


def oci_without_media_type() -> Image:
    """An OCI manifest that leaves out its optional ``mediaType`` (older OCI tooling)."""
    img = image(oci=True)
    doc = json.loads(img.root.raw)
    del doc["mediaType"]
    return Image(Manifest(json.dumps(doc).encode(), OCI_MANIFEST), [], img.blobs)


def _attestation_manifest() -> Image:
    statement = json.dumps({"_type": "https://in-toto.io/Statement/v0.1", "n": os.urandom(4).hex()}).encode()
    config = json.dumps({"architecture": "unknown", "os": "unknown", "config": {}, "rootfs": {}}).encode()
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": _desc(OCI_CONFIG, config),
        "layers": [_desc("application/vnd.in-toto+json", statement, annotations={"in-toto.io/predicate-type": "x"})],
    }
    return Image(Manifest(json.dumps(doc).encode(), OCI_MANIFEST), [], {sha(config): config, sha(statement): statement})


def index_with_attestation(archs: tuple[str, ...] = ("amd64",)) -> Image:
    """buildx's shape: per architecture an image, then ``unknown/unknown`` attestation manifests pointing at them."""
    imgs = [(image(oci=True, arch=arch), {"os": "linux", "architecture": arch}) for arch in archs]
    atts = [(_attestation_manifest(), {"os": "unknown", "architecture": "unknown"}) for _ in archs]
    idx = index([*imgs, *atts])
    outer = json.loads(idx.root.raw)
    for entry, (img, _) in zip(outer["manifests"][len(archs) :], imgs, strict=True):
        entry["annotations"] = {
            "vnd.docker.reference.digest": img.digest,
            "vnd.docker.reference.type": "attestation-manifest",
        }
    return Image(Manifest(json.dumps(outer).encode(), OCI_INDEX), idx.children, idx.blobs)


def nested_index() -> Image:
    """An index whose child is an index (allowed by OCI; seen with multi-variant bundles)."""
    inner = multi_platform(platforms=("linux/amd64", "linux/arm64"))
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_INDEX, "size": len(inner.root.raw), "digest": inner.digest}],
    }
    return Image(Manifest(json.dumps(doc).encode(), OCI_INDEX), [*inner.children, inner.root], inner.blobs)


def nondistributable_oci_layer() -> Image:
    """An OCI non-distributable layer with ``urls``: left out like docker's foreign layers."""
    data = os.urandom(512)
    foreign = {"mediaType": OCI_NONDIST, "size": len(data), "digest": sha(data), "urls": ["https://example.invalid/l"]}
    return image([layer_bytes()], oci=True, foreign=[foreign])


def artifact_without_layers() -> Image:
    """An OCI 1.1 artifact with no layers, its empty config also inlined as ``data`` (oras, notation)."""
    empty = b"{}"
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.thing.v1",
        "config": {**_desc("application/vnd.oci.empty.v1+json", empty), "data": "e30="},
        "layers": [],
        "annotations": {"org.opencontainers.image.created": "2026-11-29T00:00:00Z", "n": os.urandom(4).hex()},
    }
    return Image(Manifest(json.dumps(doc).encode(), OCI_MANIFEST), [], {sha(empty): empty})


def manifest_blobs(raw: bytes) -> list[dict[str, object]]:
    doc = json.loads(raw)
    return [doc["config"], *doc.get("layers", [])] if "config" in doc else []


# -- referrers: signatures, SBOMs, attestations ------------------------------------------------------
COSIGN_SIG = "application/vnd.dev.cosign.simplesigning.v1+json"
SPDX = "application/spdx+json"
SIGSTORE_BUNDLE = "application/vnd.dev.sigstore.bundle.v0.3+json"
IN_TOTO = "application/vnd.in-toto+json"


def _subject(img: Image) -> dict[str, object]:
    return {"mediaType": img.root.media_type, "digest": img.digest, "size": len(img.root.raw)}


def cosign_signature(subject: Image) -> Image:
    """What ``cosign sign`` pushes at ``sha256-<hex>.sig``: a generic config, one simplesigning layer."""
    payload = json.dumps(
        {"critical": {"image": {"docker-manifest-digest": subject.digest}, "type": "cosign container image signature"}}
    ).encode()
    rootfs = {"type": "layers", "diff_ids": [sha(payload)]}
    config = json.dumps({"architecture": "", "os": "", "rootfs": rootfs}).encode()
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": _desc(OCI_CONFIG, config),
        "layers": [_desc(COSIGN_SIG, payload, annotations={"dev.cosignproject.cosign/signature": os.urandom(9).hex()})],
    }
    raw = json.dumps(doc).encode()
    return Image(Manifest(raw, OCI_MANIFEST), [], {sha(config): config, sha(payload): payload})


def referrer(subject: Image, artifact_type: str = SPDX, size: int = 64) -> Image:
    """An OCI 1.1 artifact with ``subject``: ``artifactType``, the empty config, one payload layer."""
    empty = b"{}"
    payload = json.dumps({"type": artifact_type, "data": os.urandom(size).hex()}).encode()
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": _desc("application/vnd.oci.empty.v1+json", empty),
        "layers": [_desc(artifact_type, payload)],
        "subject": _subject(subject),
        "annotations": {"org.opencontainers.image.created": "2026-11-29T00:00:00Z"},
    }
    raw = json.dumps(doc).encode()
    return Image(Manifest(raw, OCI_MANIFEST), [], {sha(empty): empty, sha(payload): payload})


def fallback_tag(digest: str) -> str:
    alg, hexpart = digest.split(":", 1)
    return f"{alg}-{hexpart}"


def cosign_tag(digest: str, suffix: str = "sig") -> str:
    return f"sha256-{digest.split(':', 1)[1]}.{suffix}"


def referrer_descriptor(ref: Image) -> dict[str, object]:
    doc = json.loads(ref.root.raw)
    desc: dict[str, object] = {"mediaType": ref.root.media_type, "digest": ref.digest, "size": len(ref.root.raw)}
    if doc.get("artifactType"):
        desc["artifactType"] = doc["artifactType"]
    if doc.get("annotations"):
        desc["annotations"] = doc["annotations"]
    return desc


def tag_schema_index(entries: list[dict[str, object]]) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}).encode()


def attach(http: RegistryHTTP, repo: str, subject_digest: str, refs: list[Image]) -> None:
    """Push ``refs`` and list them in the subject's tag-schema index (as oras/notation do without the API)."""
    entries: list[dict[str, object]] = []
    got = http.get_manifest(repo, fallback_tag(subject_digest))
    if got.status_code == 200:
        entries = json.loads(got.content)["manifests"]
    for r in refs:
        r.push(http, repo, tag=None)
        entries.append(referrer_descriptor(r))
    http.push_manifest(repo, fallback_tag(subject_digest), tag_schema_index(entries), OCI_INDEX)


def index_entries(http: RegistryHTTP, repo: str, subject_digest: str) -> list[dict[str, object]]:
    got = http.get_manifest(repo, fallback_tag(subject_digest))
    assert got.status_code == 200, f"{http.reg.name}: no tag-schema index for {subject_digest} ({got.status_code})"
    return list(json.loads(got.content)["manifests"])


# Every kind of image the copy tests run over, by name.
IMAGE_KINDS: dict[str, Callable[[], Image]] = {
    "schema2": lambda: image(),
    "oci-pretty": lambda: image(oci=True, pretty=True),
    "manifest-list": lambda: multi_platform(oci=False, platforms=("linux/amd64", "linux/arm/v7")),
    "oci-index-3-platforms": lambda: multi_platform(oci=True),
    "helm-chart": helm_chart,
    "artifact-empty-config": artifact_with_empty_config,
    "empty-and-duplicate-layers": lambda: image([b"", layer_bytes(0), (d := layer_bytes()), d]),
    "forty-layers": lambda: image([layer_bytes(256) for _ in range(40)]),
    "foreign-layer": foreign_layer_image,
    "oci-zstd-layers": zstd_image,
    "oci-without-media-type": oci_without_media_type,
    "index-with-attestation": index_with_attestation,
    "nested-index": nested_index,
    "oci-nondistributable-layer": nondistributable_oci_layer,
    "artifact-without-layers": artifact_without_layers,
}


def signed_image(reg: RegistryServer, repo: str) -> tuple[Image, Image, Image, Image]:
    """An image with a cosign ``.sig`` tag, an SBOM and a signature of the SBOM (tag schema)."""
    http = reg.http()
    img = image(oci=True).push(http, repo, "v1")
    sig = cosign_signature(img).push(http, repo, cosign_tag(img.digest))
    sbom = referrer(img, SPDX)
    attach(http, repo, img.digest, [sbom])
    sbom_sig = referrer(sbom, SIGSTORE_BUNDLE)
    attach(http, repo, sbom.digest, [sbom_sig])
    return img, sig, sbom, sbom_sig
