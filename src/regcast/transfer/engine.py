"""The copy engine: one source graph to many targets at once, each blob read from the source once.

Per target: check the tag (skip / already done / copy), then for every blob HEAD → mount →
upload, then child manifests, then the root manifest (the tag last). Targets fail alone: a
target that fails is dropped from the remaining work and its reason kept in its status.

Sources and targets are ``Repository`` values (``transfer/repository.py``): a registry
repository or an image layout; the engine never asks which.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import logging
import tempfile
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace

from regcast._async import gather_all
from regcast._exceptions import (
    AuthenticationFailed,
    DigestMismatch,
    RegcastError,
    RegistryError,
    RegistryUnreachable,
    is_retryable,
)
from regcast.registry.client import describe
from regcast.registry.limits import Limits
from regcast.registry.manifest import Descriptor, Manifest, Platform
from regcast.registry.retry import RetryPolicy
from regcast.transfer.detach import DetachPolicy, Slot, Stragglers, read_from
from regcast.transfer.discovery import discover
from regcast.transfer.fanout import Channel, Sink, broadcast
from regcast.transfer.flights import BlobFlights
from regcast.transfer.plan import GraphBudget, GraphLimits, SourceGraph, load_graph
from regcast.transfer.progress import Listener, NullListener, TargetState, TargetStatus
from regcast.transfer.referrers import IndexLocks, ReferrerOptions, access, push_referrers
from regcast.transfer.repository import BlobUpload, Repository
from regcast.transfer.spool import SpoolBudget

log = logging.getLogger("regcast.transfer")
# Why a target was SKIPPED (its tag exists and overwrite is off): the tag holds the source digest, or not.
SKIP_UP_TO_DATE = "up-to-date"
SKIP_TAG_DIFFERS = "tag-differs"


@dataclass(frozen=True)
class TransferOptions:
    blobs_in_flight: int = 4
    queue_depth: int = 8
    checks_in_flight: int = 16
    detach_after: float = 2.0  # seconds a target may hold a blob's shared stream back (0: never detach)
    spool_dir: str | None = None  # where spool files go; set: jobs spool unless they say no (issue 19)
    spool_max_bytes: int = 1024**3  # spool files of the process at once; a blob beyond it is read again
    graph_limits: GraphLimits = field(default_factory=GraphLimits)
    progress_timeout: float | None = 120.0  # a target that reads nothing of its upload this long is cut off
    # blobs up to this size: upload sessions opened while the source is read, no HEAD in a repository without tags
    pipeline_below: int = 1024**2


@dataclass(eq=False)  # identity: targets are dict keys and set members
class Target:
    """Where one copy goes: a repository and the ref the root is pushed to."""

    key: str
    repo: Repository
    ref: str
    overwrite: bool = False
    status: TargetStatus = field(init=False)

    def __post_init__(self) -> None:
        self.status = TargetStatus(self.key)

    @property
    def location(self) -> str:
        return self.repo.location


@dataclass
class CopyResult:
    source_digest: str
    targets: list[TargetStatus]
    graph: SourceGraph | None = None  # None when no target needed a copy (nothing was planned)

    @property
    def ok(self) -> bool:
        return all(t.state in (TargetState.FINISHED, TargetState.SKIPPED) for t in self.targets)


class KnownBlobs:
    """Where a blob was last seen per location (registry), so later copies can mount instead of upload.

    Each entry carries the sequence number of its last ``add``: a copy that HEADed a blob can tell
    whether another copy of the process put it there since (``seen_since``), and look again
    instead of uploading it a second time (issue 17).
    """

    def __init__(self, capacity: int = 100_000) -> None:
        self._entries: OrderedDict[tuple[str, str], tuple[str, int]] = OrderedDict()
        self._capacity = capacity
        self.seq = 0  # increases with every add

    def add(self, location: str, digest: str, path: str) -> None:
        self.seq += 1
        self._entries[(location, digest)] = (path, self.seq)
        self._entries.move_to_end((location, digest))
        while len(self._entries) > self._capacity:
            self._entries.popitem(last=False)

    def get(self, location: str, digest: str) -> str | None:
        entry = self._entries.get((location, digest))
        return entry[0] if entry else None

    def seen_since(self, location: str, digest: str, seq: int) -> bool:
        """Was the blob seen at ``location`` after ``seq`` (a value of ``self.seq`` read earlier)?"""
        entry = self._entries.get((location, digest))
        return entry is not None and entry[1] > seq


class CopyEngine:
    """Long-lived (one per process): holds the options and the known-blob locations."""

    def __init__(self, options: TransferOptions | None = None, known: KnownBlobs | None = None) -> None:
        self.options = options or TransferOptions()
        self.known = known or KnownBlobs()
        self.referrer_locks = IndexLocks()
        self.limits = Limits()  # per-registry request limits shared by every job of the process
        self.flights = BlobFlights()  # one upload per blob and registry at a time
        o = self.options
        # one disk cap for every job of the process; each job chooses whether it spools (copy's ``spool``)
        self.spool = SpoolBudget(o.spool_dir or tempfile.gettempdir(), o.spool_max_bytes)
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
                watching.enter_context(t.repo.watch_retries(functools.partial(run.retried, t)))
            # with referrers on, an image already everywhere may still have new signatures to bring
            if not platforms and not (referrers and referrers.enabled):
                digest = await run.all_up_to_date(ref)
                if digest is not None:  # HEADs only: free on Docker Hub, no manifest pulled
                    return CopyResult(digest, [t.status for t in targets], graph)
            if graph is not None and not platforms and await run.source_moved(ref, graph):
                graph = None
            if graph is None:
                graph = await self.plan(source, ref, platforms, referrers)
            else:  # planned earlier (an earlier attempt, a mirror pass): referrers found now if still wanted
                graph = await self.with_referrers(source, graph, referrers)
            await run.execute(graph)
        return CopyResult(graph.root.digest, [t.status for t in targets], graph)


class _Sessions:
    """The upload sessions of one blob's stream: opened up front or by each sink, cancelled on failure."""

    def __init__(self, ready: dict[int, BlobUpload]) -> None:
        self.ready = ready  # sessions a mount answer (202) already opened, by id(target)
        self.opened: dict[Target, BlobUpload] = {}

    async def open(self, t: Target) -> BlobUpload:
        if t in self.opened:
            return self.opened[t]
        upload = self.ready.pop(id(t), None) or await t.repo.start_upload()
        if upload is None:
            raise RegistryError(f"{t.repo.name}: no upload session opened")
        self.opened[t] = upload
        return upload

    async def open_all(self, targets: list[Target]) -> dict[Target, BaseException]:
        """Open every target's session now; the ones that could not be opened, with why."""
        failures: dict[Target, BaseException] = {}

        async def one(t: Target) -> None:
            try:
                await self.open(t)
            except RegcastError as exc:
                failures[t] = exc

        await gather_all(*(one(t) for t in targets))
        return failures

    async def cancel(self, targets: list[Target]) -> None:
        await asyncio.gather(*(self.opened[t].cancel() for t in targets if t in self.opened), return_exceptions=True)


