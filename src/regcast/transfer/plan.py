"""Walk the source graph once (index → child manifests → config + layers) before any upload."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from regcast._async import gather_all
from regcast._exceptions import DigestMismatch, GraphTooLarge, NotFound, RegistryError, UnsupportedManifest
from regcast.registry import mediatypes as mt
from regcast.registry.digest import digest_of
from regcast.registry.manifest import Descriptor, Manifest, Platform, filter_index, parse_manifest
from regcast.transfer.repository import Repository

if TYPE_CHECKING:
    from regcast.transfer.referrers import ReferrerSet

MAX_DEPTH = 4
MAX_CONFIG = 4 * 1024 * 1024  # an image config read for its platform (they are a few KiB)
MAX_TOTAL_BYTES = 2**53  # the sum of every blob: exact in JSON and in every counter
FETCH_BATCH = 8  # child manifests fetched at once: memory grows by at most this many before a limit bites


@dataclass(frozen=True)
class GraphLimits:
    """What one source graph may hold (``REGCAST_MAX_GRAPH_*``): a hostile source cannot grow memory unbounded."""

    manifest_bytes: int = 64 * 1024 * 1024  # every manifest of the graph together
    children: int = 1000  # child manifests of all indexes together
    blobs: int = 10_000  # unique blobs


class GraphBudget:
    """What one copy has used of its ``GraphLimits``: the image's manifests, then its referrers' (the same budget)."""

    def __init__(self, limits: GraphLimits) -> None:
        self.limits = limits
        self.bytes = 0
        self.children = 0
        self.blobs = 0
        self.exceeded = ""  # once over a limit, its message: every later check fails at once

    @classmethod
    def after(cls, graph: SourceGraph, limits: GraphLimits) -> GraphBudget:
        """The budget left once ``graph`` is loaded (referrer discovery spends the rest)."""
        budget = cls(limits)
        budget.bytes = len(graph.root.raw) + sum(len(m.raw) for m in graph.manifests)
        budget.children = len(graph.manifests)
        budget.blobs = len(graph.blobs)
        return budget

    def check(self) -> None:
        """Raise the limit already exceeded, if any (fetches still waiting for a slot stop here)."""
        if self.exceeded:
            raise GraphTooLarge(self.exceeded)

    def _over(self, message: str) -> GraphTooLarge:
        self.exceeded = self.exceeded or message
        return GraphTooLarge(message)

    def manifest(self, m: Manifest) -> None:
        self.spend(len(m.raw))

    def spend(self, n: int) -> None:
        """``n`` more bytes of manifests (or referrer listings) read from the source."""
        self.bytes += n
        if self.bytes > self.limits.manifest_bytes:
            raise self._over(
                f"the image's manifests together exceed {self.limits.manifest_bytes} bytes "
                "(REGCAST_MAX_GRAPH_MANIFEST_BYTES)"
            )

    def more_children(self, n: int) -> None:
        self.children += n
        if self.children > self.limits.children:
            raise self._over(
                f"the image lists more than {self.limits.children} child manifests (REGCAST_MAX_GRAPH_CHILDREN)"
            )

    def more_blobs(self, n: int) -> None:
        self.blobs += n
        if self.blobs > self.limits.blobs:
            raise self._over(f"the image has more than {self.limits.blobs} blobs (REGCAST_MAX_GRAPH_BLOBS)")


@dataclass(frozen=True)
class SourceGraph:
    """Everything one copy pushes, in push order."""

    root: Manifest
    manifests: tuple[Manifest, ...]  # child manifests, deepest first, each once
    blobs: tuple[Descriptor, ...]  # each blob once, foreign layers left out
    foreign: tuple[Descriptor, ...]
    referrers: ReferrerSet | None = None  # signatures, SBOMs... pushed between the manifests and the tag

    @property
    def total_bytes(self) -> int:
        return sum(b.size for b in self.blobs)


async def _children(
    source: Repository,
    index: Manifest,
    depth: int,
    seen: dict[str, Manifest],
    order: list[Manifest],
    budget: GraphBudget,
) -> None:
    if depth > MAX_DEPTH:
        raise UnsupportedManifest(f"index nesting deeper than {MAX_DEPTH}")
    todo = list({d.digest: d for d in index.children if d.digest not in seen}.values())
    budget.more_children(len(todo))
    for start in range(0, len(todo), FETCH_BATCH):
        batch = todo[start : start + FETCH_BATCH]
        fetched = await gather_all(*(_child(source, index, d.digest) for d in batch))
        for desc, child in zip(batch, fetched, strict=True):
            if desc.digest in seen:
                continue
            budget.manifest(child)
            seen[desc.digest] = child
            if child.is_index:
                await _children(source, child, depth + 1, seen, order, budget)
            order.append(child)


async def _child(source: Repository, index: Manifest, digest: str) -> Manifest:
    """A manifest an index lists; one the source lacks is not "the image not found" (the CLI's word for a
    NotFound): the image is there, incomplete (a garbage-collected child, a partial mirror)."""
    try:
        return await source.get_manifest(digest)
    except NotFound as exc:
        raise RegistryError(f"{source.name}: index {index.digest} lists {digest}, which is not there ({exc})") from None


async def _check_image_platform(source: Repository, image: Manifest, platforms: list[Platform]) -> None:
    """A single image's platform (from its config) must match one asked for."""
    have = await _image_platform(source, image)
    if not any(p.matches(have) for p in platforms):
        want = ", ".join(str(p) for p in platforms)
        what = f"an image for {have}" if have else "an image without a platform"
        raise UnsupportedManifest(f"{source.name}: {image.digest} is {what}, not for platform {want}")


