"""Run one claimed job: build clients from the stored request, copy, retry failed targets.

Targets already FINISHED or SKIPPED (in the store) are never redone. Progress is flushed to the
store by the worker's monitor loop; this module only mutates in-memory ``TargetStatus``es.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any

from regcast._exceptions import InvalidInput, NotFound, RegcastError, is_retryable
from regcast.config import Settings
from regcast.jobs.secrets import SecretBox
from regcast.jobs.spec import AuthIn, DistributeRequest
from regcast.jobs.store import JobRecord, TargetUpdate
from regcast.registry.client import RegistryClient, RequestObserver, describe
from regcast.registry.guards import OutboundPolicy
from regcast.registry.limits import Limits
from regcast.registry.pool import ConnectionPools
from regcast.registry.reference import parse_endpoint
from regcast.transfer.engine import CopyEngine, CopyResult, Target
from regcast.transfer.plan import SourceGraph
from regcast.transfer.progress import TargetState, TargetStatus
from regcast.transfer.remote import RegistryRepository

log = logging.getLogger("regcast.worker")
DONE_STATES = (TargetState.FINISHED.value, TargetState.SKIPPED.value)


@dataclass
class JobRun:
    """In-memory state of one job being run; the worker reads it to persist progress."""

    record: JobRecord
    statuses: dict[int, TargetStatus] = field(default_factory=dict)
    source_digest: str | None = None
    error: str | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    timings: dict[str, list[float]] = field(default_factory=dict)  # target key -> [running since, ended at]
    saved: dict[int, TargetUpdate] = field(default_factory=dict)  # target rows as last written by a progress save
    opened: dict[str, Any] | None = None  # the stored secrets, once decrypted by this attempt (notify reads them)

    def changed_now(self, _status: TargetStatus | None = None) -> None:
        self.changed.set()


def refused_endpoint(request: DistributeRequest, policy: OutboundPolicy) -> str | None:
    """``field: why`` for the first endpoint or ``auth.url`` the outbound policy refuses, else None.

    By text (normalised as the HTTP stack will); names are resolved and checked again at connect time.
    """
    specs = [("source", request.source.endpoint, request.source.auth)] + [
        (f"targets.{i}", t.endpoint, t.auth) for i, t in enumerate(request.targets)
    ]
    for where, endpoint, auth in specs:
        why = policy.problem(parse_endpoint(endpoint).base)
        if why:
            return f"{where}.endpoint: registry {why}"
        if auth and auth.url and not auth.basicauth:
            why = policy.problem(auth.url, "auth")
            if why:
                return f"{where}.auth.url: {why}"
    if request.notify:  # the same outbound guards as registries
        why = policy.problem(request.notify.url)
        if why:
            return f"notify.url: {why}"
    return None


def client_for(
    endpoint: str,
    auth: dict[str, Any] | None,
    verify: bool,
    settings: Settings,
    read_only: bool = False,
    observer: RequestObserver | None = None,
    limits: Limits | None = None,
    allow_plain_http: bool = False,
    pool: ConnectionPools | None = None,
) -> RegistryClient:
    parsed = AuthIn.model_validate(auth) if auth else None
    where = parse_endpoint(endpoint)
    if not verify and where.scheme == "https":  # as the CLI: TLS checks off, plain HTTP if it does not speak TLS
        where = replace(where, fallback_http=True)
    options = replace(settings.client_options(verify_tls=verify, host=where.host), allow_plain_http=allow_plain_http)
    make = pool.client if pool is not None else RegistryClient  # a pool: connections and tokens outlive the job
    return make(
        where,
        credentials=parsed.credentials() if parsed else None,
        seed_auth=parsed.seed_auth() if parsed else None,
        options=replace(options, observer=observer) if observer else options,
        read_only=read_only,
        limit=limits.for_host(where.host) if limits else None,
    )


class JobRunner:
    def __init__(
        self, settings: Settings, engine: CopyEngine, box: SecretBox, observer: RequestObserver | None = None
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.box = box
        self.observer = observer  # metrics of every registry request
        self.pool = ConnectionPools()  # per (registry, credentials, TLS settings) across jobs; retries stay per job

    async def close(self) -> None:
        await self.pool.close()

    def prepare(self, record: JobRecord) -> JobRun:
        run = JobRun(record)
        for t in record.targets:
            run.statuses[t.idx] = t.status()
        return run

    async def run(self, run: JobRun) -> None:
        """One attempt: copy to every target not yet done and not failed for good.

        Another attempt, if one is due, is a new claim after a backoff (``jobs.not_before``), decided
        by the worker: nothing sleeps here, and any worker can take it.
        """
        run.opened = self.box.open(run.record.secrets) if run.record.secrets else {}
        request = DistributeRequest.model_validate(_with_auth(run.record, run.opened))
        refused = refused_endpoint(request, self.settings.outbound_policy())
        if refused:  # the allow-list may have changed since the job was accepted
            run.error = refused
            raise InvalidInput(refused)
        await self.pool.prune()
        todo = [
            i
            for i, st in run.statuses.items()
            if st.state.value not in DONE_STATES and (st.state is not TargetState.FAILED or st.retryable)
        ]
        if not todo:
            return
        src = request.source
        if src.verify_tls is False:
            log.warning("job %s: TLS verification is off for source %s", run.record.id, src.endpoint)
        source = RegistryRepository(
            client_for(
                src.endpoint,
                _auth(request, None),
                src.verify_tls,
                self.settings,
                read_only=True,
                allow_plain_http=src.allow_plain_http,
                observer=self.observer,
                limits=self.engine.limits,
                pool=self.pool,
            ),
            src.image,
        )
        try:
            if run.record.attempts > 1:
                log.info("job %s: attempt %d for %d target(s)", run.record.id, run.record.attempts, len(todo))
            try:
                result = await self._copy_once(run, request, source, None, todo)
            except NotFound:
                run.error = "Image not found"
                raise
            except RegcastError as exc:  # the source failed: a passing fault is tried again by a later claim
                if not is_retryable(exc) or run.record.attempts >= self.settings.max_attempts:
                    raise
                log.warning("job %s: source not ready (%s)", run.record.id, describe(exc))
                for i in todo:
                    st = run.statuses[i]
                    st.state, st.error, st.retryable = TargetState.FAILED, f"source: {describe(exc)}", True
                return
            run.source_digest = result.source_digest
            run.changed_now()
        finally:
            await source.close()

    async def _copy_once(
        self,
        run: JobRun,
        request: DistributeRequest,
        source: RegistryRepository,
        graph: SourceGraph | None,
        todo: list[int],
    ) -> CopyResult:
        targets: list[Target] = []
        try:
            for i in todo:
                t_in = request.targets[i]
                if t_in.verify_tls is False:
                    log.warning("job %s: TLS verification is off for target %s", run.record.id, t_in.endpoint)
                client = client_for(
                    t_in.endpoint,
                    _auth(request, i),
                    t_in.verify_tls,
                    self.settings,
                    allow_plain_http=t_in.allow_plain_http,
                    observer=self.observer,
                    limits=self.engine.limits,
                    pool=self.pool,
                )
                target = Target(
                    t_in.endpoint,
                    RegistryRepository(client, t_in.image or request.source.image),
                    t_in.ref or request.source.ref,
                    overwrite=t_in.overwrite,
                )
                previous = run.statuses[i]
                target.status.attempts = previous.attempts
                target.status.tag_pushed = previous.tag_pushed
                target.status.retries = previous.retries
                run.statuses[i] = target.status
                targets.append(target)
            return await self.engine.copy(
                source,
                request.source.ref,
                targets,
                platforms=request.platform_list(),
                listener=_Notify(run),
                graph=graph,
                referrers=request.referrer_options(),
                spool=request.spool,
            )
        finally:
            await asyncio.gather(*(t.repo.close() for t in targets), return_exceptions=True)


class _Notify:
    def __init__(self, run: JobRun) -> None:
        self.run = run
        self._last: dict[str, TargetState] = {}

    def changed(self, status: TargetStatus) -> None:
        # wake the monitor at once on a state change; byte counts are flushed on its tick
        if self._last.get(status.key) is not status.state:
            self._last[status.key] = status.state
            now = time.monotonic()
            if status.state is TargetState.RUNNING:
                self.run.timings[status.key] = [now]
            elif status.done and len(span := self.run.timings.setdefault(status.key, [now])) == 1:
                span.append(now)
            self.run.changed.set()


def _with_auth(record: JobRecord, sealed: dict[str, Any]) -> dict[str, Any]:
    auths: list[Any] = sealed.get("targets") or []
    source: dict[str, Any] = {**record.request["source"], "auth": sealed.get("source")}
    targets: list[dict[str, Any]] = [
        {**t, "auth": auths[i] if i < len(auths) else None} for i, t in enumerate(record.request["targets"])
    ]
    return {
        "source": source,
        "targets": targets,
        "platforms": record.request.get("platforms"),
        "referrers": record.request.get("referrers", True),
        "referrer_types": record.request.get("referrer_types"),
        "spool": record.request.get("spool"),
    }


def _auth(request: DistributeRequest, idx: int | None) -> dict[str, Any] | None:
    auth = request.source.auth if idx is None else request.targets[idx].auth
    return auth.model_dump(by_alias=True) if auth else None


def failure_summary(run: JobRun) -> str | None:
    failed = [st for st in run.statuses.values() if st.state is TargetState.FAILED]
    if not failed:
        return run.error
    return "; ".join(f"{st.key}: {st.error}" for st in failed)


def describe_job_error(exc: BaseException) -> str:
    """One secret-free line for the job status; a bug says only its exception type."""
    if isinstance(exc, RegcastError):
        return describe(exc)
    return f"internal error: {type(exc).__name__}"
