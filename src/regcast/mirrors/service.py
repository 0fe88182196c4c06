"""Mirrors in the service: stored one per name, run on demand or on schedule as ordinary jobs.

A run is planned by the process that took its key (tag listing and HEADs only); each image
that needs copying becomes one job in the existing queue, linked to the run, so every worker
replica shares the copies. The scheduler runs in every process that runs workers: due times
are computed from the clock alike everywhere, and the unique run key lets one replica fire each.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

from regcast._exceptions import JobError, RegcastError
from regcast.config import Settings
from regcast.jobs.secrets import SecretBox
from regcast.jobs.spec import DistributeRequest
from regcast.jobs.store import JobStore
from regcast.mirrors.clients import DOCUMENT_REMEDY, ClientPool, configure_limits
from regcast.mirrors.document import Mirror, MirrorDocument
from regcast.mirrors.models import Trigger
from regcast.mirrors.plan import Action, ImagePlan, MirrorPlan, Planner
from regcast.mirrors.records import MirrorRecord, RunRecord, StoredMirror
from regcast.mirrors.schedule import Schedule, parse_interval
from regcast.mirrors.select import Repo, expand_targets, source_of, targets_of
from regcast.mirrors.store import MirrorStore, utcnow
from regcast.registry.client import describe
from regcast.registry.dockerconfig import stored_credentials
from regcast.registry.limits import Limits, RateWait
from regcast.registry.pool import ConnectionPools
from regcast.registry.reference import canonical_registry

log = logging.getLogger("regcast.mirrors")


def split_document(doc: MirrorDocument, box: SecretBox) -> list[StoredMirror]:
    """One self-contained document per mirror: its registries, its targets with groups expanded."""
    out = []
    for m in doc.mirrors:
        hosts = {canonical_registry(h) for h in (source_of(m).registry, *(t.registry for t in targets_of(doc, m)))}
        single = MirrorDocument(
            version=1,
            registries=[r for r in doc.registries if canonical_registry(r.host) in hosts],
            mirrors=[m.model_copy(update={"targets": expand_targets(doc, m.targets)})],
        )
        out.append(
            StoredMirror(
                m.name,
                single.public(),
                box.seal(single.model_dump(mode="json")),
                m.schedule,
                parse_interval(m.interval) if m.interval else None,
            )
        )
    return out


def _auth(doc: MirrorDocument, registry: str) -> dict[str, Any] | None:
    """A job's auth block, as the planner's clients authenticate: the document's user, else the Docker
    config's entry, its ``identitytoken`` included (ACR's placeholder user alone is refused)."""
    conf = doc.registry(registry)
    if conf and conf.username is not None:
        return {"basicauth": {"user": conf.username, "password": conf.password or ""}}
    creds = stored_credentials(registry, DOCUMENT_REMEDY)
    if creds is None:
        return None
    basic = {"user": creds.username, "password": creds.password}
    if creds.identity_token:
        basic["identitytoken"] = creds.identity_token
    return {"basicauth": basic}


def job_request(doc: MirrorDocument, mirror: Mirror, pool: ClientPool, image: ImagePlan) -> DistributeRequest:
    """The job body of one image: the seed's request, one target per repository that needs it."""

    def endpoint(repo: Repo, source: bool) -> dict[str, Any]:
        client = pool.source(repo.registry) if source else pool.target(repo.registry)
        conf = doc.registry(repo.registry)
        where = client.endpoint  # after the plan's requests: the scheme the registry speaks
        return {
            "endpoint": f"{where.scheme}://{where.host}{where.prefix}/v2",
            "verify_tls": conf.tls_verify if conf else True,
            "auth": _auth(doc, repo.registry),
        }

    body = {
        "source": {**endpoint(image.source, True), "image": image.source.repository, "ref": image.tag},
        "targets": [
            {**endpoint(t.target, False), "image": t.target.repository, "ref": image.tag, "overwrite": mirror.overwrite}
            for t in image.to_copy
        ],
        "platforms": mirror.platforms,
        "referrers": mirror.referrers,
        "spool": mirror.spool,
    }
    return DistributeRequest.model_validate(body)


def _first_error(plan: MirrorPlan) -> str | None:
    """The first image's error, or else the first target whose check failed, as the run's error."""
    for img in plan.images:
        if img.error:
            return f"{img.tag}: {img.error}"
    for img in plan.images:
        for t in img.targets:
            if t.action is Action.FAILED:
                return f"{img.tag}: {t.target}: {t.reason}"
    return None


