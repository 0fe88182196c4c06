"""Outcome checks: byte-identical manifests and every blob present with the digest it claims."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from tests.support.registry import RegistryHTTP

FOREIGN = {
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
}


_FIELDS = {k.casefold(): k for k in ("manifests", "config", "layers", "mediaType", "digest", "size", "urls")}


def _go_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    return {_FIELDS.get(k.casefold(), k): v for k, v in pairs}


def assert_same_image(
    src: RegistryHTTP, src_repo: str, src_ref: str, dst: RegistryHTTP, dst_repo: str, dst_ref: str
) -> str:
    """Compare the graph at ``dst`` with the source's; returns the root digest."""
    a = src.get_manifest(src_repo, src_ref)
    b = dst.get_manifest(dst_repo, dst_ref)
    assert a.status_code == 200, a.text
    assert b.status_code == 200, f"{dst.reg.name}: {b.status_code} {b.text}"
    assert b.content == a.content, "manifest bytes differ"
    assert b.headers["Content-Type"] == a.headers["Content-Type"], "media type differs"
    digest = "sha256:" + hashlib.sha256(b.content).hexdigest()
    assert b.headers.get("Docker-Content-Digest", digest) == digest
    _check_graph(src, src_repo, dst, dst_repo, b.content)
    return digest


def _check_graph(src: RegistryHTTP, src_repo: str, dst: RegistryHTTP, dst_repo: str, raw: bytes) -> None:
    # as distribution (Go) reads it: not-UTF-8 bytes as U+FFFD, the fields' keys in any case, the last winning
    doc = json.loads(raw.decode("utf-8", errors="replace"), object_pairs_hook=_go_keys)
    for child in doc.get("manifests", []):
        a = src.get_manifest(src_repo, child["digest"])
        b = dst.get_manifest(dst_repo, child["digest"])
        assert b.status_code == 200, f"child {child['digest']} differs"
        assert b.content == a.content, f"child {child['digest']} differs"
        _check_graph(src, src_repo, dst, dst_repo, b.content)
    if "config" in doc:
        for desc in [doc["config"], *doc.get("layers", [])]:
            if desc.get("mediaType") in FOREIGN and desc.get("urls"):
                assert dst.head_blob(dst_repo, desc["digest"]) == 404, "foreign layer was pushed"
                continue
            r = dst.get_blob(dst_repo, desc["digest"])
            assert r.status_code == 200, f"{dst.reg.name}: blob {desc['digest']} missing ({r.status_code})"
            got = "sha256:" + hashlib.sha256(r.content).hexdigest()
            assert got == desc["digest"], f"blob {desc['digest']} corrupt"
            assert len(r.content) == desc["size"], f"blob {desc['digest']} corrupt"
