"""Referrers without a network: tag names, artifact types, and the tag-schema index merge against a
fake registry that honours ``If-Match`` (distribution does not, so the integration tests cannot
reach the 412 path) and lets another writer slip in between a read and a write."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from regcast._exceptions import RegistryError
from regcast.registry import referrers as api
from regcast.registry.client import next_link
from regcast.registry.digest import digest_of
from regcast.registry.manifest import parse_manifest
from regcast.transfer import discovery
from regcast.transfer import referrers as tr

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
SUBJECT = "sha256:" + "ab" * 32


def manifest(doc: dict[str, Any]) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, **doc}).encode()


def desc(n: int) -> dict[str, Any]:
    return {"mediaType": OCI_MANIFEST, "digest": "sha256:" + f"{n:02x}" * 32, "size": n, "artifactType": "x/y"}


def test_tag_names() -> None:
    assert api.fallback_tag(SUBJECT) == "sha256-" + "ab" * 32
    assert api.cosign_tags(SUBJECT) == [f"sha256-{'ab' * 32}.{s}" for s in ("sig", "att", "sbom")]
    assert api.cosign_tags("sha512:" + "cd" * 64) == []  # cosign names sha256 digests only
    assert api.fallback_tag("sha512:" + "cd" * 64) == "sha512-" + "cd" * 32  # hex cut at 64, as the spec says


@pytest.mark.parametrize(
    ("header", "target"),
    [
        ('</v2/a/referrers/sha256:00?n=2&last=x>; rel="next"', "/v2/a/referrers/sha256:00?n=2&last=x"),
        ("<https://r.example/v2/a/tags/list?n=2&last=b>;rel=next", "https://r.example/v2/a/tags/list?n=2&last=b"),
        ('</v2/a?p=2>; title="more"; rel="next"', "/v2/a?p=2"),  # RFC 8288: parameters in any order
        ('</v2/a?p=1>; rel="prev", </v2/a?p=3>; REL="next"', "/v2/a?p=3"),
        ('</v2/a?x>; rel="prev"', None),
        ('</v2/a?x>; rel="nextpage"', None),
        ('</v2/a?p=2>; rel="prev next"', "/v2/a?p=2"),  # a list of relations
        ("</v2/a?p=2>; rel=next, </v2/a?p=9>; rel=last", "/v2/a?p=2"),
        ("<>; rel=next", None),
        ("</v2/a?p=2>", None),
        ("", None),
        (None, None),
    ],
)
def test_next_link_parsed(header: str | None, target: str | None) -> None:
    assert next_link(header) == target


def test_next_link_reads_a_hostile_header_in_linear_time() -> None:
    # a lazy regular expression over the parameters took ~0.5 s on 8 KB of '<a>;' (quadratic), per page
    header = "<a>;" * 20_000 + ", <b>; rel=next"
    started = time.process_time()
    assert next_link(header) == "b"
    assert time.process_time() - started < 2.0  # linear: milliseconds here; the old reader ~45 s at this size


def layer(media_type: str) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": "sha256:" + "00" * 32, "size": 1}


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (
            {"artifactType": "application/spdx+json", "config": layer("application/vnd.oci.empty.v1+json")},
            "application/spdx+json",
        ),
        (
            {"config": layer("application/vnd.cncf.helm.config.v1+json"), "layers": []},
            "application/vnd.cncf.helm.config.v1+json",
        ),
        (
            {
                "config": layer("application/vnd.oci.image.config.v1+json"),
                "layers": [layer("application/vnd.dev.cosign.simplesigning.v1+json")],
            },
            "application/vnd.dev.cosign.simplesigning.v1+json",
        ),
        ({"config": layer("application/vnd.oci.empty.v1+json"), "layers": [layer("text/plain")]}, "text/plain"),
    ],
)
def test_artifact_type(doc: dict[str, Any], expected: str) -> None:
    assert tr.artifact_type_of(parse_manifest(manifest(doc))) == expected


def test_index_descriptor_carries_type_and_annotations() -> None:
    raw = manifest(
        {
            "artifactType": "application/spdx+json",
            "config": layer("application/vnd.oci.empty.v1+json"),
            "layers": [],
            "subject": {"mediaType": OCI_MANIFEST, "digest": SUBJECT, "size": 9},
            "annotations": {"k": "v"},
        }
    )
    m = parse_manifest(raw)
    d = tr.index_descriptor(tr.Referrer(m, (), SUBJECT, "application/spdx+json"))
    assert d == {
        "mediaType": OCI_MANIFEST,
        "digest": digest_of(raw),
        "size": len(raw),
        "artifactType": "application/spdx+json",
        "annotations": {"k": "v"},
    }


@dataclass
class FakeRegistry:
    """One repository's tag-schema index: ETags honoured on PUT; ``meddle`` runs before a write lands."""

    index: bytes | None = None
    honour_if_match: bool = True
    meddle: list[Any] = field(default_factory=list)
    puts: int = 0
    conflicts: int = 0

    name = "fake"
    location = "http://fake"
    path = "repo"

    def etag(self) -> str | None:
        return f'"{digest_of(self.index)}"' if self.index else None

    async def head_manifest(self, tag: str) -> str | None:
        return digest_of(self.index) if self.index else None

    async def read_index(self, tag: str) -> api.Held | None:
        return api.Held(parse_manifest(self.index, OCI_INDEX), self.etag()) if self.index else None

    async def put(self, ref: str, raw: bytes, media_type: str, if_match: str | None = None) -> api.Pushed:
        if self.meddle:
            self.meddle.pop(0)(self)
        if self.honour_if_match and if_match is not None and if_match != self.etag():
            self.conflicts += 1
            return api.Pushed(None, False, conflict=True)
        self.puts += 1
        self.index = raw
        return api.Pushed(digest_of(raw), False)

    async def list_referrers(
        self, digest: str, artifact_type: str | None, spend: Callable[[int], None] | None = None
    ) -> api.Listing | None:
        raise RegistryError("registry fake: listing referrers answered 500")