class _CopyRun:
    def __init__(
        self,
        engine: CopyEngine,
        source: Repository,
        targets: list[Target],
        listener: Listener,
        spool: SpoolBudget | None = None,
    ) -> None:
        self.engine = engine
        self.spool = spool  # this copy's detached targets read the blob from disk, not the source again
        self.source = source
        self.targets = targets
        self.listener = listener
        self.blob_slots = asyncio.Semaphore(engine.options.blobs_in_flight)
        self.stragglers = Stragglers(engine.options.blobs_in_flight)  # blobs left to detached targets only
        self.check_slots = asyncio.Semaphore(engine.options.checks_in_flight)
        self.image_held: set[Target] = set()  # tag already holds the image: only referrers to bring
        self.fresh: set[Target] = set()  # repository without any tag: its blobs are not HEADed first
        self._blobs_left: dict[Target, set[str]] = {}  # per target: blobs it does not hold yet
        self._pushes: dict[Target, asyncio.Task[None]] = {}  # per target: its manifests and tag going
        self._graph: SourceGraph | None = None

    def retried(self, t: Target, _what: str = "") -> None:
        """A request or an upload of ``t`` is tried again (counted in its status)."""
        t.status.retries += 1
        self.listener.changed(t.status)

    async def source_moved(self, ref: str, graph: SourceGraph) -> bool:
        """Does the source hold another digest at ``ref`` than the graph planned earlier?"""
        try:
            return await self.source.head_manifest(ref) != graph.root.digest
        except RegcastError:
            return True  # plan again: the plan reports the error properly

    async def all_up_to_date(self, ref: str) -> str | None:
        """The source digest if every target already holds it at its ref (then they are FINISHED)."""
        try:
            digest = await self.source.head_manifest(ref)
            if digest is None:
                return None
            held = await gather_all(*(t.repo.head_manifest(t.ref) for t in self.targets))
        except RegcastError:
            return None  # the full path reports the error properly
        if any(h != digest for h in held):
            return None
        for t in self.targets:
            t.status.attempts += 1
            if t.overwrite:
                t.status.notes.append("already up to date")
                self._set(t, TargetState.FINISHED)
            else:
                self._skip(t, up_to_date=True)
        return digest

    # -- status helpers ----------------------------------------------------------------------
    def _set(self, t: Target, state: TargetState, error: str | None = None) -> None:
        t.status.state = state
        t.status.finished_at = dt.datetime.now(dt.UTC) if t.status.done else None
        if error is not None:
            t.status.error = error
        self.listener.changed(t.status)

    def _fail(self, t: Target, exc: BaseException) -> None:
        if t.status.state is TargetState.FAILED:
            return
        message = describe(exc)
        for secret in t.repo.secrets() + self.source.secrets():
            if secret and len(secret) >= 3:
                message = message.replace(secret, "REDACTED")
        log.warning("target %s failed: %s", t.key, message)
        t.status.retryable = is_retryable(exc)
        self._set(t, TargetState.FAILED, message)

    def _alive(self, targets: list[Target]) -> list[Target]:
        return [t for t in targets if t.status.state is TargetState.RUNNING]

    def _add_bytes(self, t: Target, n: int, uploaded: bool = False) -> None:
        t.status.bytes_done += n
        if uploaded:
            t.status.bytes_uploaded += n
        self.listener.changed(t.status)

    # -- the run -------------------------------------------------------------------------------
    async def execute(self, graph: SourceGraph) -> None:
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

    def _push_soon(self, t: Target) -> None:
        if t not in self._pushes and self._graph is not None:
            self._pushes[t] = asyncio.create_task(self._push_manifests(t, self._graph))

    def _blob_in(self, t: Target, blob: Descriptor) -> None:
        """``t`` holds ``blob``: once it holds them all, its manifests and tag go at once (issue 19).

        A fast target is in sync while a slow one is still uploading.
        """
        left = self._blobs_left.get(t)
        if left is None:
            return
        left.discard(blob.digest)
        if not left and t.status.state is TargetState.RUNNING:
            self._push_soon(t)

    async def _copy_blobs(self, work: list[tuple[Descriptor, list[Target]]]) -> None:
        """``blobs_in_flight`` workers take blobs in order: as many tasks as workers, however many blobs."""
        pending = iter(work)

        async def worker() -> None:
            for blob, targets in pending:  # one shared iterator: each blob is taken by exactly one worker
                await self._copy_blob(blob, targets)

        # twice the slots: a blob left to slow targets hands its slot over (capped by ``stragglers``)
        # and its worker stays with it, so another worker must be there to take the next blob
        workers = min(2 * self.engine.options.blobs_in_flight, len(work))
        await gather_all(*(worker() for _ in range(workers)))

    async def _check_tag(self, t: Target, graph: SourceGraph) -> None:
        root = graph.root
        # asked alongside: a repository that holds no tag yet spares every blob HEAD (first attempt only:
        # a later one may find the blobs of an earlier attempt that never got to its tag)
        empty = asyncio.ensure_future(t.repo.holds_no_tags()) if t.status.attempts <= 1 else None
        try:
            existing = await t.repo.head_manifest(t.ref)
            if existing is None and empty is not None and await empty:
                self.fresh.add(t)
        except AuthenticationFailed as exc:
            # push-only credentials may not read: the push itself will tell if they cannot write either
            log.info("target %s: cannot check %s (%s); pushing", t.key, t.ref, exc)
            existing = None
        except RegcastError as exc:
            self._fail(t, exc)
            return
        finally:
            if empty is not None:  # not needed (or failed): never left running nor unretrieved
                empty.cancel()
                empty.add_done_callback(lambda f: f.cancelled() or f.exception())
        if existing == root.digest and graph.referrers and graph.referrers.referrers and access(t.repo):
            # the image is there; its referrers may not be (the tag is not touched either way)
            t.status.bytes_done = graph.total_bytes
            self.image_held.add(t)
        elif existing is not None and not t.overwrite:  # the seed's rule: the tag exists, leave it alone
            self._skip(t, up_to_date=existing == root.digest)
        elif existing == root.digest:
            t.status.notes.append("already up to date")
            t.status.bytes_done = t.status.bytes_total
            self._set(t, TargetState.FINISHED)

    def _skip(self, t: Target, up_to_date: bool) -> None:
        if up_to_date:
            t.status.reason = SKIP_UP_TO_DATE
            t.status.bytes_done = t.status.bytes_total
            t.status.notes.append("already up to date")
        else:
            t.status.reason = SKIP_TAG_DIFFERS
            t.status.notes.append(f"{t.ref} exists with another digest and overwrite is off")
        self._set(t, TargetState.SKIPPED)

    async def _copy_blob(self, blob: Descriptor, targets: list[Target]) -> None:
        async with Slot(self.blob_slots, self.stragglers) as slot:
            checked = self.engine.known.seq  # what the process knew when the targets were asked
            missing = [t for t in await self._heads(blob, targets, first=True) if t is not None]
            tried_mount: set[int] = set()
            sessions: dict[int, BlobUpload] = {}
            retries: dict[int, RetryPolicy] = {}
            # Each round streams to one leader per registry; the others then mount from it. A leader
            # whose upload failed for a passing reason goes again (fresh session, source read again).
            while True:
                missing = self._alive(missing)
                if not missing:
                    return
                mounted = await gather_all(*(self._try_mount(t, blob, tried_mount, sessions) for t in missing))
                missing = [t for t, ok in zip(missing, mounted, strict=True) if not ok]
                leaders: dict[str, Target] = {}
                for t in self._alive(missing):
                    leaders.setdefault(t.location, t)
                if not leaders:
                    continue
                busy, failures = await self._stream_once(blob, leaders, sessions, slot, checked)
                again = [t for t, exc in failures.items() if self._try_again(t, blob, exc, retries)]
                rest = [t for t in missing if t.location not in busy and (t not in leaders.values() or t in again)]
                if busy:  # another copy sends (or sent) this blob there: wait for it, then HEAD or mount
                    await asyncio.gather(*(event.wait() for event in busy.values()))
                    before, checked = checked, self.engine.known.seq
                    waited = [t for t in missing if t.location in busy]
                    tried_mount.difference_update(id(t) for t in waited)
                    rest += [t for t in await self._heads(blob, waited, landed_since=before) if t is not None]
                missing = rest
                if again:
                    await asyncio.sleep(max(retries[id(t)].wait for t in again))

    async def _stream_once(
        self,
        blob: Descriptor,
        leaders: dict[str, Target],
        sessions: dict[int, BlobUpload],
        slot: Slot,
        checked: int,
    ) -> tuple[dict[str, asyncio.Event], dict[Target, BaseException]]:
        """Stream to the leaders whose registry no other copy is sending this blob to (single flight).

        A registry where another copy put the blob since ``checked`` (its flight already over) is
        looked at again (HEAD, mount) as one still in flight would be: no second upload.
        """
        flights = self.engine.flights
        busy: dict[str, asyncio.Event] = {}
        landed = asyncio.Event()  # for an upload already over: nothing to wait for
        landed.set()
        mine: list[Target] = []
        for location, t in leaders.items():
            if self.engine.known.seen_since(location, blob.digest, checked):
                busy[location] = landed
                continue
            event = flights.claim(location, blob.digest)
            if event is None:
                mine.append(t)
            else:
                busy[location] = event
        try:
            return busy, (await self._stream(blob, mine, sessions, slot) if mine else {})
        finally:
            for t in mine:
                flights.done(t.location, blob.digest)

    def _try_again(self, t: Target, blob: Descriptor, exc: BaseException, retries: dict[int, RetryPolicy]) -> bool:
        """Another upload of this blob for ``t`` (``retries[id(t)].wait`` from now), or fail it for good.

        A refusal that changed the upload strategy is tried again at once without using up a try.
        """
        retry = retries.get(id(t)) or t.repo.retry
        if isinstance(exc, DigestMismatch) and retry.retries >= 1:  # the source was read again in full: still wrong
            self._fail(t, exc)
            return False
        if t.repo.learn_from_refusal(exc):
            retries[id(t)] = replace(retry, wait=0.0)
        else:
            try:
                retries[id(t)] = retry.increment("PUT", exc)
            except Exception:
                failed = exc if isinstance(exc, RegcastError | OSError) else None
                self._fail(t, failed or RegistryError(f"{t.repo.name}: upload failed: {exc!r}"))
                return False
        self.retried(t)
        log.warning(
            "target %s: blob %s failed (%s); trying again (%d)", t.key, blob.digest, describe(exc), retry.retries + 1
        )
        return True

    async def _heads(
        self, blob: Descriptor, targets: list[Target], first: bool = False, landed_since: int | None = None
    ) -> list[Target | None]:
        """The targets that lack ``blob``. On the ``first`` look, a repository without tags is not asked
        about a small blob: a round trip saved per blob, against re-sending a small blob that an
        interrupted copy left there untagged (a large one is always asked about). After waiting for
        another copy's upload, a repository that upload committed the blob to since ``landed_since``
        is not asked either: the registry's 201 said so."""
        known = self.engine.known
        small = first and blob.size <= self.engine.options.pipeline_below

        async def head(t: Target) -> Target | None:
            if t.status.state is not TargetState.RUNNING:
                return None
            here = known.get(t.location, blob.digest) == t.repo.path
            if small and t in self.fresh and not here:
                return t
            try:
                if landed_since is not None and here and known.seen_since(t.location, blob.digest, landed_since):
                    present = True
                else:
                    async with self.check_slots:
                        present = await t.repo.has_blob(blob.digest)
            except RegcastError as exc:
                self._fail(t, exc)
                return None
            if present:
                t.status.blobs_present += 1
                known.add(t.location, blob.digest, t.repo.path)
                self._add_bytes(t, blob.size)
                self._blob_in(t, blob)
                return None
            return t

        return list(await gather_all(*(head(t) for t in targets)))

    def _mount_source(self, t: Target, digest: str) -> str | None:
        if self.source.location == t.location and self.source.path != t.repo.path:
            return self.source.path
        path = self.engine.known.get(t.location, digest)
        return path if path and path != t.repo.path else None

    async def _try_mount(self, t: Target, blob: Descriptor, tried: set[int], sessions: dict[int, BlobUpload]) -> bool:
        origin = None if id(t) in tried else self._mount_source(t, blob.digest)
        if origin is None:
            return False
        tried.add(id(t))
        try:
            upload = await t.repo.start_upload(mount=blob.digest, mount_from=origin)
        except RegcastError as exc:
            log.info("mount of %s into %s refused (%s); uploading instead", blob.digest, t.key, exc)
            return False
        if upload is not None:  # 202: not mounted, but here is an upload session to use
            sessions[id(t)] = upload
            return False
        t.status.blobs_mounted += 1
        t.status.bytes_mounted += blob.size
        self.engine.known.add(t.location, blob.digest, t.repo.path)
        self._add_bytes(t, blob.size)
        self._blob_in(t, blob)
        return True

    async def _stream(
        self, blob: Descriptor, leaders: list[Target], sessions: dict[int, BlobUpload], slot: Slot
    ) -> dict[Target, BaseException]:
        """One source read to every leader; returns the leaders whose upload failed, with why.

        A small blob's upload sessions are opened while the source is read (one round trip less
        per blob); a large blob's before, so a slow POST never looks like a lagging target.
        """
        opening = _Sessions(sessions)
        opts = self.engine.options
        failures: dict[Target, BaseException] = {}
        if blob.size > opts.pipeline_below:
            failures = await opening.open_all(leaders)
            leaders = [t for t in leaders if t not in failures]
            if not leaders:
                return failures
        sinks = [self._sink(t, blob, functools.partial(opening.open, t)) for t in leaders]
        detach = self._detach_policy(blob, leaders)
        try:
            errors = await broadcast(
                self.source.read_blob(blob),
                blob,
                sinks,
                opts.queue_depth,
                stall_timeout=opts.progress_timeout,
                detach=detach,
                attached_done=slot.hand_over,  # only detached targets left: the next blob may start
            )
        except asyncio.CancelledError:  # job cancelled or shutting down: leave no open sessions
            await opening.cancel(leaders)
            raise
        for t, err in zip(leaders, errors, strict=True):
            if err is not None:  # a success was counted by its sink the moment it was committed
                await opening.cancel([t])
                failures[t] = self._named(t, err)
        return failures

    def _named(self, t: Target, err: BaseException) -> BaseException:
        """A stream error that names where it happened: the source (a mismatch), the target (a stall)."""
        if isinstance(err, DigestMismatch):
            return DigestMismatch(f"source {self.source.name}: {err}")
        if isinstance(err, RegistryUnreachable) and not err.registry:  # the stall watchdog's
            return RegistryUnreachable(f"{t.repo.name}: {err}", registry=t.repo.name, failure=err.failure)
        return err

    def _detach_policy(self, blob: Descriptor, targets: list[Target]) -> DetachPolicy | None:
        """With several targets on one stream, one that lags is detached after the grace (issue 19)."""
        after = self.engine.options.detach_after
        if after <= 0 or len(targets) < 2:
            return None

        def detached(index: int, why: str, offset: int) -> None:
            t = targets[index]
            t.status.blobs_detached += 1
            t.status.detached_reason = why
            log.info("target %s detached from blob %s at byte %d: %s", t.key, blob.digest, offset, why)
            self.listener.changed(t.status)

        def reading(index: int, where: str) -> None:  # the reason says where the rest of the blob came from
            t = targets[index]
            t.status.detached_reason = f"{t.status.detached_reason}; finished from {where}"
            log.info("target %s finishes blob %s from %s", t.key, blob.digest, where)
            self.listener.changed(t.status)

        reread = functools.partial(read_from, self.source, blob)
        return DetachPolicy(after, reread, detached, spool=self.spool, reading=reading)

    def _sink(self, t: Target, blob: Descriptor, upload: Callable[[], Awaitable[BlobUpload]]) -> Sink:
        """``t``'s upload of ``blob`` from its channel; ``upload()`` gives its session (opened by then, or now)."""

        async def sink(ch: Channel) -> None:
            def count(n: int) -> None:
                self._add_bytes(t, n, uploaded=True)

            session = await upload()
            await session.write(blob, ch, count)
            # committed (only ever after the digest matched): told now, not when the slowest is done
            t.status.blobs_uploaded += 1
            self.engine.known.add(t.location, blob.digest, t.repo.path)
            self.listener.changed(t.status)
            self._blob_in(t, blob)

        return sink

    async def _push_manifests(self, t: Target, graph: SourceGraph) -> None:
        found = graph.referrers if graph.referrers and graph.referrers.referrers else None
        if found and access(t.repo) is None:
            t.status.referrers_left_out.append(f"{len(found.referrers)} referrer(s) not copied: {t.key} keeps none")
            found = None
        try:
            if t not in self.image_held:
                for m in graph.manifests:
                    await self._put_manifest(t, m, m.digest)
            if found:
                # referrers after what they refer to, before the tag moves
                if t not in self.image_held and t.ref != graph.root.digest:
                    await self._put_manifest(t, graph.root, graph.root.digest)
                t.status.referrers = await push_referrers(t.repo, found, self.engine.referrer_locks)
                self.listener.changed(t.status)
            if t not in self.image_held:
                await self._put_manifest(t, graph.root, t.ref)
            await t.repo.commit()
        except RegcastError as exc:
            self._fail(t, exc)
            return
        if t in self.image_held and not t.overwrite:
            self._skip(t, up_to_date=True)  # as the seed's rule says, with the referrers brought
        else:
            if t in self.image_held:
                t.status.notes.append("already up to date")
            self._set(t, TargetState.FINISHED)

    async def _put_manifest(self, t: Target, m: Manifest, ref: str) -> None:
        announced = await t.repo.put_manifest(ref, m.raw, m.media_type)
        if announced and announced.startswith(m.digest.split(":")[0]) and announced != m.digest:
            raise DigestMismatch(f"{t.repo.name} stored manifest {ref} as {announced}, not {m.digest}")
        t.status.manifests_pushed += 1
        self.listener.changed(t.status)