async def _image_platform(source: Repository, image: Manifest) -> Platform | None:
    """os/architecture/variant of an image's config, or None (an artifact, or a config without them)."""
    config = image.blobs[0] if image.blobs else None
    if config is None or config.media_type not in (mt.DOCKER_CONFIG, mt.OCI_CONFIG) or config.size > MAX_CONFIG:
        return None
    data = b"".join([chunk async for chunk in source.read_blob(config)])
    if digest_of(data, config.digest.split(":")[0]) != config.digest:
        raise DigestMismatch(f"{source.name}: config {config.digest} does not match its digest")
    try:
        doc = json.loads(data)
    except ValueError:
        return None
    if not isinstance(doc, dict) or not doc.get("os") or not doc.get("architecture"):
        return None
    return Platform(str(doc["os"]), str(doc["architecture"]), str(doc.get("variant") or ""))


async def _platform_entries(
    source: Repository, index: Manifest, nested: dict[str, Manifest], budget: GraphBudget, depth: int = 1
) -> list[Descriptor]:
    """The entries a platform filter chooses among: an index listed without a platform stands for its own
    entries, read into ``nested`` (containerd walks into it; an index of indexes names no platform itself)."""
    entries: list[Descriptor] = []
    for d in index.children:
        if d.platform is not None or d.media_type not in mt.INDEXES or d.digest in nested:
            entries.append(d)
            continue
        if depth >= MAX_DEPTH:
            raise UnsupportedManifest(f"index nesting deeper than {MAX_DEPTH}")
        inner = await _child(source, index, d.digest)
        budget.manifest(inner)
        nested[d.digest] = inner
        entries += await _platform_entries(source, inner, nested, budget, depth + 1)
    return entries


def _select(entries: list[Descriptor], platforms: list[Platform]) -> list[Descriptor]:
    """The manifests of ``entries`` for ``platforms``, the exact ones first: with one platform asked for, the
    first is copied (``linux/arm``: ``arm/v7`` even where ``arm/v5`` is listed before it, as docker pulls)."""
    chosen = [d for d in entries if any(p.matches(d.platform) for p in platforms)]
    chosen.sort(key=lambda d: not any(p.same(d.platform) for p in platforms))
    if not chosen:
        have = ", ".join(sorted({str(d.platform) for d in entries if d.platform})) or "none"
        want = ", ".join(str(p) for p in platforms)
        raise UnsupportedManifest(f"the index has no manifest for platform {want} (it has: {have})")
    return chosen


async def load_graph(
    source: Repository, ref: str, platforms: list[Platform] | None = None, limits: GraphLimits | None = None
) -> SourceGraph:
    """Fetch the root and every child manifest; collect the blobs to copy.

    With a platform filter on an index: one platform → its image manifest becomes the root (as
    crane and skopeo do); several → a new index listing only those (a new digest).
    """
    budget = GraphBudget(limits or GraphLimits())
    root = await source.get_manifest(ref)
    budget.manifest(root)
    platforms = Platform.distinct(platforms) if platforms else platforms
    if root.is_index and platforms:
        nested: dict[str, Manifest] = {}
        chosen = _select(await _platform_entries(source, root, nested, budget), platforms)
        if len(platforms) == 1 and len(chosen) >= 1:
            root = await _child(source, root, chosen[0].digest)
            budget.manifest(root)
        else:
            raw = filter_index(root, chosen, nested)
            root = parse_manifest(raw, root.media_type or mt.OCI_INDEX)
    elif platforms:  # one image: copied only if it is for a platform asked for, never silently
        await _check_image_platform(source, root, platforms)
    seen: dict[str, Manifest] = {}
    order: list[Manifest] = []
    if root.is_index:
        await _children(source, root, 1, seen, order, budget)
    blobs: dict[str, Descriptor] = {}
    foreign: dict[str, Descriptor] = {}
    for m in [*order, root]:
        for b in m.blobs:
            if b.is_foreign:
                foreign.setdefault(b.digest, b)
            else:
                blobs.setdefault(b.digest, b)
        if len(blobs) > budget.limits.blobs:
            raise GraphTooLarge(f"the image has more than {budget.limits.blobs} blobs (REGCAST_MAX_GRAPH_BLOBS)")
    if sum(b.size for b in blobs.values()) >= MAX_TOTAL_BYTES:
        raise GraphTooLarge("the image's blobs together are not below 2^53 bytes")
    return SourceGraph(root, tuple(order), tuple(blobs.values()), tuple(foreign.values()))
