"""The copy engine: one source graph to many targets at once, each blob read from the source once.

Per target: check the tag (skip / already done / copy), then for every blob HEAD → mount →
upload, then child manifests, then the root manifest (the tag last). Targets fail alone: a
target that fails is dropped from the remaining work and its reason kept in its status.

Sources and targets are ``Repository`` values (``transfer/repository.py``): a registry
repository or an image layout; the engine never asks which. The run is split by concern:
``runstate.py`` (statuses), ``blobcopy.py`` (blobs), ``push.py`` (tag and manifests).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import tempfile
from dataclasses import replace

from regcast._async import gather_all
from regcast._exceptions import RegcastError
from regcast.registry.limits import Limits
from regcast.registry.manifest import Platform
from regcast.transfer.blobcopy import BlobCopy
from regcast.transfer.discovery import discover
from regcast.transfer.flights import BlobFlights, KnownBlobs, ManifestFlights
from regcast.transfer.plan import GraphBudget, SourceGraph, load_graph
from regcast.transfer.progress import Listener, NullListener, TargetState
from regcast.transfer.push import ManifestPush
from regcast.transfer.referrers import IndexLocks, ReferrerOptions
from regcast.transfer.repository import Repository
from regcast.transfer.spool import SpoolBudget
from regcast.transfer.target import SKIP_TAG_DIFFERS, SKIP_UP_TO_DATE, CopyResult, Target, TransferOptions

__all__ = [
    "SKIP_TAG_DIFFERS",
    "SKIP_UP_TO_DATE",
    "CopyEngine",
    "CopyResult",
    "KnownBlobs",
    "Target",
    "TransferOptions",
]


class CopyEngine:
    """Long-lived (one per process): holds the options and the known-blob locations."""

    def __init__(self, options: TransferOptions | None = None, known: KnownBlobs | None = None) -> None:
        self.options = options or TransferOptions()
        self.known = known or KnownBlobs()
        self.referrer_locks = IndexLocks()
        self.limits = Limits()  # per-registry request limits shared by every job of the process
        self.flights = BlobFlights()  # one upload per blob and registry at a time
        self.manifest_flights = ManifestFlights()  # one PUT of a manifest to a ref at a time
        o = self.options
        # one disk cap for every job of the process; each job chooses whether it spools (copy's ``spool``)
        self.spool = SpoolBudget(o.spool_dir or tempfile.gettempdir(), o.spool_max_bytes, o.chunk_size)
        self.spool_by_default = o.spool_dir is not None

    async def plan(
        self,
        source: Repository,
        ref: str,
        platforms: list[Platform] | None = None,
        referrers: ReferrerOptions | None = None,
    ) -> SourceGraph:
        graph = await load_graph(source, ref, platforms, self.options.graph_limits)
        return await self.with_referrers(source, graph, referrers)

    async def with_referrers(
        self, source: Repository, graph: SourceGraph, referrers: ReferrerOptions | None
    ) -> SourceGraph:
        """``graph`` with what refers to its manifests (found once, at the source), when asked for."""
        if referrers is None or not referrers.enabled or graph.referrers is not None:
            return graph
        subjects = [*graph.manifests, graph.root]
        budget = GraphBudget.after(graph, self.options.graph_limits)  # the image's limits bound its referrers too
        found = await discover(source, subjects, graph.blobs, referrers, self.options.checks_in_flight, budget)
        return replace(graph, referrers=found)

    async def copy(
        self,
        source: Repository,
        ref: str,
        targets: list[Target],
        *,
        platforms: list[Platform] | None = None,
        listener: Listener | None = None,
        graph: SourceGraph | None = None,
        referrers: ReferrerOptions | None = None,
        spool: bool | None = None,
    ) -> CopyResult:
        """Copy ``ref`` from ``source`` to every target; never raises for one target's fault.

        The one entry point: the source and every target are HEADed first, and the source's
        manifests are read (planned) only when some target lacks the image. ``graph``, from an
        earlier result of the same job, spares the plan when it is still the source's. ``spool``:
        detached targets finish from the blob's on-disk copy (True) or a second source read
        (False); None is the process's default (on when ``REGCAST_SPOOL_DIR`` is set).
        """
        spooling = self.spool_by_default if spool is None else spool
        run = _CopyRun(self, source, targets, listener or NullListener(), self.spool if spooling else None)
        with contextlib.ExitStack() as watching:
            for t in targets:
                on_wait = functools.partial(run.waiting, [t])
                watching.enter_context(t.repo.watch_retries(functools.partial(run.retried, t), on_wait))
            # the source's retries are not a target's; its rate-limit waits hold every target back
            watching.enter_context(source.watch_retries(_uncounted, functools.partial(run.waiting, targets)))
            # with referrers on, an image already everywhere may still have new signatures to bring
            heads_only = not platforms and not (referrers and referrers.enabled)
            run.head_targets(list_first=not heads_only)  # in the background: overlapping the source's round trips
            try:
                if heads_only:
                    digest = await run.all_up_to_date(ref)
                    if digest is not None:  # HEADs only: free on Docker Hub, no manifest pulled
                        return CopyResult(digest, [t.status for t in targets], graph)
                if graph is not None and not platforms and await run.source_moved(ref, graph):
                    graph = None
                if graph is None:
                    graph = await self.plan(source, ref, platforms, referrers)
                else:  # planned earlier (an earlier attempt, a mirror pass): referrers found now if still wanted
                    graph = await self.with_referrers(source, graph, referrers)
                await run.execute(graph, ref)
            finally:
                await run.drop_heads()
        return CopyResult(graph.root.digest, [t.status for t in targets], graph)


def _uncounted(_what: str) -> None:
    """The source's retries: logged by its client, counted against no target."""


