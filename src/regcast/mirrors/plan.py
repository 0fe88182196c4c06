"""The plan of a pass: image x target -> up to date / copy / skip, from HEADs (and manifests for bytes).

Per selected tag: every target's tag is HEADed first, so an ``immutable`` tag present at every
target costs the source nothing; then one source HEAD gives the digest to compare. The checks of
all tags go at once, bounded per registry (its connection pool, or its ``max_concurrency`` when
lower), never by one bound for all registries: a no-change pass of 50 tags x 3 targets is 200
HEADs spread over 4 registries, each kept busy on its own connections. With
``bytes`` (dry runs, progress totals) the manifests of the images to copy are read and each blob
HEADed at each target: the bytes a pass moves are the blobs missing there, each counted once per
target repository, which is what a pass that copies images one after another then moves. With a
``platforms`` filter the digest to compare is the filtered one, so the source index is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from regcast._async import gather_all
from regcast._exceptions import AuthenticationFailed, RegcastError
from regcast.mirrors.clients import ClientPool
from regcast.mirrors.document import Mirror, MirrorDocument
from regcast.mirrors.select import Repo, TagSelector, is_immutable, source_of, targets_of
from regcast.mirrors.tags import list_tags
from regcast.registry.client import RegistryClient, describe
from regcast.registry.manifest import Platform
from regcast.transfer.plan import SourceGraph, load_graph
from regcast.transfer.remote import RegistryRepository

T = TypeVar("T")


class Action(enum.StrEnum):
    UP_TO_DATE = "up-to-date"
    COPY = "copy"
    SKIP = "skip"  # the tag holds another digest there and overwrite is off
    FAILED = "failed"


@dataclass
class TargetPlan:
    target: Repo
    action: Action
    held: str | None = None
    bytes: int = 0
    reason: str | None = None

    def public(self) -> dict[str, Any]:
        return {"target": str(self.target), "action": self.action.value, "bytes": self.bytes, "reason": self.reason}


@dataclass
class ImagePlan:
    mirror: str
    source: Repo
    tag: str
    digest: str | None = None
    targets: list[TargetPlan] = field(default_factory=list)
    error: str | None = None
    graph: SourceGraph | None = None

    @property
    def to_copy(self) -> list[TargetPlan]:
        return [t for t in self.targets if t.action is Action.COPY]

    @property
    def bytes(self) -> int:
        return sum(t.bytes for t in self.targets)

    def public(self) -> dict[str, Any]:
        return {
            "image": f"{self.source}:{self.tag}",
            "tag": self.tag,
            "digest": self.digest,
            "error": self.error,
            "bytes": self.bytes,
            "targets": [t.public() for t in self.targets],
        }


@dataclass
class MirrorPlan:
    name: str
    source: Repo
    targets: list[Repo]
    images: list[ImagePlan] = field(default_factory=list)
    error: str | None = None

    def public(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": str(self.source),
            "targets": [str(t) for t in self.targets],
            "error": self.error,
            "images": [i.public() for i in self.images],
        }


def totals(plans: list[MirrorPlan]) -> dict[str, int]:
    counts = {"mirrors": len(plans), "images": 0, "copy": 0, "up_to_date": 0, "skip": 0, "failed": 0, "bytes": 0}
    for p in plans:
        counts["failed"] += p.error is not None
        for img in p.images:
            counts["images"] += 1
            counts["bytes"] += img.bytes
            for t in img.targets:
                key = {Action.UP_TO_DATE: "up_to_date", Action.COPY: "copy", Action.SKIP: "skip"}.get(t.action)
                counts[key or "failed"] += 1
    return counts


def _decide(mirror: Mirror, tag: str, digest: str, target: Repo, held: str | None) -> TargetPlan:
    """One reachable target's action for a source digest, from the digest its tag holds (None: absent)."""
    if held == digest or (held is not None and is_immutable(mirror, tag)):
        return TargetPlan(target, Action.UP_TO_DATE, held)
    if held is None or mirror.overwrite:
        return TargetPlan(target, Action.COPY, held)
    return TargetPlan(target, Action.SKIP, held, reason="tag-differs")


async def _bounded(slots: asyncio.Semaphore, fn: Callable[[], Awaitable[T]]) -> T:
    async with slots:
        return await fn()


