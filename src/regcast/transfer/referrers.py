"""Referrers travel with the image: found at the source (``discovery.py``), pushed to every target.

This module holds what both halves share (access to a repository's referrers, the options, the
records) and the push. Push (per target, between the image's manifests and its tag): each referrer's manifests by
digest (cosign's at their tag). A registry that answers ``OCI-Subject`` keeps the referrers list
itself; for the others regcast merges its descriptors into the target's tag-schema index, never
dropping an entry it did not write, and re-reads until the index holds them (``If-Match`` where
the registry gives an ETag; one lock per index inside this process).
"""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from regcast._async import gather_all
from regcast._exceptions import RegcastError, RegistryError, UnsupportedManifest
from regcast.registry import mediatypes as mt
from regcast.registry import referrers as api
from regcast.registry.manifest import Descriptor, Manifest, manifest_json
from regcast.transfer.remote import RegistryRepository
from regcast.transfer.repository import Repository

log = logging.getLogger("regcast.transfer")

INDEX_ROUNDS = 8  # read-merge-write rounds before giving up on a contended index
# After writing an index, wait this long before reading it back: a writer in another process that
# read before our write has sent its PUT by then, and the read-back sees it and merges again.
SETTLE_SECONDS = 0.3
_GENERIC_CONFIGS = frozenset({mt.OCI_CONFIG, mt.DOCKER_CONFIG, mt.OCI_EMPTY_JSON})


class ReferrerAccess(Protocol):
    """What referrers need beyond ``Repository``: the referrers API, the tag-schema index with its
    ETag, and a manifest PUT whose answer tells ``OCI-Subject`` and ``If-Match`` conflicts."""

    async def list_referrers(
        self, digest: str, artifact_type: str | None, spend: Callable[[int], None] | None = None
    ) -> api.Listing | None: ...

    async def read_index(self, tag: str) -> api.Held | None: ...

    async def tag_names(self) -> frozenset[str] | None:
        """Every tag of the repository in one answer, or None: then each referrer tag is asked for."""
        ...

    async def put(self, ref: str, raw: bytes, media_type: str, if_match: str | None = None) -> api.Pushed: ...


@dataclass
class _Remote:
    repo: RegistryRepository

    async def list_referrers(
        self, digest: str, artifact_type: str | None, spend: Callable[[int], None] | None = None
    ) -> api.Listing | None:
        return await api.list_referrers(self.repo.client, self.repo.repository, digest, artifact_type, spend)

    async def read_index(self, tag: str) -> api.Held | None:
        return await api.read_index(self.repo.client, self.repo.repository, tag)

    async def tag_names(self) -> frozenset[str] | None:
        return await api.tag_names(self.repo.client, self.repo.repository)

    async def put(self, ref: str, raw: bytes, media_type: str, if_match: str | None = None) -> api.Pushed:
        return await api.put_manifest(self.repo.client, self.repo.repository, ref, raw, media_type, if_match)


@runtime_checkable
class KeepsReferrers(Protocol):
    """A repository that is not a registry but keeps referrers its own way (an image layout)."""

    def referrer_access(self) -> ReferrerAccess: ...


def access(repo: Repository) -> ReferrerAccess | None:
    """Referrer access to ``repo``; None where referrers cannot be kept."""
    if isinstance(repo, RegistryRepository):
        return _Remote(repo)
    return repo.referrer_access() if isinstance(repo, KeepsReferrers) else None


@dataclass(frozen=True)
class ReferrerOptions:
    """Whether referrers travel, and which artifact types (empty: all)."""

    enabled: bool = True
    types: frozenset[str] = frozenset()

    def wants(self, artifact_type: str) -> bool:
        return not self.types or artifact_type in self.types


@dataclass(frozen=True)
class Referrer:
    manifest: Manifest  # the referrer's own manifest (the root of its small graph)
    children: tuple[Manifest, ...]  # when it is an index: its manifests, pushed first
    subject: str  # the digest it refers to
    artifact_type: str
    tag: str | None = None  # cosign's tag it was found under (pushed at that tag)


