"""Referrers travel with the image: find them at the source, push them to every target.

Discovery (once per copy, at the source): for the root and every child manifest, the referrers
API, else the tag-schema index ``<alg>-<hex>``, plus cosign's ``sha256-<hex>.sig|.att|.sbom``
tags; then the same for every referrer found (a signature of an SBOM), each digest once. A
referrer the source cannot supply whole (a manifest or blob missing) is left out and said so;
the image is still copied. Discovery spends what the image's graph left of its limits
(``GraphLimits``: manifest bytes, listings included; manifests; blobs; index depth): a source
with thousands of referrers, or huge ones, fails the copy with ``GraphTooLarge`` as a huge image
does, before fetching past the limit.

Push (per target, between the image's manifests and its tag): each referrer's manifests by
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
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from regcast._async import gather_all
from regcast._exceptions import GraphTooLarge, RegcastError, RegistryError, UnsupportedManifest
from regcast.registry import mediatypes as mt
from regcast.registry import referrers as api
from regcast.registry.client import describe
from regcast.registry.manifest import Descriptor, Manifest
from regcast.transfer.plan import MAX_DEPTH as INDEX_DEPTH
from regcast.transfer.plan import GraphBudget, GraphLimits
from regcast.transfer.remote import RegistryRepository
from regcast.transfer.repository import Repository

log = logging.getLogger("regcast.transfer")

MAX_DEPTH = 4  # a signature of an attestation of an SBOM of the image is depth 3
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

    async def put(self, ref: str, raw: bytes, media_type: str, if_match: str | None = None) -> api.Pushed: ...


@dataclass(frozen=True)
class _Remote:
    repo: RegistryRepository

    async def list_referrers(
        self, digest: str, artifact_type: str | None, spend: Callable[[int], None] | None = None
    ) -> api.Listing | None:
        return await api.list_referrers(self.repo.client, self.repo.repository, digest, artifact_type, spend)

    async def read_index(self, tag: str) -> api.Held | None:
        return await api.read_index(self.repo.client, self.repo.repository, tag)

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
        doc = json.loads(manifest.raw)
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
        annotations = json.loads(m.raw).get("annotations")
    except ValueError:
        annotations = None
    if isinstance(annotations, dict) and annotations:
        desc["annotations"] = annotations
    return desc


@dataclass(frozen=True)
class _Candidate:
    digest: str
    subject: str
    artifact_type: str | None  # known from a listing; None: read it from the manifest
    tag: str | None = None


@dataclass
class _Discovery:
    repo: Repository
    api: ReferrerAccess
    options: ReferrerOptions
    have_blobs: set[str]
    slots: asyncio.Semaphore
    budget: GraphBudget = field(default_factory=lambda: GraphBudget(GraphLimits()))  # what the graph left
    seen: set[str] = field(default_factory=set)
    found: list[Referrer] = field(default_factory=list)
    blobs: dict[str, Descriptor] = field(default_factory=dict)
    left_out: list[str] = field(default_factory=list)
    api_absent: bool = False

    async def candidates(self, subject: str) -> list[_Candidate]:
        """What refers to ``subject``; a source that cannot say is one left-out line, not a failed copy."""
        try:
            return await self._candidates(subject)
        except GraphTooLarge:
            raise  # the copy fails, as for a huge image: never a quiet "left out"
        except RegcastError as exc:
            self.left_out.append(f"referrers of {subject} not looked up: {describe(exc)}")
            return []

    async def _candidates(self, subject: str) -> list[_Candidate]:
        """Everything that refers to ``subject``: API (else the tag-schema index), then cosign's tags."""
        out: list[_Candidate] = []
        listing = None
        if not self.api_absent:
            only = next(iter(self.options.types)) if len(self.options.types) == 1 else None
            async with self.slots:
                listing = await self.api.list_referrers(subject, only, self.budget.spend)  # page by page
            if listing is None:
                self.api_absent = True  # one 404 is enough: this registry has no referrers API
        if listing is not None:
            entries = listing.descriptors
        else:
            async with self.slots:
                held = await self.api.read_index(api.fallback_tag(subject))
            if held is not None:
                self.budget.manifest(held.manifest)
            entries = api.index_entries(held.manifest) if held else []
        for d in entries:
            kind = d.get("artifactType")
            kind = kind if isinstance(kind, str) else None
            if kind is None or self.options.wants(kind):  # filtered out here: never fetched, never counted
                out.append(_Candidate(d["digest"], subject, kind))
        for tag in api.cosign_tags(subject):
            async with self.slots:
                digest = await self.repo.head_manifest(tag)
            if digest is not None:
                out.append(_Candidate(digest, subject, None, tag))
        return out

    async def take(self, c: _Candidate) -> Referrer | None:
        """Fetch one referrer whole (manifests, blob presence); None when it is filtered or left out."""
        if c.artifact_type is not None and not self.options.wants(c.artifact_type):
            return None
        what = f"referrer {c.digest}" + (f" ({c.tag})" if c.tag else "") + f" of {c.subject}"
        try:
            async with self.slots:
                self.budget.check()
                manifest = await self.repo.get_manifest(c.digest)
            self.budget.manifest(manifest)
            kind = c.artifact_type if c.artifact_type is not None else artifact_type_of(manifest)
            if not self.options.wants(kind):
                return None
            children = await self._children(manifest)
            missing = await self._missing_blobs([manifest, *children])
        except GraphTooLarge:
            raise
        except RegcastError as exc:
            self.left_out.append(f"{what} left out: {describe(exc)}")
            return None
        if missing:
            self.left_out.append(f"{what} left out: blob {missing[0]} is missing at source {self.repo.name}")
            return None
        for m in [*children, manifest]:
            for b in m.blobs:
                if not b.is_foreign and b.digest not in self.have_blobs and b.digest not in self.blobs:
                    self.budget.more_blobs(1)
                    self.blobs[b.digest] = b
        return Referrer(manifest, tuple(children), c.subject, kind, c.tag)

    async def _children(self, manifest: Manifest) -> list[Manifest]:
        """A referrer that is an index: its manifests, within the graph's depth and budget."""
        out: list[Manifest] = []
        todo = [(manifest, 1)]
        while todo:
            m, depth = todo.pop()
            if not m.is_index:
                continue
            if depth > INDEX_DEPTH:
                raise UnsupportedManifest(f"index nesting deeper than {INDEX_DEPTH}")
            self.budget.more_children(len(m.children))
            for d in m.children:
                async with self.slots:
                    self.budget.check()
                    child = await self.repo.get_manifest(d.digest)
                self.budget.manifest(child)
                out.insert(0, child)  # deepest first: pushed before what lists them
                todo.append((child, depth + 1))
        return out

    async def _missing_blobs(self, manifests: Iterable[Manifest]) -> list[str]:
        todo = {b.digest for m in manifests for b in m.blobs if not b.is_foreign}
        todo -= self.have_blobs
        todo -= set(self.blobs)

        async def present(digest: str) -> bool:
            async with self.slots:
                return await self.repo.has_blob(digest)

        ordered = sorted(todo)
        there = await gather_all(*(present(d) for d in ordered))
        return [d for d, ok in zip(ordered, there, strict=True) if not ok]