def index_of(*entries: dict[str, Any], extra: dict[str, Any] | None = None) -> bytes:
    return json.dumps(
        {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": list(entries), **(extra or {})}
    ).encode()


def entries(reg: FakeRegistry) -> list[dict[str, Any]]:
    assert reg.index is not None
    return list(json.loads(reg.index)["manifests"])


def merge(reg: FakeRegistry, ours: list[dict[str, Any]]) -> None:
    asyncio.run(tr.merge_index(reg, reg, SUBJECT, ours, tr.IndexLocks()))  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def _no_settle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tr, "SETTLE_SECONDS", 0.0)


def test_merge_keeps_what_others_wrote_exactly() -> None:
    theirs = {**desc(1), "annotations": {"by": "someone else"}, "x-unknown": [1, 2]}
    reg = FakeRegistry(index_of(theirs, extra={"annotations": {"keep": "me"}}))
    merge(reg, [desc(2)])
    assert entries(reg) == [theirs, desc(2)]
    assert json.loads(reg.index or b"")["annotations"] == {"keep": "me"}
    merge(reg, [desc(2)])  # already there: nothing written
    assert reg.puts == 1


def test_if_match_conflict_reads_again_and_keeps_both() -> None:
    reg = FakeRegistry(index_of(desc(1)))
    reg.meddle.append(lambda r: setattr(r, "index", index_of(desc(1), desc(3))))  # another writer, first
    merge(reg, [desc(2)])
    assert reg.conflicts == 1
    assert entries(reg) == [desc(1), desc(3), desc(2)]


def test_overwritten_without_if_match_is_merged_again() -> None:
    """A registry ignoring If-Match: the other writer's PUT lands over ours; the read-back sees it."""
    reg = FakeRegistry(index_of(desc(1)), honour_if_match=False)
    reg.meddle.append(lambda r: None)  # our first write lands...
    ours = [desc(2)]
    real_put = reg.put

    async def put_then_clobbered(ref: str, raw: bytes, media_type: str, if_match: str | None = None) -> api.Pushed:
        answer = await real_put(ref, raw, media_type, if_match)
        if reg.puts == 1:
            reg.index = index_of(desc(1), desc(4))  # ...then a writer that read before it overwrites it
        return answer

    reg.put = put_then_clobbered  # type: ignore[method-assign]
    merge(reg, ours)
    assert {e["digest"] for e in entries(reg)} == {desc(1)["digest"], desc(2)["digest"], desc(4)["digest"]}


def test_a_contended_index_gives_up_with_a_clear_error() -> None:
    reg = FakeRegistry(index_of(desc(1)))
    n = iter(range(10, 99))
    reg.meddle.extend(lambda r: setattr(r, "index", index_of(desc(next(n)))) for _ in range(tr.INDEX_ROUNDS))
    with pytest.raises(RegistryError, match="kept changing"):
        merge(reg, [desc(2)])


def test_a_source_that_cannot_list_is_a_left_out_line() -> None:
    reg = FakeRegistry()
    run = discovery._Discovery(reg, reg, tr.ReferrerOptions(), set(), asyncio.Semaphore(1))  # type: ignore[arg-type]
    assert asyncio.run(run.candidates(SUBJECT)) == []
    assert run.left_out == [f"referrers of {SUBJECT} not looked up: registry fake: listing referrers answered 500"]
