"""One copy's shared state: its targets, their statuses, the blobs each still lacks.

The engine's run is one object made of the concerns in ``blobcopy.py`` (per blob: HEAD, mount,
stream, retry) and ``push.py`` (the tag check, manifests and the tag last) on top of this state.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import TYPE_CHECKING

from regcast._exceptions import is_retryable
from regcast.registry.client import describe
from regcast.registry.limits import RateWait
from regcast.registry.manifest import Descriptor
from regcast.transfer.detach import Stragglers
from regcast.transfer.plan import SourceGraph
from regcast.transfer.progress import Listener, TargetState
from regcast.transfer.repository import Repository
from regcast.transfer.spool import SpoolBudget
from regcast.transfer.target import SKIP_TAG_DIFFERS, SKIP_UP_TO_DATE, Target

if TYPE_CHECKING:
    from regcast.transfer.engine import CopyEngine

# a target's failure, in the service's log; ``regcast copy`` prints it itself as its ``error:`` line
failures = logging.getLogger("regcast.transfer.failed")


class RunState:
    """What every part of one copy reads and updates; status changes go to the listener at once."""

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
        self.small_slots = asyncio.Semaphore(engine.options.small_blobs_in_flight)  # blobs up to pipeline_below
        self.stragglers = Stragglers(engine.options.blobs_in_flight)  # blobs left to detached targets only
        self.check_slots = asyncio.Semaphore(engine.options.checks_in_flight)
        self.image_held: set[Target] = set()  # tag already holds the image: only referrers to bring
        self.fresh: set[Target] = set()  # repository without any tag: its blobs are not HEADed first
        self._blobs_left: dict[Target, set[str]] = {}  # per target: blobs it does not hold yet
        self._pushes: dict[Target, asyncio.Task[None]] = {}  # per target: its manifests and tag going
        self._graph: SourceGraph | None = None
        self._tag_heads: dict[Target, asyncio.Task[str | None]] = {}  # each target's tag, HEADed once per copy
        self.listed: set[Target] = set()  # asked whether its repository holds any tag (answer in ``fresh``)
        self.source_ref = ""  # the ref the graph was read at (``execute``)

    def head_targets(self, list_first: bool = False) -> None:
        """HEAD every target's tag now, concurrently with the source's requests (answers awaited where used).

        ``list_first`` (nothing waits for the answers before the source is planned): a first attempt asks
        whether the repository holds any tag first; one that holds none has no such tag either, so
        the HEAD is not sent (one request per target into a new repository, issue 17)."""
        for t in self.targets:
            head = self._listed_head(t) if list_first and t.status.attempts == 0 else t.repo.head_manifest(t.ref)
            self._tag_heads[t] = asyncio.create_task(head)

    async def _listed_head(self, t: Target) -> str | None:
        """The tag's digest, sparing the HEAD where a listing shows an empty repository and the tag
        would be pushed over anyway (overwrite on). With overwrite off the skip rule rests on the tag
        itself, never on a listing (one that lags behind a push would let the tag be clobbered): the
        HEAD goes beside the listing, which then only spares the blob HEADs."""
        self.listed.add(t)
        if t.overwrite:
            if await t.repo.holds_no_tags():
                self.fresh.add(t)
                return None
            return await t.repo.head_manifest(t.ref)
        listing = asyncio.ensure_future(t.repo.holds_no_tags())
        try:
            held = await t.repo.head_manifest(t.ref)
        except BaseException:
            listing.cancel()
            await asyncio.gather(listing, return_exceptions=True)
            raise
        if await listing and held is None:
            self.fresh.add(t)
        return held

    async def target_head(self, t: Target) -> str | None:
        """The digest ``t`` holds at its ref (None: absent); raises as ``head_manifest`` does."""
        task = self._tag_heads.get(t)
        return await (task if task is not None else t.repo.head_manifest(t.ref))

    async def drop_heads(self) -> None:
        """The copy is over: HEADs nobody awaited (the source failed first) are cancelled, their errors read."""
        for task in self._tag_heads.values():
            task.cancel()
        await asyncio.gather(*self._tag_heads.values(), return_exceptions=True)

    def retried(self, t: Target, _what: str = "") -> None:
        """A request or an upload of ``t`` is tried again (counted in its status)."""
        t.status.retries += 1
        self.listener.changed(t.status)

    def waiting(self, targets: list[Target], wait: RateWait) -> None:
        """A registry's rate limit holds ``targets`` back until ``wait.until`` (a target's own registry,
        or the source's for all of them): their statuses say so, so the copy does not look stuck."""
        for t in targets:
            if not t.status.done:
                t.status.waiting, t.status.waiting_until = wait.shown(), wait.until
                self.listener.changed(t.status)

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
        failures.warning("target %s failed: %s", t.key, message)
        t.status.retryable = is_retryable(exc)
        self._set(t, TargetState.FAILED, message)

    def _alive(self, targets: list[Target]) -> list[Target]:
        return [t for t in targets if t.status.state is TargetState.RUNNING]

    def _add_bytes(self, t: Target, n: int, uploaded: bool = False) -> None:
        t.status.bytes_done += n
        if uploaded:
            t.status.bytes_uploaded += n
        self.listener.changed(t.status)

    def _skip(self, t: Target, up_to_date: bool) -> None:
        if up_to_date:
            t.status.reason = SKIP_UP_TO_DATE
            t.status.bytes_done = t.status.bytes_total
            t.status.notes.append("already up to date")
        else:
            t.status.reason = SKIP_TAG_DIFFERS
            t.status.notes.append(f"{t.ref} exists with another digest and overwrite is off")
        self._set(t, TargetState.SKIPPED)

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

    def _push_soon(self, t: Target) -> None:
        """Start ``t``'s manifests and tag (``push.py``)."""
        raise NotImplementedError
