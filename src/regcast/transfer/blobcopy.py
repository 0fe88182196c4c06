"""Each blob to every target that lacks it: HEAD, mount, one shared stream, retries (single flight).

Blobs run ``blobs_in_flight`` at a time. Per blob and target: HEAD (present: done), mount from the
source's repository or from where another copy put it, else the target joins the one source read of
that blob; one target per registry streams, the others there mount from it next round. A target
whose upload failed for a passing reason goes again with a fresh session and a new read.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Final

from regcast._async import gather_all
from regcast._exceptions import ContentError, DigestMismatch, RegcastError, RegistryError, RegistryUnreachable
from regcast.registry.client import describe
from regcast.registry.manifest import Descriptor
from regcast.registry.retry import RetryPolicy
from regcast.transfer.detach import DetachPolicy, Slot, read_from
from regcast.transfer.fanout import Channel, Sink, broadcast
from regcast.transfer.progress import TargetState
from regcast.transfer.repository import BlobUpload
from regcast.transfer.runstate import RunState
from regcast.transfer.target import Target

log = logging.getLogger("regcast.transfer")

# An upload that took more than this before it broke made progress (its timeout count starts again, as a
# resumed download's does). Not any byte: a target that never reads its body still takes what the socket
# buffers hold (4.4-6.3 MiB measured on 127.0.0.1; Linux's default maxima are 4 MiB send + 32 MiB receive).
UPLOAD_PROGRESS: Final = 64 * 1024 * 1024


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


class BlobCopy(RunState):
    """The per-blob part of a copy."""

    async def _copy_blobs(self, work: list[tuple[Descriptor, list[Target]]]) -> None:
        """Workers take blobs in order: as many tasks as workers, however many blobs; a large blob waits for
        one of ``blobs_in_flight`` slots, a small one for one of ``small_blobs_in_flight``."""
        pending = iter(work)

        async def worker() -> None:
            for blob, targets in pending:  # one shared iterator: each blob is taken by exactly one worker
                await self._copy_blob(blob, targets)

        # twice the slots: a blob left to slow targets hands its slot over (capped by ``stragglers``)
        # and its worker stays with it, so another worker must be there to take the next blob
        opts = self.engine.options
        workers = min(2 * opts.blobs_in_flight + opts.small_blobs_in_flight, len(work))
        await gather_all(*(worker() for _ in range(workers)))

    async def _copy_blob(self, blob: Descriptor, targets: list[Target]) -> None:
        small = blob.size <= self.engine.options.pipeline_below
        async with Slot(self.small_slots if small else self.blob_slots, self.stragglers) as slot:
            checked = self.engine.known.seq  # what the process knew when the targets were asked
            missing = [t for t in await self._heads(blob, targets, first=True) if t is not None]
            tried_mount: set[int] = set()
            sessions: dict[int, BlobUpload] = {}
            retries: dict[int, RetryPolicy] = {}
            moved: dict[int, int] = {}  # bytes each target's upload took this round: a stall after them is a new one
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
                moved.clear()
                busy, failures = await self._stream_once(blob, leaders, sessions, slot, checked, moved)
                again = [
                    t
                    for t, exc in failures.items()
                    if self._try_again(t, blob, exc, retries, moved.get(id(t), 0) > UPLOAD_PROGRESS)
                ]
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
        moved: dict[int, int],
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
            return busy, (await self._stream(blob, mine, sessions, slot, moved) if mine else {})
        finally:
            for t in mine:
                flights.done(t.location, blob.digest)

    def _try_again(
        self,
        t: Target,
        blob: Descriptor,
        exc: BaseException,
        retries: dict[int, RetryPolicy],
        progressed: bool = False,
    ) -> bool:
        """Another upload of this blob for ``t`` (``retries[id(t)].wait`` from now), or fail it for good.

        A refusal that changed the upload strategy is tried again at once without using up a try. An
        upload that ``progressed`` (took over ``UPLOAD_PROGRESS`` bytes) before it failed resets the timeout
        count, as a resumed download does: a large blob that stalled at 3 GB, then again, keeps its tries.
        """
        retry = retries.get(id(t)) or t.repo.retry
        if progressed:
            retry = retry.progressed()
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
        trust = self.engine.options.known_blob_seconds

        async def head(t: Target) -> Target | None:
            if t.status.state is not TargetState.RUNNING:
                return None
            here = known.get(t.location, blob.digest) == t.repo.path
            if small and t in self.fresh and not here:
                return t
            try:
                if landed_since is not None and here and known.seen_since(t.location, blob.digest, landed_since):
                    present = True
                elif here and t.repo.manifests_shared and known.trusted(t.location, blob.digest, t.repo.path, trust):
                    # put or confirmed there seconds ago by this process; a registry (not a layout, whose
                    # HEAD is a stat) answers a manifest PUT BLOB_UNKNOWN if it went since: checked again then
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

    async def _check_blobs_again(self, t: Target, blobs: list[Descriptor]) -> None:
        """After a manifest PUT answered BLOB_UNKNOWN: forget what this process knew of ``t``'s
        repository, HEAD every blob there again and send the missing ones (the counts stay as they were)."""
        self.engine.known.forget(t.location, t.repo.path)
        self.fresh.discard(t)
        before = (t.status.bytes_done, t.status.bytes_uploaded, t.status.blobs_present, t.status.blobs_mounted)
        await gather_all(*(self._copy_blob(b, [t]) for b in blobs))
        t.status.bytes_done, t.status.bytes_uploaded, t.status.blobs_present, t.status.blobs_mounted = before

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
        self,
        blob: Descriptor,
        leaders: list[Target],
        sessions: dict[int, BlobUpload],
        slot: Slot,
        moved: dict[int, int],
    ) -> dict[Target, BaseException]:
        """One source read to every leader; returns the leaders whose upload failed, with why
        (``moved``: the bytes each leader's upload took, by id(target)).

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
        sinks = [self._sink(t, blob, functools.partial(opening.open, t), moved) for t in leaders]
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
                chunk_size=opts.chunk_size,
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
        if isinstance(err, ContentError):  # a mismatch, a blob its manifest gives another size
            return type(err)(f"source {self.source.name}: {err}")
        if isinstance(err, RegistryUnreachable) and not err.registry:  # the stall watchdog's
            return RegistryUnreachable(f"{t.repo.name}: {err}", registry=t.repo.name, failure=err.failure)
        return err

    def _detach_policy(self, blob: Descriptor, targets: list[Target]) -> DetachPolicy | None:
        """With several targets on one stream, one that lags is detached after the grace (issue 19)."""
        after = self.engine.options.detach_after
        if after <= 0 or len(targets) < 2:
            return None

        whys: dict[int, str] = {}  # this blob's reason per target: blobs detached at once must not stack theirs

        def detached(index: int, why: str, offset: int) -> None:
            t = targets[index]
            t.status.blobs_detached += 1
            t.status.detached_reason = whys[index] = why
            log.info("target %s detached from blob %s at byte %d: %s", t.key, blob.digest, offset, why)
            self.listener.changed(t.status)

        def reading(index: int, where: str) -> None:  # the reason says where the rest of the blob came from
            t = targets[index]
            t.status.detached_reason = f"{whys.get(index, 'lagging')}; finished from {where}"
            log.info("target %s finishes blob %s from %s", t.key, blob.digest, where)
            self.listener.changed(t.status)

        reread = functools.partial(read_from, self.source, blob)
        return DetachPolicy(after, reread, detached, spool=self.spool, reading=reading)

    def _sink(
        self, t: Target, blob: Descriptor, upload: Callable[[], Awaitable[BlobUpload]], moved: dict[int, int]
    ) -> Sink:
        """``t``'s upload of ``blob`` from its channel; ``upload()`` gives its session (opened by then, or now).
        The bytes it takes are added to ``moved[id(t)]``."""

        async def sink(ch: Channel) -> None:
            def count(n: int) -> None:
                moved[id(t)] = moved.get(id(t), 0) + n
                self._add_bytes(t, n, uploaded=True)

            session = await upload()
            await session.write(blob, ch, count)
            # committed (only ever after the digest matched): told now, not when the slowest is done
            t.status.blobs_uploaded += 1
            self.engine.known.add(t.location, blob.digest, t.repo.path)
            self.listener.changed(t.status)
            self._blob_in(t, blob)

        return sink
