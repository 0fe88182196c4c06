from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from regcast._exceptions import DigestMismatch, InvalidReference, ManifestTooLarge, RegcastError, UnsupportedManifest
from regcast.registry.client import with_query
from regcast.registry.digest import announced_digest, digest_of, validate_digest
from regcast.registry.manifest import MAX_MANIFEST_BYTES, Platform, parse_manifest
from regcast.registry.redact import redact_text, redact_url

D1, D2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64


def test_image_manifest_keeps_bytes_and_finds_blobs() -> None:
    raw = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "x", "digest": D1, "size": 2},
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                    "digest": D2,
                    "size": 9,
                    "urls": ["https://x"],
                }
            ],
        },
        indent=7,
    ).encode()
    m = parse_manifest(raw)
    assert m.raw is raw
    assert m.digest == digest_of(raw)
    assert [b.digest for b in m.blobs] == [D1, D2]
    assert m.blobs[1].is_foreign
    assert not m.blobs[0].is_foreign


def test_index_without_media_type_uses_shape_and_content_type() -> None:
    raw = json.dumps(
        {
            "schemaVersion": 2,
            "manifests": [
                {"digest": D1, "size": 1, "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}}
            ],
        }
    ).encode()
    m = parse_manifest(raw, "application/vnd.docker.distribution.manifest.list.v2+json")
    assert m.is_index
    assert m.media_type.endswith("list.v2+json")
    assert Platform.parse("linux/arm64").matches(m.children[0].platform)
    assert not Platform.parse("linux/arm64/v7").matches(m.children[0].platform)


@pytest.mark.parametrize(
    ("asked", "listed", "match"),
    [
        ("linux/arm64/v8", "linux/arm64", True),  # buildx lists arm64 without its default variant
        ("linux/arm64", "linux/arm64/v8", True),
        ("linux/arm64/v8", "linux/aarch64", True),
        ("linux/amd64", "linux/x86_64", True),
        ("linux/arm/v7", "linux/arm", True),
        ("linux/arm/v6", "linux/arm", False),
        ("linux/arm/v7", "linux/arm/v6", False),
        ("linux/amd64/v1", "linux/amd64", True),
        ("linux/amd64/v3", "linux/amd64", False),
        ("linux/arm64/v8", "linux/arm64/8", True),
        ("windows/amd64", "linux/amd64", False),
    ],
)
def test_platforms_match_as_containerd_normalises_them(asked: str, listed: str, match: bool) -> None:
    assert Platform.parse(asked).matches(Platform.parse(listed)) is match


def test_rejections() -> None:
    with pytest.raises(DigestMismatch):
        parse_manifest(b"{}", expected_digest=D1)
    with pytest.raises(ManifestTooLarge):
        parse_manifest(b" " * (MAX_MANIFEST_BYTES + 1))
    with pytest.raises(UnsupportedManifest):
        parse_manifest(b'{"schemaVersion": 1, "fsLayers": []}')
    with pytest.raises(UnsupportedManifest):
        parse_manifest(b"not json")
    with pytest.raises(InvalidReference):
        parse_manifest(
            json.dumps(
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": {"digest": "sha256:../../etc", "size": 1},
                    "layers": [],
                }
            ).encode()
        )


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=10), c, max_size=4),
        max_leaves=20,
    )
)
def test_manifest_parser_only_raises_regcast_errors(doc: object) -> None:
    with contextlib.suppress(RegcastError):
        parse_manifest(json.dumps(doc).encode(), "application/vnd.oci.image.manifest.v1+json")


def test_digest_validation() -> None:
    assert validate_digest(D1) == D1
    for bad in ("sha256:" + "A" * 64, "sha256:" + "1" * 63, "sha1:" + "1" * 40, "sha256:/../x"):
        with pytest.raises(InvalidReference):
            validate_digest(bad)


