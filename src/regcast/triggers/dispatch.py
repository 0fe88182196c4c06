"""From a verified delivery to queued copies: which mirrors a pushed tag belongs to, once per push.

The route hands over the raw delivery; this module finds the stored mirrors whose *source*
registry has an ``events`` block of that name, checks the signature against their secret,
reads the envelope and, per pushed tag a mirror selects, takes a push run under the key
mirror + tag + digest (``MirrorStore.start_push_run``: a digest the tag's last push had is a
repeat; one it held before that, a rollback, is a new push). The key is unique in the database, so
a delivery repeated by the registry, or the several events distribution sends for one push, start
one run however many replicas receive them. The run is planned like any other (HEADs at the targets, one source HEAD
for the digest; no tag list unless the mirror keeps the ``latest`` N) and its copies are ordinary
jobs. Deletes prune the targets only for mirrors with ``prune: true``.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from regcast._exceptions import CredentialsUnreadable, JobError, RegcastError
from regcast.mirrors.clients import ClientPool
from regcast.mirrors.document import Mirror, MirrorDocument, RegistrySettings
from regcast.mirrors.select import mirror_selects, source_of, targets_of
from regcast.mirrors.service import MirrorService
from regcast.mirrors.tags import list_tags
from regcast.registry.client import describe
from regcast.triggers.envelopes import Action, EnvelopeError, PushEvent, parse_envelope
from regcast.triggers.signature import signed_with

log = logging.getLogger("regcast.events")
LAG_WATCH_SECONDS = 3600.0  # a push run followed longer than this is not measured
OUTAGE_BACKOFF = 30.0  # seconds: the longest wait between the lag watch's polls while the database is down


class Unauthorized(RegcastError):
    """No stored mirror has an events source of that name whose secret signed the delivery."""


@dataclass(frozen=True)
class Listener:
    """One mirror listening to one registry's events."""

    doc: MirrorDocument
    mirror: Mirror
    registry: RegistrySettings


@dataclass
class Delivery:
    """What one delivery did, as the route answers it (and the metrics count it)."""

    events: int = 0
    matched: int = 0
    duplicates: int = 0
    ignored: int = 0
    pruned: int = 0
    runs: list[str] = field(default_factory=list)

    def public(self) -> dict[str, Any]:
        return {
            "status": "success",
            "events": self.events,
            "matched": self.matched,
            "duplicates": self.duplicates,
            "ignored": self.ignored,
            "pruned": self.pruned,
            "runs": self.runs,
        }


