"""Manifests as bytes: parsed only to find what they reference, never re-serialised.

The bytes a registry served are what regcast pushes, so the digest stays the same. Parsing
extracts the descriptors a copy needs: child manifests (indexes), config and layers (images),
and the subject (referrers, for information only).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from regcast._exceptions import DigestMismatch, ManifestTooLarge, UnsupportedManifest
from regcast.registry import mediatypes as mt
from regcast.registry.digest import digest_of, validate_digest

MAX_MANIFEST_BYTES = 4 * 1024 * 1024
_PLATFORM_PART = re.compile(r"[A-Za-z0-9._-]+")
MAX_SIZE = 2**53  # sizes must stay exact in JSON numbers and in every counter regcast keeps


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    @classmethod
    def parse(cls, text: str) -> Platform:
        """``os/arch[/variant]`` as users write it for ``--platform``."""
        parts = text.strip().split("/")
        if len(parts) not in (2, 3) or not all(_PLATFORM_PART.fullmatch(p) for p in parts):
            raise ValueError(f"invalid platform {text!r}: expected os/arch[/variant]")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else "")

    def matches(self, other: Platform | None) -> bool:
        """Does a manifest for ``other`` satisfy a request for ``self`` (variant optional)?

        Compared as containerd normalises them: ``aarch64`` is ``arm64``, ``x86_64`` is ``amd64``, and
        an absent variant is the architecture's default (``arm64`` = ``arm64/v8``, ``arm`` = ``arm/v7``,
        ``amd64`` = ``amd64/v1``): buildx lists ``linux/arm64`` where docker's images say ``v8``."""
        if other is None:
            return False
        mine, theirs = _normalised(self), _normalised(other)
        if mine[:2] != theirs[:2]:
            return False
        return not self.variant or mine[2] == theirs[2]

    def same(self, other: Platform | None) -> bool:
        """Is ``other`` exactly this platform, an absent variant read as the default? Among the manifests a
        request without variant ``matches``, the one docker and containerd pick: ``linux/arm`` is ``arm/v7``
        where an index also lists ``arm/v5`` before it (Docker Hub's official images do)."""
        return other is not None and _normalised(self) == _normalised(other)

    def __str__(self) -> str:
        return f"{self.os}/{self.architecture}" + (f"/{self.variant}" if self.variant else "")

    @staticmethod
    def distinct(platforms: list[Platform]) -> list[Platform]:
        """``platforms`` without repeats (``linux/amd64`` twice, ``Linux/x86_64``...): one platform asked for
        twice is still one (its image manifest is the root, not a new index listing it alone)."""
        seen: dict[tuple[str, str, str], Platform] = {}
        for p in platforms:
            kept = seen.setdefault(_normalised(p), p)
            if kept.variant and not p.variant:  # linux/arm64 beside linux/arm64/v8: the broader one is kept
                seen[_normalised(p)] = p
        return list(seen.values())


_ARCH_ALIASES = {"aarch64": "arm64", "x86_64": "amd64", "x86-64": "amd64"}
_DEFAULT_VARIANT = {"arm64": "v8", "arm": "v7", "amd64": "v1"}


def _normalised(p: Platform) -> tuple[str, str, str]:
    arch = _ARCH_ALIASES.get(p.architecture.lower(), p.architecture.lower())
    variant = p.variant.lower()
    if variant and variant[0].isdigit():  # "8", "7": as containerd, the same as "v8", "v7"
        variant = f"v{variant}"
    if arch == "arm64" and variant == "v8.0":
        variant = "v8"
    return p.os.lower(), arch, variant or _DEFAULT_VARIANT.get(arch, "")


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    urls: tuple[str, ...] = ()
    platform: Platform | None = None

    @property
    def is_foreign(self) -> bool:
        """A non-distributable layer with URLs: never pushed (docker and skopeo agree)."""
        return self.media_type in mt.FOREIGN_LAYERS and bool(self.urls)


@dataclass(frozen=True)
class Manifest:
    raw: bytes
    digest: str
    media_type: str
    children: tuple[Descriptor, ...] = ()
    blobs: tuple[Descriptor, ...] = ()
    subject: Descriptor | None = None

    @property
    def is_index(self) -> bool:
        return self.media_type in mt.INDEXES