class _CopyRun(BlobCopy, ManifestPush):
    """One call of ``CopyEngine.copy``."""

    async def source_moved(self, ref: str, graph: SourceGraph) -> bool:
        """Does the source hold another digest at ``ref`` than the graph planned earlier?"""
        try:
            return await self.source.head_manifest(ref) != graph.root.digest
        except RegcastError:
            return True  # plan again: the plan reports the error properly

    async def all_up_to_date(self, ref: str) -> str | None:
        """The source digest if every target already holds it at its ref (then they are FINISHED)."""
        try:
            digest, *held = await gather_all(
                self.source.head_manifest(ref), *(self.target_head(t) for t in self.targets)
            )
            if digest is None:
                return None
        except RegcastError:
            return None  # the full path reports the error properly
        if any(h != digest for h in held):
            return None
        for t in self.targets:
            t.status.attempts += 1
            if t.overwrite or t.status.tag_pushed:
                t.status.notes.append("already up to date")
                self._set(t, TargetState.FINISHED)
            else:
                self._skip(t, up_to_date=True)
        return digest

    # -- the run -------------------------------------------------------------------------------
    async def execute(self, graph: SourceGraph, ref: str) -> None:
        """Copy ``graph`` (read from the source at ``ref``) to every target."""
        self.source_ref = ref
        extra = graph.referrers.blobs if graph.referrers else ()
        for t in self.targets:
            t.status.bytes_total = graph.total_bytes + sum(b.size for b in extra)
            t.status.blobs_total = len(graph.blobs) + len(extra)
            t.status.attempts += 1
            if graph.referrers:
                t.status.referrers_left_out = list(graph.referrers.left_out)
            self._set(t, TargetState.RUNNING)
        await gather_all(*(self._check_tag(t, graph) for t in self.targets))
        active = self._alive(self.targets)
        if not active:
            return
        # largest blobs first: the long transfers start early and small ones fill the gaps
        image_targets = [t for t in active if t not in self.image_held]
        work = [(b, image_targets) for b in sorted(graph.blobs, key=lambda b: b.size, reverse=True)]
        work += [(b, active) for b in sorted(extra, key=lambda b: b.size, reverse=True)]
        self._blobs_left = {t: {b.digest for b, ts in work if t in ts} for t in active}
        self._graph = graph
        try:
            await self._copy_blobs(work)
            for t in self._alive(active):  # any not pushed yet (nothing to copy, say)
                self._push_soon(t)
            await gather_all(*self._pushes.values())
        finally:
            for task in self._pushes.values():
                task.cancel()
            await asyncio.gather(*self._pushes.values(), return_exceptions=True)
