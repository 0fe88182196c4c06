"""``oci:DIR[:TAG]`` / ``oci-archive:FILE[:TAG]`` parsing, and the layout index."""

from __future__ import annotations

from pathlib import Path

import pytest

from regcast._exceptions import InvalidReference, LayoutError
from regcast.layouts import is_layout_reference, parse_layout_reference
from regcast.layouts.index import REF_NAME, LayoutIndex


@pytest.mark.parametrize(
    ("text", "kind", "path", "tag"),
    [
        ("oci:/srv/layout", "oci", "/srv/layout", None),
        ("oci:/srv/layout:v1.2", "oci", "/srv/layout", "v1.2"),
        ("oci:relative/dir:latest", "oci", "relative/dir", "latest"),
        ("oci-archive:/tmp/app.tar", "oci-archive", "/tmp/app.tar", None),
        ("oci-archive:/tmp/app.tar:1.0", "oci-archive", "/tmp/app.tar", "1.0"),
        ("oci-archive:/odd:dir/app.tar", "oci-archive", "/odd:dir/app.tar", None),
    ],
)
def test_parse(text: str, kind: str, path: str, tag: str | None) -> None:
    ref = parse_layout_reference(text)
    assert (ref.kind, ref.path, ref.tag) == (kind, Path(path), tag)
    assert str(ref) == text
    assert is_layout_reference(text)


def test_parse_digest() -> None:
    digest = "sha256:" + "ab" * 32
    for text, path in (
        (f"oci:/srv/layout@{digest}", "/srv/layout"),
        (f"oci-archive:/odd:d/a.tar@{digest}", "/odd:d/a.tar"),
    ):
        ref = parse_layout_reference(text)
        assert (ref.path, ref.tag, ref.digest) == (Path(path), None, digest)
        assert str(ref) == text
    assert parse_layout_reference("oci:/srv/me@host:v1").tag == "v1"  # an @ in a path is no digest


@pytest.mark.parametrize(
    "text",
    [
        "oci:",
        "oci:/x:",
        "oci:/x:bad*tag",
        "oci-archive::v1",
        "docker:/x",
        "oci:/x@sha256:abc",
        "oci:@sha256:" + "a" * 64,
    ],
)
def test_parse_refuses(text: str) -> None:
    with pytest.raises(InvalidReference):
        parse_layout_reference(text)


def test_registry_references_are_not_layouts() -> None:
    assert not is_layout_reference("registry.example/oci:v1")
    assert not is_layout_reference("localhost:5000/app:v1")


def test_index_replaces_a_tag_and_keeps_other_entries() -> None:
    raw = (
        b'{"schemaVersion":2,"manifests":[{"digest":"sha256:'
        + b"a" * 64
        + b'","size":1,"x":1}],"annotations":{"k":"v"}}'
    )
    index = LayoutIndex.parse(raw, "oci:/x")
    index.put("v1", "sha256:" + "b" * 64, "application/vnd.oci.image.manifest.v1+json", 10)
    index.put("v1", "sha256:" + "c" * 64, "application/vnd.oci.image.manifest.v1+json", 11)
    assert index.tags() == ["v1"]
    assert index.doc["annotations"] == {"k": "v"}
    assert index.entries[0]["x"] == 1
    found = index.find("v1")
    assert found is not None
    assert found.digest == "sha256:" + "c" * 64
    assert found.size == 11
    newer = LayoutIndex()
    newer.put("v2", "sha256:" + "d" * 64, "m", 1)
    newer.put("v1", "sha256:" + "e" * 64, "m", 1)
    merged = newer.merged_over(index)
    assert [(e.get("annotations") or {}).get(REF_NAME) for e in merged.entries] == [None, "v2", "v1"]


@pytest.mark.parametrize("raw", [b"not json", b"[]", b'{"manifests": {}}', b'{"manifests": [{"size": 1}]}'])
def test_index_refuses_malformed(raw: bytes) -> None:
    with pytest.raises(LayoutError, match=r"oci:/x: index\.json"):
        LayoutIndex.parse(raw, "oci:/x")


def test_index_reads_a_full_reference_as_ref_name() -> None:
    raw = (
        b'{"schemaVersion":2,"manifests":[{"mediaType":"m","digest":"sha256:'
        + b"a" * 64
        + b'","size":1,"annotations":{"org.opencontainers.image.ref.name":"localhost/regcast:0.1.0"}}]}'
    )
    index = LayoutIndex.parse(raw, "oci:/x")
    assert index.tags() == ["0.1.0"]
    found = index.find("0.1.0")
    assert found is not None and found.digest == "sha256:" + "a" * 64
    index.put("0.1.0", "sha256:" + "b" * 64, "m", 2)  # the tag moves: the old entry goes
    assert [e["digest"][-1] for e in index.entries] == ["b"]
