"""Referrer discovery, once per copy at the source.

For the root and every child manifest: the referrers API, else the tag-schema index
``<alg>-<hex>``, plus cosign's ``sha256-<hex>.sig|.att|.sbom`` tags; then the same for every
referrer found (a signature of an SBOM), each digest once. The repository's tag list, read once per
discovery beside the first listing, says which of those tags exist: only those are asked for (issue
17: one GET instead of four requests per subject on a registry without the referrers API). A
referrer the source cannot supply whole (a manifest or blob missing) is left out and said so; the
image is still copied.
Discovery spends what the image's graph left of its limits (``GraphLimits``: manifest bytes,
listings included; manifests; blobs; index depth): a source with thousands of referrers, or huge
ones, fails the copy with ``GraphTooLarge`` as a huge image does, before fetching past the limit.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from regcast._async import gather_all
from regcast._exceptions import GraphTooLarge, RegcastError, UnsupportedManifest
from regcast.registry import referrers as api
from regcast.registry.client import describe
from regcast.registry.manifest import Descriptor, Manifest
from regcast.transfer.plan import MAX_DEPTH as INDEX_DEPTH
from regcast.transfer.plan import GraphBudget, GraphLimits
from regcast.transfer.referrers import Referrer, ReferrerAccess, ReferrerOptions, ReferrerSet, access, artifact_type_of
from regcast.transfer.repository import Repository

log = logging.getLogger("regcast.transfer")

MAX_DEPTH = 4  # a signature of an attestation of an SBOM of the image is depth 3


@dataclass
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
    tags: asyncio.Future[frozenset[str] | None] | None = None  # the tag list, read once (None: ask per tag)

    async def existing(self, tags: list[str]) -> list[str]:
        """Those of ``tags`` the repository has, as far as its tag list says (all of them when it cannot say)."""
        if self.tags is None:
            self.tags = asyncio.ensure_future(self.api.tag_names())
        names = await asyncio.shield(self.tags)
        return tags if names is None else [t for t in tags if t in names]

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
        """Everything that refers to ``subject``: API (else the tag-schema index), and cosign's tags.

        The cosign HEADs go out with the listing, not after it: a no-op re-sync waits for one round trip
        (two without the API) instead of five (issue 17)."""
        answers: list[Any] = await gather_all(self._listed(subject), self.existing(api.cosign_tags(subject)))
        entries: list[dict[str, Any]] = answers[0]
        tags: list[str] = answers[1]
        digests: list[str | None] = await gather_all(*(self._head(tag) for tag in tags))
        out: list[_Candidate] = []
        for d in entries:
            kind = d.get("artifactType")
            kind = kind if isinstance(kind, str) else None
            if kind is None or self.options.wants(kind):  # filtered out here: never fetched, never counted
                out.append(_Candidate(d["digest"], subject, kind))
        for tag, digest in zip(tags, digests, strict=True):
            if digest is not None:
                out.append(_Candidate(digest, subject, None, tag))
        return out

    async def _listed(self, subject: str) -> list[dict[str, Any]]:
        """The descriptors the referrers API lists for ``subject``, else those of its tag-schema index."""
        listing = None
        if not self.api_absent:
            only = next(iter(self.options.types)) if len(self.options.types) == 1 else None
            async with self.slots:
                listing = await self.api.list_referrers(subject, only, self.budget.spend)  # page by page
            if listing is None:
                self.api_absent = True  # one 404 is enough: this registry has no referrers API
        if listing is not None:
            return list(listing.descriptors)
        tag = api.fallback_tag(subject)
        if not await self.existing([tag]):
            return []
        async with self.slots:
            held = await self.api.read_index(tag)
        if held is None:
            return []
        self.budget.manifest(held.manifest)
        return api.index_entries(held.manifest)

    async def _head(self, tag: str) -> str | None:
        async with self.slots:
            return await self.repo.head_manifest(tag)

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
    finally:
        if run.tags is not None and not run.tags.done():  # never left running nor unretrieved
            run.tags.cancel()
            run.tags.add_done_callback(lambda f: f.cancelled() or f.exception())
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


__all__ = ["discover"]
