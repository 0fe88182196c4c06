"""A layout's ``index.json``: one entry per tag (``org.opencontainers.image.ref.name``).

regcast writes the tag alone (as skopeo does) and reads a full reference there too (``name:tag``,
as buildah and podman write it).

The document is kept as parsed JSON so fields regcast does not know (annotations, other
entries written by skopeo or crane) survive a rewrite.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from regcast._exceptions import InvalidReference, LayoutError
from regcast.registry import mediatypes as mt
from regcast.registry.digest import validate_digest
from regcast.registry.manifest import Descriptor
from regcast.registry.reference import parse_reference

REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"
LAYOUT_FILE = "oci-layout"
INDEX_FILE = "index.json"
LAYOUT_VERSION = b'{"imageLayoutVersion":"1.0.0"}'
MAX_INDEX_BYTES = 16 * 1024 * 1024


def image_name(entry: dict[str, Any]) -> str | None:
    """The full name ``docker save`` (25+) writes beside a ref.name of the tag alone (``io.containerd.image.name``:
    ``docker.io/library/alpine:3.20``), or None."""
    name = (entry.get("annotations") or {}).get(CONTAINERD_NAME)
    return name if isinstance(name, str) and name else None


def _docker_names(name: str) -> set[str]:
    """``name`` and, if it is a docker reference, its full form (``alpine:3.20``: ``docker.io/library/alpine:3.20``)."""
    try:
        return {name, str(parse_reference(name, default_tag=None))}
    except InvalidReference:
        return {name}


def ref_name(entry: dict[str, Any]) -> str | None:
    """The entry's ``org.opencontainers.image.ref.name`` as written (None: an entry without a name)."""
    ref = (entry.get("annotations") or {}).get(REF_NAME)
    return ref if isinstance(ref, str) and ref else None


def tag_of(entry: dict[str, Any]) -> str | None:
    """The tag an index entry names: its ref.name, or the tag of a full reference there
    (``regcast:0.1.0``, as buildah and podman write it; skopeo writes the tag alone)."""
    ref = ref_name(entry)
    if ref is None:
        return None
    _name, sep, tag = ref.rpartition(":")
    return tag if sep and "/" not in tag else ref


@dataclass
class LayoutIndex:
    doc: dict[str, Any] = field(
        default_factory=lambda: {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": []}
    )

    @classmethod
    def parse(cls, raw: bytes, where: str) -> LayoutIndex:
        try:
            doc = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise LayoutError(f"{where}: index.json is not JSON ({exc})") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("manifests"), list):
            raise LayoutError(f"{where}: index.json has no 'manifests' list")
        for i, entry in enumerate(doc["manifests"]):
            if not isinstance(entry, dict) or not isinstance(entry.get("digest"), str):
                raise LayoutError(f"{where}: index.json manifests[{i}] has no digest")
        return cls(doc)

    @property
    def entries(self) -> list[dict[str, Any]]:
        manifests: list[dict[str, Any]] = self.doc["manifests"]
        return manifests

    def tags(self) -> list[str]:
        return [t for e in self.entries if (t := tag_of(e)) is not None]

    def find(self, tag: str, where: str | None = None) -> Descriptor | None:
        """The entry named ``tag`` exactly, else the full reference with that tag (``localhost/app:1.0``).
        Reading (``where`` given), several such names for different images are an error naming them,
        never a silent pick; a target's check takes the first (``put`` replaces them all)."""
        exact = [e for e in self.entries if ref_name(e) == tag]  # docker save writes the tag alone, image by image
        matches = exact or [e for e in self.entries if tag_of(e) == tag]
        if where is not None and len({e["digest"] for e in matches}) > 1:
            names = ", ".join(str(image_name(e) or ref_name(e)) for e in matches)
            raise LayoutError(f"{where}: the tag {tag} names {len(matches)} images ({names}): name one in full")
        return _descriptor(matches[0]) if matches else self.find_name(tag)

    def find_name(self, name: str) -> Descriptor | None:
        """The entry whose ``ref.name`` is exactly ``name`` (a full reference as skopeo and buildah write it),
        else whose ``docker save`` name is ``name``, written in full or as docker reads it (``alpine:3.20``)."""
        for e in self.entries:
            if ref_name(e) == name:
                return _descriptor(e)
        names = _docker_names(name)
        for e in self.entries:
            if image_name(e) in names:
                return _descriptor(e)
        return None

    def put(self, tag: str, digest: str, media_type: str, size: int) -> None:
        """Point ``tag`` at a manifest; the entry another manifest had for this tag goes."""
        kept = [e for e in self.entries if tag_of(e) != tag]
        kept.append({"mediaType": media_type, "digest": digest, "size": size, "annotations": {REF_NAME: tag}})
        self.doc["manifests"] = kept

    def put_unnamed(self, digest: str, media_type: str, size: int) -> None:
        """List a manifest without a name (a copy by digest into ``oci:DIR`` with no TAG, as skopeo writes
        it); once: an unnamed entry for the same digest is not repeated."""
        if not any(tag_of(e) is None and e["digest"] == digest for e in self.entries):
            self.entries.append({"mediaType": media_type, "digest": digest, "size": size})

    def merged_over(self, older: LayoutIndex) -> LayoutIndex:
        """``older``'s entries with this index's put over them (for adding to an archive, or to an
        index.json another writer changed): a tag, or an unnamed digest, is listed once."""
        out = LayoutIndex(json.loads(json.dumps(older.doc)))
        mine = {tag_of(e) for e in self.entries} - {None}
        unnamed = {e["digest"] for e in self.entries if tag_of(e) is None}
        out.doc["manifests"] = [
            e for e in out.entries if tag_of(e) not in mine and not (tag_of(e) is None and e["digest"] in unnamed)
        ]
        out.doc["manifests"] += self.entries
        return out

    def dumps(self) -> bytes:
        return json.dumps(self.doc, separators=(",", ":")).encode()


def _descriptor(e: dict[str, Any]) -> Descriptor:
    size = e.get("size")
    return Descriptor(str(e.get("mediaType", "")), validate_digest(e["digest"]), size if isinstance(size, int) else -1)