def _descriptor(obj: Any, where: str) -> Descriptor:
    if not isinstance(obj, dict):
        raise UnsupportedManifest(f"{where}: descriptor is not an object")
    digest = field(obj, "digest")
    size = field(obj, "size")
    media_type = field(obj, "mediaType", "")
    if not isinstance(digest, str) or not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise UnsupportedManifest(f"{where}: descriptor needs a digest string and a non-negative size")
    if size >= MAX_SIZE:
        raise UnsupportedManifest(f"{where}: size {size} is not below 2^53")
    if not isinstance(media_type, str):
        raise UnsupportedManifest(f"{where}: mediaType must be a string")
    validate_digest(digest)
    urls = field(obj, "urls") or ()
    if not isinstance(urls, list | tuple) or not all(isinstance(u, str) for u in urls):
        raise UnsupportedManifest(f"{where}: urls must be a list of strings")
    platform = None
    p = field(obj, "platform")
    system, arch = (field(p, "os"), field(p, "architecture")) if isinstance(p, dict) else (None, None)
    if isinstance(system, str) and isinstance(arch, str):
        variant = field(p, "variant")
        platform = Platform(system, arch, variant if isinstance(variant, str) else "")
    return Descriptor(media_type, digest, size, tuple(urls), platform)


def _media_type(doc: dict[str, Any], content_type: str) -> str:
    declared = field(doc, "mediaType")
    if isinstance(declared, str) and declared:
        return declared
    ctype = content_type.split(";", 1)[0].strip()
    if ctype in mt.MANIFESTS:
        return ctype
    # OCI allows omitting mediaType: tell index from image by shape.
    if field(doc, "manifests") is not None:  # as distribution tells them apart
        return mt.OCI_INDEX
    if field(doc, "layers") is not None or field(doc, "config") is not None:
        return mt.OCI_MANIFEST
    return ctype


class _Object(dict[str, Any]):
    """A JSON object that keeps its members in document order, repeated keys included (``field``)."""

    pairs: list[tuple[str, Any]]


def _object(pairs: list[tuple[str, Any]]) -> _Object:
    obj = _Object(pairs)
    obj.pairs = pairs
    return obj


def field(obj: dict[str, Any], name: str, default: Any = None) -> Any:
    """The member ``name`` of a manifest's object as distribution (Go's encoding/json) reads it into the field
    of that name: a key equal to it in any case (``Layers``), the last one written winning. A registry stores
    such manifests; read otherwise, blobs it counts as referenced were left behind."""
    if type(obj) is not _Object:  # read by the plain C reader: spelt exactly (not getattr: its miss is slow)
        return obj.get(name, default)
    wanted = name.casefold()
    found = [value for key, value in obj.pairs if key.casefold() == wanted]
    return found[-1] if found else default


# The members ``field`` is asked for. Written exactly so (a repeat too: the last wins in a dict as in Go),
# a plain dict reads them as Go does; only another spelling needs the member-by-member reading.
_FIELDS = "mediaType|schemaVersion|manifests|layers|config|subject|digest|size|urls|platform|os|architecture|variant"


@functools.cache
def _otherwise_spelt_key() -> re.Pattern[bytes]:
    """A key equal to one of ``_FIELDS`` in another case only; built on first use (start-up compiles no
    pattern it does not need)."""
    return re.compile(rf'"(?!(?:{_FIELDS})")(?i:{_FIELDS})"\s*:'.encode())


def _spelt_otherwise(raw: bytes) -> bool:
    """Whether a member ``field`` reads may be spelt another way than exactly: ``Layers``, a key written with
    a ``\\u`` escape, or with a letter Go folds to an ASCII one (the long s U+017F, the Kelvin sign), so any non-ASCII
    byte counts. One search in C, so the common manifest is parsed by the plain C reader, not through a
    Python hook per object (3x slower on a large index; the search costs a third of the parse)."""
    if not raw.isascii() or b"\\u" in raw:
        return True
    return _otherwise_spelt_key().search(raw) is not None


def manifest_json(raw: bytes) -> Any:
    """The JSON value of manifest bytes as a registry read them: bytes that are not UTF-8 inside a string
    (an annotation written by hand) read as U+FFFD, as Go's encoding/json reads them (distribution stores
    such manifests, and they are copied byte for byte like any other); objects read through ``field``.
    Raises ``ValueError``."""
    hook = _object if _spelt_otherwise(raw) else None
    try:
        return json.loads(raw, object_pairs_hook=hook)
    except UnicodeDecodeError:
        return json.loads(raw.decode("utf-8", errors="replace"), object_pairs_hook=hook)


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        doc = manifest_json(raw)
    except ValueError as exc:
        raise UnsupportedManifest(f"manifest is not JSON: {exc}") from exc
    except RecursionError:  # a hostile source nesting arrays 200k deep
        raise UnsupportedManifest("manifest JSON is nested too deeply") from None
    if not isinstance(doc, dict):
        raise UnsupportedManifest("manifest is not a JSON object")
    return doc