class PushTriggers:
    """The push-event entry of one process (``POST /api/events/<name>``)."""

    def __init__(
        self,
        mirrors: MirrorService,
        observe_lag: Callable[[float], None] | None = None,
        on_count: Callable[[str, int], None] | None = None,
    ) -> None:
        self.mirrors = mirrors
        self.observe_lag = observe_lag
        self.on_count = on_count  # the process's metrics
        self.counts: collections.Counter[str] = collections.Counter()  # shown by GET /api/events
        self.last_lag: float | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def count(self, outcome: str, n: int = 1) -> None:
        """Deliveries' events by outcome: received, matched, duplicate, ignored, pruned, unauthorized, malformed."""
        if n:
            self.counts[outcome] += n
            if self.on_count is not None:
                self.on_count(outcome, n)

    def summary(self) -> dict[str, Any]:
        outcomes = ("received", "matched", "duplicate", "ignored", "pruned", "unauthorized", "malformed")
        return {**{k: self.counts[k] for k in outcomes}, "last_lag_seconds": self.last_lag, "scope": "this process"}

    async def listeners(self, name: str) -> list[Listener]:
        """Stored mirrors whose source registry sends events as ``name``."""
        found = []
        for rec in await asyncio.to_thread(self.mirrors.store.all):
            try:
                doc = self.mirrors.document_of(rec.sealed)
            except CredentialsUnreadable as exc:  # sealed with another key: the other mirrors still listen
                log.warning("events: mirror %s: stored document unreadable (%s)", rec.name, exc)
                continue
            mirror = doc.mirrors[0]
            conf = doc.registry(source_of(mirror).registry)
            if conf is not None and conf.events is not None and conf.events.name == name:
                found.append(Listener(doc, mirror, conf))
        return found

    async def receive(self, name: str, headers: Mapping[str, str], query: Mapping[str, str], body: bytes) -> Delivery:
        """Verify, read and act on one delivery. ``Unauthorized`` or ``EnvelopeError`` refuse it whole."""
        listeners = [
            li
            for li in await self.listeners(name)
            if li.registry.events is not None and signed_with(li.registry.events.secret, headers, query, body)
        ]
        if not listeners:
            self.count("unauthorized")
            raise Unauthorized(f"events source {name!r}: unknown, or not signed with its secret")
        try:
            events = parse_envelope(body, headers)
        except EnvelopeError:
            self.count("malformed")
            raise
        out = Delivery(events=len(events))
        for event in events:
            if not event.actionable:
                out.ignored += 1
                continue
            hits = 0
            for li in listeners:
                if event.action is Action.DELETE:
                    hits += await self._prune(li, event, out)
                else:
                    hits += await self._push(li, event, out)
            out.matched += hits > 0
            out.ignored += hits == 0
        for outcome, n in (
            ("received", out.events),
            ("matched", out.matched),
            ("duplicate", out.duplicates),
            ("ignored", out.ignored),
            ("pruned", out.pruned),
        ):
            self.count(outcome, n)
        log.info(
            "events %s: %d event(s), %d matched, %d duplicate(s), %d ignored, %d pruned",
            name, out.events, out.matched, out.duplicates, out.ignored, out.pruned,
        )  # fmt: skip
        return out

    async def _selects(self, li: Listener, event: PushEvent) -> bool:
        if event.tag is None:
            return False
        registry = source_of(li.mirror).registry
        if not mirror_selects(li.doc, li.mirror, registry, event.repository, event.tag):
            return False
        rules = li.mirror.tags
        if rules is None or rules.latest is None or event.tag in rules.list:
            return True
        pool = self.mirrors.client_pool(li.doc)  # ``latest`` N depends on the other tags
        try:
            tags = await list_tags(pool.source(registry), event.repository)
        finally:
            await pool.close()
        return mirror_selects(li.doc, li.mirror, registry, event.repository, event.tag, tags)

    async def _push(self, li: Listener, event: PushEvent, out: Delivery) -> int:
        assert event.tag is not None
        try:
            if not await self._selects(li, event):
                return 0
        except RegcastError as exc:
            log.warning("events: mirror %s: cannot list %s: %s", li.mirror.name, event.repository, describe(exc))
            return 0
        pushed_at = event.at or dt.datetime.now(dt.UTC)  # no time in the event: when it reached regcast
        key = f"{event.tag}@{event.digest or 'at-' + pushed_at.isoformat()}"
        run_id = await asyncio.to_thread(
            self.mirrors.store.start_push_run, li.mirror.name, key, self.mirrors.owner, pushed_at
        )
        if run_id is None:
            out.duplicates += 1
            return 1
        out.runs.append(run_id)
        self._spawn(self._run(li.mirror.name, run_id, event.tag), f"push-run-{run_id}")
        log.info("events: mirror %s: %s:%s pushed, run %s", li.mirror.name, event.repository, event.tag, run_id)
        return 1

    async def _prune(self, li: Listener, event: PushEvent, out: Delivery) -> int:
        registry = source_of(li.mirror).registry
        if event.repository != source_of(li.mirror).repository:
            return 0
        if event.tag is not None and not mirror_selects(li.doc, li.mirror, registry, event.repository, event.tag):
            return 0
        if not li.mirror.prune:
            return 0
        pool = self.mirrors.client_pool(li.doc)
        try:
            for target in targets_of(li.doc, li.mirror):
                try:
                    if await self._delete_at(pool, target.registry, target.repository, event):
                        out.pruned += 1
                        log.warning(
                            "events: mirror %s: pruned %s:%s at %s",
                            li.mirror.name, event.repository, event.tag or event.digest, target,
                        )  # fmt: skip
                except RegcastError as exc:
                    log.warning("events: mirror %s: could not prune at %s: %s", li.mirror.name, target, describe(exc))
        finally:
            await pool.close()
        return 1

    async def _run(self, name: str, run_id: str, tag: str) -> None:
        """Plan and queue the run, then follow it to its end for the push-to-in-sync lag."""
        await self.mirrors.plan_run(name, run_id, only=[tag])
        if self.observe_lag is None:
            return
        lag = await self._follow(run_id)
        if lag is not None:
            self.last_lag = lag
            self.observe_lag(lag)

    async def _follow(self, run_id: str) -> float | None:
        """The run's lag once it ended (None: it has none, or not within ``LAG_WATCH_SECONDS``).

        A database outage does not end the watch (the run goes on without it): one line when the
        outage starts, a longer backoff while it lasts, then the polls resume, as the scheduler does.
        """
        delay, waited, down = 0.2, 0.0, False
        while waited < LAG_WATCH_SECONDS:
            await asyncio.sleep(delay)
            waited += delay
            try:
                await self.mirrors.settle()  # the service's: a run this ends still reaches ``on_run_ended``
                run = await asyncio.to_thread(self.mirrors.store.get_run, run_id)
            except JobError as exc:  # the store's translated errors (jobs/_db.py): secret-free
                if not down:
                    log.warning("events: run %s: lag watch waiting for the database (%s)", run_id, exc)
                down, delay = True, min(delay * 2, OUTAGE_BACKOFF)
                continue
            down, delay = False, min(delay * 1.5, 5.0)
            if run is None or run.finished_at is not None:
                return None if run is None else run.lag_seconds
        return None

    @staticmethod
    async def _delete_at(pool: ClientPool, registry: str, repository: str, event: PushEvent) -> bool:
        """Delete the tag; where tags cannot be deleted, the manifest it holds if it is the deleted one."""
        client = pool.target(registry)
        if event.tag is None:
            assert event.digest is not None
            held = await client.head_manifest(repository, event.digest)
            return held is not None and await client.delete_manifest(repository, event.digest)
        held = await client.head_manifest(repository, event.tag)
        if held is None or (event.digest is not None and held != event.digest):
            return False
        try:
            return await client.delete_manifest(repository, event.tag)
        except RegcastError:
            return await client.delete_manifest(repository, held)

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:  # retrieved: never left unobserved
            log.error("events: %s failed: %s", task.get_name(), describe(task.exception() or RegcastError()))

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