@dataclass(frozen=True)
class ReferrerSet:
    """Everything discovered: referrers in push order (subjects first), the blobs they need that the
    image does not have, and one line per referrer left out."""

    referrers: tuple[Referrer, ...] = ()
    blobs: tuple[Descriptor, ...] = ()
    left_out: tuple[str, ...] = ()

    @property
    def total_bytes(self) -> int:
        return sum(b.size for b in self.blobs)


def artifact_type_of(manifest: Manifest) -> str:
    """``artifactType``, else the config's media type (the OCI rule); for cosign's generic config, the
    first layer's media type (``...simplesigning...``, ``...dsse.envelope...``, an SBOM format)."""
    try:
        doc = manifest_json(manifest.raw)
    except ValueError:
        return ""
    declared = doc.get("artifactType")
    if isinstance(declared, str) and declared:
        return declared
    config = doc.get("config")
    ctype = config.get("mediaType", "") if isinstance(config, dict) else ""
    if ctype and ctype not in _GENERIC_CONFIGS:
        return str(ctype)
    layers = doc.get("layers")
    if isinstance(layers, list) and layers and isinstance(layers[0], dict):
        return str(layers[0].get("mediaType", ""))
    return str(ctype)


def index_descriptor(r: Referrer) -> dict[str, Any]:
    """The descriptor a referrers list holds for ``r``: media type, digest, size, artifactType, annotations."""
    m = r.manifest
    desc: dict[str, Any] = {"mediaType": m.media_type, "digest": m.digest, "size": len(m.raw)}
    if r.artifact_type:
        desc["artifactType"] = r.artifact_type
    try:
        annotations = manifest_json(m.raw).get("annotations")
    except ValueError:
        annotations = None
    if isinstance(annotations, dict) and annotations:
        desc["annotations"] = annotations
    return desc


class IndexLocks:
    """One lock per (registry, repository, tag-schema tag) in this process: jobs sharing a worker
    never interleave their read-merge-write of the same index."""

    def __init__(self) -> None:
        self._locks: weakref.WeakValueDictionary[tuple[str, str, str], asyncio.Lock] = weakref.WeakValueDictionary()

    def get(self, location: str, path: str, tag: str) -> asyncio.Lock:
        key = (location, path, tag)
        lock = self._locks.get(key)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[key] = lock
        return lock


async def push_referrers(repo: Repository, found: ReferrerSet, locks: IndexLocks, *, held: bool = True) -> int:
    """Push every referrer (their blobs are already there); returns how many the target holds now.

    ``held``: the target may hold some already (an earlier copy; not a repository without tags): each is
    HEADed first and not written again, for a tag-immutable registry (ECR, Harbor rules) refuses even the
    same bytes at a cosign tag, and a copy onto its own source must write nothing. Its subject is then
    tracked by the registry if its referrers API lists it, else in the tag-schema index (merged only if
    the entry is missing)."""
    reach = access(repo)
    if reach is None:
        raise UnsupportedManifest(f"{repo.name} cannot keep referrers")  # callers check access() first
    untracked: dict[str, list[dict[str, Any]]] = {}
    listed: dict[str, frozenset[str]] = {}  # per subject: what the target's referrers API lists (asked once)
    for r in found.referrers:
        for child in r.children:
            if not (held and await _holds(repo, child.digest, child.digest)):
                await _put(repo, reach, child, child.digest)
        ref, subject = r.tag or r.manifest.digest, r.manifest.subject
        if held and await _holds(repo, ref, r.manifest.digest):
            if subject is not None and subject.digest not in listed:
                listed[subject.digest] = await _listed(reach, subject.digest)
            kept = subject is None or r.manifest.digest in listed[subject.digest]
        else:
            kept = (await _put(repo, reach, r.manifest, ref)).subject_kept
        if subject is not None and not kept:
            untracked.setdefault(subject.digest, []).append(index_descriptor(r))
    await gather_all(*(merge_index(repo, reach, s, e, locks) for s, e in untracked.items()))
    return len(found.referrers)