SCHEMA1 = "Docker schema1 manifests are not supported (deprecated; convert to schema2)"
SCHEMA1_TYPES = (mt.DOCKER_SCHEMA1, mt.DOCKER_SCHEMA1_SIGNED)


def _schema1(raw: bytes, content_type: str) -> bool:
    """Served as schema1, or shaped so (``schemaVersion`` 1)."""
    if content_type.split(";", 1)[0].strip() in SCHEMA1_TYPES:
        return True
    try:
        doc = manifest_json(raw)
    except (ValueError, RecursionError):
        return False
    return isinstance(doc, dict) and field(doc, "schemaVersion") == 1


def parse_manifest(raw: bytes, content_type: str = "", expected_digest: str | None = None) -> Manifest:
    """Parse ``raw`` (verified against ``expected_digest`` if given) without changing a byte."""
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ManifestTooLarge(f"manifest is {len(raw)} bytes, over the {MAX_MANIFEST_BYTES} byte limit")
    algorithm = expected_digest.split(":", 1)[0] if expected_digest else "sha256"
    digest = digest_of(raw, algorithm)
    if expected_digest and digest != expected_digest:
        if _schema1(raw, content_type):  # its digest is its payload's, signatures left out: never the bytes'
            raise UnsupportedManifest(SCHEMA1)
        raise DigestMismatch(f"manifest bytes hash to {digest}, not the {expected_digest} asked for")
    doc = _json_object(raw)
    media_type = _media_type(doc, content_type)
    if media_type in SCHEMA1_TYPES or field(doc, "schemaVersion") == 1:
        raise UnsupportedManifest(SCHEMA1)
    if media_type in mt.INDEXES:
        items = field(doc, "manifests")
        if not isinstance(items, list):
            raise UnsupportedManifest("index has no 'manifests' list")
        children = tuple(_descriptor(d, f"manifests[{i}]") for i, d in enumerate(items))
        blobs: tuple[Descriptor, ...] = ()
    elif media_type in mt.IMAGE_MANIFESTS:
        config = field(doc, "config")
        layers = field(doc, "layers", [])
        if config is None or not isinstance(layers, list):
            raise UnsupportedManifest("image manifest needs 'config' and a 'layers' list")
        blobs = (_descriptor(config, "config"),) + tuple(_descriptor(d, f"layers[{i}]") for i, d in enumerate(layers))
        children = ()
    else:
        raise UnsupportedManifest(f"unsupported manifest media type {media_type[:100]!r}")
    about = field(doc, "subject")
    subject = _descriptor(about, "subject") if isinstance(about, dict) else None
    return Manifest(raw, digest, media_type, children, blobs, subject)


def filter_index(index: Manifest, keep: list[Descriptor], nested: Mapping[str, Manifest] | None = None) -> bytes:
    """An index with only ``keep`` among its manifests (used for a multi-platform filter) and the attestation
    manifests buildx lists for them (``unknown/unknown``, pointing at their image by annotation: provenance
    and SBOMs stay with the platforms kept, as ``docker image convert`` keeps them); an entry for one of the
    ``nested`` indexes stands for that index's own entries (the new index lists them flat)."""
    doc = manifest_json(index.raw)
    wanted = {d.digest for d in keep}
    entries = [
        m for m in _flat_entries(doc, nested or {}) if field(m, "digest") in wanted or _attestation_for(m) in wanted
    ]
    for key in [k for k in doc if k.casefold() == "manifests"]:  # "Manifests" too: one list, the new one
        del doc[key]
    doc["manifests"] = entries
    return json.dumps(doc, indent=3).encode()


def _attestation_for(entry: dict[str, Any]) -> str | None:
    """The image digest a buildx attestation manifest entry attests, or None (any other entry)."""
    notes = field(entry, "annotations")
    if not isinstance(notes, dict) or notes.get("vnd.docker.reference.type") != "attestation-manifest":
        return None
    digest = notes.get("vnd.docker.reference.digest")
    return digest if isinstance(digest, str) else None


def _flat_entries(doc: dict[str, Any], nested: Mapping[str, Manifest]) -> list[Any]:
    entries: list[Any] = []
    for m in field(doc, "manifests"):
        inner = nested.get(str(field(m, "digest"))) if isinstance(m, dict) else None
        entries += _flat_entries(manifest_json(inner.raw), nested) if inner is not None else [m]
    return entries