def test_an_announced_digest_is_read_leniently() -> None:
    """``Docker-Content-Digest`` is optional: malformed means absent, upper-case hex the same digest."""
    assert announced_digest(D1) == D1
    assert announced_digest(f" {D1.upper()} ") == D1
    for junk in (None, "", D1.split(":")[1], "sha256:" + "1" * 63, "sha1:" + "1" * 40, "sha256:/../x"):
        assert announced_digest(junk) is None


@pytest.mark.parametrize(
    "url",
    [
        "https://production.cloudflare.docker.com/registry-v2/docker/registry/v2/blobs/sha256/ab/x/data?verify=17-S3cr3tQQ",
        "https://d1.cloudfront.net/b?Expires=1&Signature=S3cr3tQQ&Key-Pair-Id=K3yIdQQ&Policy=P0licyQQ",
        "https://s3.example/b?X-Amz-Date=1&X-Amz-Security-Token=S3cr3tQQ&X-Amz-SignedHeaders=host",
        "https://storage.googleapis.com/b?GoogleAccessId=svc&Expires=1&Signature=S3cr3tQQ",
        "https://acct.blob.core.windows.net/c/b?sv=2021&se=2026&sp=r&sig=S3cr3tQQ",
    ],
)
def test_storage_redirect_signatures_are_redacted(url: str) -> None:
    """Where a registry redirects a blob GET: every scheme's signing parameters, not the path."""
    out = redact_url(url)
    assert "QQ" not in out
    assert out.split("?")[0] == url.split("?")[0]


def test_redact_url_and_text() -> None:
    url = "https://user:Pw9zz@s3.example/b?X-Amz-Signature=S1gQQ&X-Amz-Credential=k&part=1&access_token=T0kQQ"
    out = redact_url(url)
    assert "Pw9zz" not in out
    assert "S1gQQ" not in out
    assert "T0kQQ" not in out
    assert "part=1" in out
    text = redact_text("Authorization: Bearer eyJhbGciOi.abc.def failed for hunter2", ("hunter2",))
    assert "eyJ" not in text
    assert "hunter2" not in text


def test_with_query_keeps_state() -> None:
    loc = "http://r/v2/a/blobs/uploads/u?_state=xyz%3D&foo=1"
    assert with_query(loc, digest=D1) == f"http://r/v2/a/blobs/uploads/u?_state=xyz%3D&foo=1&digest={D1}"
    assert with_query("/v2/a/blobs/uploads/u", digest=D1).endswith(f"?digest={D1}")


_LAYER = {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": "sha256:" + "1" * 64, "size": 7}
_CONFIG = {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + "2" * 64, "size": 3}


@pytest.mark.parametrize(
    "layers_key",
    ['"Layers"', '"L\\u0061yers"', '"layer\u017f"'],  # another case, a \u escape, a letter Go folds to "s"
    ids=["case", "escape", "folded"],
)
def test_a_key_spelt_otherwise_is_read_as_go_reads_it(layers_key: str) -> None:
    """The plain C reader takes manifests whose keys are spelt exactly; any other spelling, however
    written, still goes through the member-by-member reading (the fast path must not hide it)."""
    head = '{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", '
    raw = (head + f'"config": {json.dumps(_CONFIG)}, "layers": [], {layers_key}: [{json.dumps(_LAYER)}]}}').encode()
    m = parse_manifest(raw)
    assert [b.digest for b in m.blobs] == [_CONFIG["digest"], _LAYER["digest"]]


def test_a_manifest_spelt_exactly_is_read_by_the_plain_reader_last_repeat_winning() -> None:
    from regcast.registry.manifest import manifest_json

    doc = {"schemaVersion": 2, "config": _CONFIG, "layers": [_LAYER]}
    assert type(manifest_json(json.dumps(doc).encode())) is dict  # no Python hook per object
    repeated = json.dumps(doc)[:-1] + ', "layers": []}'  # Go and a dict agree: the last one written wins
    assert parse_manifest(repeated.encode(), "application/vnd.oci.image.manifest.v1+json").blobs == (
        parse_manifest(json.dumps(doc | {"layers": []}).encode(), "application/vnd.oci.image.manifest.v1+json").blobs
    )