async def _holds(repo: Repository, ref: str, digest: str) -> bool:
    try:
        return await repo.head_manifest(ref) == digest
    except RegcastError:  # cannot tell (push-only credentials...): pushed, as before
        return False


async def _listed(reach: ReferrerAccess, subject: str) -> frozenset[str]:
    """The digests the target's referrers API lists for ``subject`` (none: no API, or it failed)."""
    try:
        listing = await reach.list_referrers(subject, None)
    except RegcastError:
        return frozenset()
    return frozenset(str(d.get("digest")) for d in listing.descriptors) if listing is not None else frozenset()


async def _put(repo: Repository, reach: ReferrerAccess, m: Manifest, ref: str) -> api.Pushed:
    answer = await reach.put(ref, m.raw, m.media_type)
    await stored_as_sent(repo, m, ref, answer.digest, "referrer")
    return answer


async def stored_as_sent(repo: Repository, m: Manifest, ref: str, announced: str | None, what: str) -> None:
    """A manifest PUT answered with another digest (same algorithm) than the bytes sent: what ``ref`` holds
    now is read back. Pushed by tag, the tag itself is read, its bytes unchecked against their header: the
    digest sent is often there already (children pushed first, an earlier copy), so a GET by it proves
    nothing about the tag. The very bytes sent: only the header was wrong (warned); otherwise the target
    stored something else, and the copy must not claim the same digest (``RegistryError``, permanent)."""
    if not announced or not announced.startswith(m.digest.split(":")[0]) or announced == m.digest:
        return
    try:
        if ":" in ref:
            held: bytes | None = (await repo.get_manifest(m.digest)).raw  # verified against the digest
        else:
            held = await repo.get_manifest_bytes(ref)
    except RegcastError:
        held = None
    if held != m.raw:
        raise RegistryError(f"registry {repo.name} stored {what} {ref} as {announced}, not {m.digest}")
    log.warning("registry %s announced %s %s as %s; it holds it as %s", repo.name, what, ref, announced, m.digest)


async def merge_index(
    repo: Repository, reach: ReferrerAccess, subject: str, entries: list[dict[str, Any]], locks: IndexLocks
) -> None:
    """Add ``entries`` to the tag-schema index of ``subject``, keeping every entry already there.

    Read, merge, check the tag did not move meanwhile (else start again), write (``If-Match``
    when the registry gave an ETag), settle, read again: done only when the index holds every
    entry, so a writer in another process that overwrote us is merged with. Without conditional
    writes at the registry this narrows the race to a writer stalled longer than the settle time.
    """
    tag = api.fallback_tag(subject)
    async with locks.get(repo.location, repo.path, tag):
        for round_ in range(INDEX_ROUNDS):
            if round_:
                await asyncio.sleep(SETTLE_SECONDS)
            held = await reach.read_index(tag)
            present = api.index_entries(held.manifest) if held else []
            have = {d["digest"] for d in present}
            missing = [e for e in entries if e["digest"] not in have]
            if not missing:
                return
            if await repo.head_manifest(tag) != (held.manifest.digest if held else None):
                continue  # moved under us: read it again
            doc: dict[str, Any] = (
                manifest_json(held.manifest.raw) if held else {"schemaVersion": 2, "mediaType": mt.OCI_INDEX}
            )
            doc["manifests"] = [*doc.get("manifests", []), *missing]  # others' entries kept exactly as written
            raw = json.dumps(doc, separators=(",", ":")).encode()
            answer = await reach.put(tag, raw, mt.OCI_INDEX, held.etag if held else None)
            if answer.conflict:
                log.info("referrers index %s:%s changed while merging; reading it again", repo.path, tag)
    raise RegistryError(f"registry {repo.name}: referrers index {repo.path}:{tag} kept changing")


__all__ = [
    "IndexLocks",
    "Referrer",
    "ReferrerOptions",
    "ReferrerSet",
    "artifact_type_of",
    "merge_index",
    "push_referrers",
]