class Planner:
    """Plans mirrors of one document with one pool of clients."""

    def __init__(self, doc: MirrorDocument, pool: ClientPool, *, with_bytes: bool = False) -> None:
        self.doc = doc
        self.pool = pool
        self.with_bytes = with_bytes
        self._slots: dict[str, asyncio.Semaphore] = {}  # registry (or layout) -> checks in flight there
        self._counted: set[tuple[Repo, str]] = set()  # (target repository, blob) already counted

    def slots(self, registry: str) -> asyncio.Semaphore:
        """The checks in flight at one registry: as many as its connection pool holds, fewer when the
        document caps the registry (the client's limit would queue the rest anyway, holding tasks)."""
        key = registry.lower()
        if key not in self._slots:
            conf = self.doc.registry(registry)
            size = self.pool.settings.connections_per_registry
            if conf is not None and conf.max_concurrency:
                size = min(size, conf.max_concurrency)
            self._slots[key] = asyncio.Semaphore(size)
        return self._slots[key]

    async def plan(self, names: list[str] | None = None) -> list[MirrorPlan]:
        return [await self.plan_mirror(m) for m in self.doc.mirrors if names is None or m.name in names]

    async def plan_mirror(self, mirror: Mirror, only: list[str] | None = None) -> MirrorPlan:
        """Plan a pass of ``mirror``; with ``only`` (a pushed tag, already matched) no tag list is read."""
        src = source_of(mirror)
        plan = MirrorPlan(mirror.name, src, targets_of(self.doc, mirror))
        selector = TagSelector.from_rules(mirror.tags, mirror.referrers)
        try:
            client = self.pool.source(src.registry)
            # the targets' pings (one per client, before its concurrent HEADs; errors show per image)
            # overlap the source's tag listing: round trips to different registries, not in a row
            pings = asyncio.gather(*(self._ping(t) for t in plan.targets))
            try:
                if only is not None:
                    tags = list(only)
                else:
                    tags = selector.select([] if selector.listed_only else await list_tags(client, src.repository))
            finally:
                await pings
        except RegcastError as exc:
            plan.error = describe(exc)
            return plan
        platforms = [Platform.parse(p) for p in mirror.platforms] if mirror.platforms else None
        plan.images = list(
            await gather_all(*(self._plan_image(mirror, client, src, tag, plan.targets, platforms) for tag in tags))
        )
        if self.with_bytes:
            for img in plan.images:  # in order: a blob is counted for the first image that needs it
                await self._count_bytes(img)
        return plan

    async def _ping(self, target: Repo) -> None:
        if not target.is_layout:
            with contextlib.suppress(RegcastError):
                await self.pool.target(target.registry).ping()

    async def _head_target(self, target: Repo, tag: str) -> str | None:
        repository = self.pool.repository(target)
        try:
            return await _bounded(self.slots(target.registry), lambda: repository.head_manifest(tag))
        except AuthenticationFailed:
            return None  # push-only credentials: the copy will tell whether they can write

    async def _plan_image(
        self,
        mirror: Mirror,
        client: RegistryClient,
        src: Repo,
        tag: str,
        targets: list[Repo],
        platforms: list[Platform] | None,
    ) -> ImagePlan:
        img = ImagePlan(mirror.name, src, tag)
        held, down = await self._check_targets(targets, tag)
        if down and len(down) == len(targets):
            img.error = next(iter(down.values()))
            img.targets = [TargetPlan(t, Action.FAILED, reason=down[i]) for i, t in enumerate(targets)]
            return img
        live = [h for i, h in enumerate(held) if i not in down]
        if is_immutable(mirror, tag) and all(h is not None for h in live):
            img.targets = [
                TargetPlan(t, Action.FAILED, reason=down[i])
                if i in down
                else TargetPlan(t, Action.UP_TO_DATE, held[i], reason="immutable")
                for i, t in enumerate(targets)
            ]
            return img
        try:
            if platforms:
                img.graph = await _bounded(
                    self.slots(src.registry),
                    lambda: load_graph(RegistryRepository(client, src.repository), tag, platforms),
                )
                img.digest = img.graph.root.digest
            else:
                img.digest = await _bounded(self.slots(src.registry), lambda: client.head_manifest(src.repository, tag))
        except RegcastError as exc:
            img.error = describe(exc)
        if img.digest is None:
            img.error = img.error or f"{src}:{tag} is not in the source"
            img.targets = [
                TargetPlan(t, Action.FAILED, h, reason=down.get(i, img.error))
                for i, (t, h) in enumerate(zip(targets, held, strict=True))
            ]
            return img
        img.targets = [
            TargetPlan(t, Action.FAILED, reason=down[i]) if i in down else _decide(mirror, tag, img.digest, t, h)
            for i, (t, h) in enumerate(zip(targets, held, strict=True))
        ]
        return img

    async def _check_targets(self, targets: list[Repo], tag: str) -> tuple[list[str | None], dict[int, str]]:
        """Each target's tag HEADed on its own: the digests held, and the targets (by index) whose check
        failed, with why. A target that cannot be reached fails there only; the others are still planned."""
        checks = await asyncio.gather(*(self._head_target(t, tag) for t in targets), return_exceptions=True)
        down: dict[int, str] = {}
        held: list[str | None] = []
        for i, check in enumerate(checks):
            if isinstance(check, RegcastError):
                down[i] = describe(check)
                held.append(None)
            elif isinstance(check, BaseException):
                raise check
            else:
                held.append(check)
        return held, down

    async def _blob_exists(self, target: Repo, digest: str) -> bool:
        async with self.slots(target.registry):
            return await self.pool.repository(target).has_blob(digest)

    async def _count_bytes(self, img: ImagePlan) -> None:
        if not img.to_copy:
            return
        client = self.pool.source(img.source.registry)
        try:
            if img.graph is None:
                img.graph = await load_graph(RegistryRepository(client, img.source.repository), img.tag)
            graph = img.graph
            for tp in img.to_copy:
                todo = [b for b in graph.blobs if (tp.target, b.digest) not in self._counted]
                present = await gather_all(*(self._blob_exists(tp.target, b.digest) for b in todo))
                for b, here in zip(todo, present, strict=True):
                    self._counted.add((tp.target, b.digest))
                    if not here:
                        tp.bytes += b.size
        except RegcastError as exc:
            img.error = describe(exc)