async def discover(
    source: Repository,
    subjects: Iterable[Manifest],
    image_blobs: Iterable[Descriptor],
    options: ReferrerOptions,
    in_flight: int = 8,
    budget: GraphBudget | None = None,
) -> ReferrerSet:
    """Every referrer of ``subjects`` (and of those referrers, recursively), each once.

    ``budget``: what the image's graph left of its limits (``GraphBudget.after``); a source over
    it raises ``GraphTooLarge`` naming the limit and how to copy without referrers.
    """
    reach = access(source)
    if reach is None:
        return ReferrerSet()  # a source that keeps no referrers
    run = _Discovery(
        source,
        reach,
        options,
        {b.digest for b in image_blobs},
        asyncio.Semaphore(in_flight),
        budget or GraphBudget(GraphLimits()),
    )
    try:
        await _walk(run, [m.digest for m in subjects])
    except GraphTooLarge as exc:
        raise GraphTooLarge(
            f'{exc}, counting its referrers (copy without them: --no-referrers, or "referrers": false)'
        ) from None
    for line in run.left_out:
        log.warning("%s", line)
    return ReferrerSet(tuple(run.found), tuple(run.blobs.values()), tuple(run.left_out))


async def _walk(run: _Discovery, level: list[str]) -> None:
    run.seen.update(level)
    for _depth in range(MAX_DEPTH):
        if not level:
            break
        lists = await gather_all(*(run.candidates(s) for s in level))
        fresh: list[_Candidate] = []
        for c in (c for cs in lists for c in cs):
            if c.digest not in run.seen:
                run.seen.add(c.digest)
                fresh.append(c)
        run.budget.more_children(len(fresh))  # counted before any is fetched
        taken = await gather_all(*(run.take(c) for c in fresh))
        level = []
        for r in taken:
            if r is not None:
                run.found.append(r)
                level.append(r.manifest.digest)


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


async def push_referrers(repo: Repository, found: ReferrerSet, locks: IndexLocks) -> int:
    """Push every referrer (their blobs are already there); returns how many were pushed."""
    reach = access(repo)
    if reach is None:
        raise UnsupportedManifest(f"{repo.name} cannot keep referrers")  # callers check access() first
    untracked: dict[str, list[dict[str, Any]]] = {}
    for r in found.referrers:
        for child in r.children:
            await _put(repo, reach, child, child.digest)
        answer = await _put(repo, reach, r.manifest, r.tag or r.manifest.digest)
        subject = r.manifest.subject
        if subject is not None and not answer.subject_kept:
            untracked.setdefault(subject.digest, []).append(index_descriptor(r))
    await gather_all(*(merge_index(repo, reach, s, e, locks) for s, e in untracked.items()))
    return len(found.referrers)


async def _put(repo: Repository, reach: ReferrerAccess, m: Manifest, ref: str) -> api.Pushed:
    answer = await reach.put(ref, m.raw, m.media_type)
    if answer.digest and answer.digest.startswith(m.digest.split(":")[0]) and answer.digest != m.digest:
        raise RegistryError(f"registry {repo.name} stored referrer {ref} as {answer.digest}, not {m.digest}")
    return answer


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
                json.loads(held.manifest.raw) if held else {"schemaVersion": 2, "mediaType": mt.OCI_INDEX}
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
    "discover",
    "merge_index",
    "push_referrers",
]