class MirrorService:
    """The store, the run launcher and the scheduler of one process."""

    def __init__(self, settings: Settings, jobs: JobStore, box: SecretBox, owner: str) -> None:
        self.settings = settings
        self.jobs = jobs
        self.box = box
        self.owner = owner
        self.store = MirrorStore(jobs.db)
        self.wake: Callable[[], None] | None = None  # the local worker's: claim the new jobs now
        self.limits = Limits()  # the process's (its copy engine's), so jobs and plans share them
        self.connections: ConnectionPools | None = None  # the worker's: runs reuse connections and tokens
        self._docs: dict[tuple[str, dt.datetime], MirrorDocument] = {}
        self._never_due: set[tuple[str, dt.datetime]] = set()  # stored schedules with no due time: said once
        self._tasks: set[asyncio.Task[None]] = set()
        self.on_run_ended: Callable[[RunRecord, MirrorDocument], None] | None = None  # notifications (ops/)

    async def settle(self) -> list[str]:
        """End the runs whose jobs are all final; tell ``on_run_ended`` about each."""
        ended = await asyncio.to_thread(self.store.settle)
        for run_id in ended if self.on_run_ended is not None else []:
            run = await asyncio.to_thread(self.store.get_run, run_id)
            rec = await asyncio.to_thread(self.store.get, run.mirror) if run else None
            if run is None or rec is None:
                continue
            try:
                doc = self.document_of(rec.sealed)
            except (RegcastError, ValueError):
                continue
            assert self.on_run_ended is not None
            self.on_run_ended(run, doc)
        return ended

    def client_pool(self, doc: MirrorDocument, on_wait: Callable[[RateWait], None] | None = None) -> ClientPool:
        """Clients for one document from the process's limits and the worker's connection pools (when
        this process runs one): runs, push listings and prunes reuse the connections, tokens and ping."""
        return ClientPool(doc, self.settings, self.limits, self.connections, on_wait)

    def _waits_of(self, run_id: str) -> Callable[[RateWait], None]:
        """A planner's rate-limit waits written to its run (shown while it plans), in the background."""

        async def write(wait: RateWait) -> None:
            try:
                await asyncio.to_thread(self.store.note_wait, run_id, wait.shown(), wait.until)
            except JobError as exc:  # the wait goes on; only its display is lost
                log.warning("mirror run %s: wait not recorded, database unavailable (%s)", run_id, exc)

        def noted(wait: RateWait) -> None:
            task = asyncio.get_running_loop().create_task(write(wait), name=f"mirror-wait-{run_id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        return noted

    def document_of(self, sealed: bytes) -> MirrorDocument:
        return MirrorDocument.model_validate(self.box.open(sealed))

    async def start(self, name: str, trigger: Trigger, due_at: dt.datetime | None = None) -> tuple[str | None, Any]:
        """Take the run (see ``MirrorStore.start_run``); when taken here, plan it in the background."""
        run_id, going = await asyncio.to_thread(self.store.start_run, name, trigger, self.owner, due_at)
        if run_id is not None:
            task = asyncio.create_task(self.plan_run(name, run_id), name=f"mirror-run-{run_id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return run_id, going

    async def plan_run(self, name: str, run_id: str, only: list[str] | None = None) -> None:
        """Select (``only``: these tags, no listing), HEAD, and queue one job per image to copy."""
        selected = up_to_date = skipped = failed = 0
        error: str | None = None
        try:
            record = await asyncio.to_thread(self.store.get, name)
            if record is None:
                raise RegcastError(f"mirror {name} was deleted")
            doc = self.document_of(record.sealed)
            mirror = doc.mirrors[0]
            pool = self.client_pool(doc, self._waits_of(run_id))
            try:
                plan: MirrorPlan = await Planner(doc, pool).plan_mirror(mirror, only)
                error = plan.error or _first_error(plan)
                for img in plan.images:
                    selected += 1
                    actions = {t.action for t in img.targets}
                    if img.to_copy and not img.error:  # the targets reached are copied to: one down fails alone
                        await self._queue(doc, mirror, pool, img, run_id)
                    if img.error or Action.FAILED in actions:
                        failed += 1
                    elif img.to_copy:
                        continue  # counted by its job
                    elif Action.SKIP in actions:
                        skipped += 1
                    else:
                        up_to_date += 1
            finally:
                await pool.close()
        except (RegcastError, ValueError) as exc:
            error = describe(exc) if isinstance(exc, RegcastError) else f"{type(exc).__name__}: {exc}"
            log.warning("mirror %s: run %s failed while planning: %s", name, run_id, error)
        finally:
            recorded = await self._planned(
                run_id,
                selected=selected,
                up_to_date=up_to_date,
                skipped=skipped,
                failed=failed + (1 if error and not selected else 0),
                error=error,
            )
        if recorded:
            log.info("mirror %s: run %s planned (%d image(s), %d up to date)", name, run_id, selected, up_to_date)

    async def _planned(self, run_id: str, **counts: Any) -> bool:
        """Record the plan, then settle through ``settle``: a run with nothing to copy ends here and
        must still reach ``on_run_ended`` (its notify hook). A database outage is logged, not raised
        out of a background task: the run stays PLANNING and ``settle`` fails it after
        ``PLANNING_TIMEOUT`` (or, when only the settling failed, the scheduler's next tick ends it)."""
        try:
            await asyncio.to_thread(self.store.planned, run_id, **counts)
        except JobError as exc:
            log.warning("mirror run %s: plan not recorded, database unavailable (%s)", run_id, exc)
            return False
        try:
            await self.settle()
        except JobError as exc:
            log.warning("mirror run %s: planned, settling left to the next tick (%s)", run_id, exc)
        return True

    async def _queue(self, doc: MirrorDocument, mirror: Mirror, pool: ClientPool, img: ImagePlan, run_id: str) -> None:
        body = job_request(doc, mirror, pool, img)
        targets = [(t.endpoint, t.image or body.source.image, t.ref or body.source.ref) for t in body.targets]
        sealed = self.box.seal(body.sealed_auth()) if body.has_secret() else None  # no credentials: no ciphertext
        public = {**body.public(), "mirror": {"name": mirror.name, "run": run_id}}
        job_id = await asyncio.to_thread(self.jobs.create, public, sealed, targets)
        await asyncio.to_thread(self.store.link_job, run_id, job_id, img.tag)
        if self.wake is not None:
            self.wake()

    # -- the scheduler ----------------------------------------------------------------------------------
    async def tick(self, now: dt.datetime | None = None) -> list[str]:
        """Settle finished runs, then start every mirror whose latest due time has not fired yet."""
        now = now or utcnow()
        await self.settle()
        started = []
        for rec in await asyncio.to_thread(self.store.all):
            self._configure(rec)
            schedule = Schedule(cron=rec.schedule, interval=rec.interval_seconds)
            if schedule.cron is None and schedule.interval is None:
                continue
            try:
                due = schedule.latest_due(now)
            except ValueError as exc:  # stored before check_cron refused it: the other mirrors still run
                if (rec.name, rec.updated_at) not in self._never_due:
                    self._never_due.add((rec.name, rec.updated_at))
                    log.warning("mirror %s: schedule %r has no due time (%s)", rec.name, rec.schedule, exc)
                continue
            if due < rec.created_at:
                continue  # the first due time is the first after the mirror was stored
            last = await asyncio.to_thread(self.store.last_due, rec.name)
            if last is not None and last >= due:
                continue
            run_id, _going = await self.start(rec.name, Trigger.SCHEDULE, due)
            if run_id:
                started.append(run_id)
                log.info("mirror %s: run %s started for %s", rec.name, run_id, due.isoformat())
        return started

    def _configure(self, rec: MirrorRecord) -> None:
        """Every stored mirror's registry limits apply to every job of this process."""
        key = (rec.name, rec.updated_at)
        if key not in self._docs:
            self._docs = {k: v for k, v in self._docs.items() if k[0] != rec.name}
            try:
                self._docs[key] = self.document_of(rec.sealed)
            except (RegcastError, ValueError) as exc:
                log.warning("mirror %s: stored document unreadable (%s)", rec.name, exc)
                return
        configure_limits(self.limits, self._docs[key])

    async def run_scheduler(self, stop: asyncio.Event) -> None:
        interval = min(self.settings.poll_interval, 1.0)
        while not stop.is_set():
            try:
                await self.tick()
            except JobError as exc:  # the store's translated errors (jobs/_db.py)
                log.warning("mirror scheduler: database unavailable (%s)", type(exc).__name__)
            except Exception:
                log.exception("mirror scheduler: tick failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
