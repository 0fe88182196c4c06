"""What happens when a job ends, beyond the store: metrics, one log line per target, notifications."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from regcast._exceptions import JobError
from regcast.config import Settings
from regcast.jobs.runner import JobRun
from regcast.jobs.secrets import SecretBox
from regcast.jobs.store import JobStore, utcnow
from regcast.ops.metrics import Metrics
from regcast.ops.notify import Notifier
from regcast.registry.reference import parse_endpoint
from regcast.transfer.progress import TargetState

log = logging.getLogger("regcast.worker")


class JobEvents:
    """Handed to the worker; ``job_ended`` is called once per job, after its final state is written."""

    def __init__(self, store: JobStore, settings: Settings, box: SecretBox, metrics: Metrics | None = None) -> None:
        self.store = store
        self.box = box
        self.metrics = metrics or Metrics()
        self.notifier = Notifier(store, settings)
        self.notifier.on_delivery = lambda outcome: self.metrics.notifications.labels(outcome).inc()

    def job_ended(self, run: JobRun, state: str, error: str | None) -> None:
        record = run.record
        now = utcnow()
        seconds = (now - record.running_at).total_seconds() if record.running_at else None
        self.metrics.job_done(state.lower(), seconds)
        for idx, st in run.statuses.items():
            endpoint = record.targets[idx].endpoint if idx < len(record.targets) else st.key
            registry = _registry(endpoint)
            span = run.timings.get(st.key)
            if st.state in (TargetState.FINISHED, TargetState.SKIPPED, TargetState.FAILED):
                self.metrics.target_done(registry, st, span[1] - span[0] if span and len(span) == 2 else None)
            log.info(
                "target %s: %s",
                st.key,
                st.state.value,
                extra={"target": st.key, "registry": registry, "bytes": st.bytes_done, "error": st.error},
            )
        opened = run.opened  # decrypted once per attempt by the runner, not again here
        notify = opened.get("notify") if opened is not None else self._sealed_notify(record.secrets)
        self.notifier.job_ended_later(record.id, notify if isinstance(notify, dict) else None)

    def ended_elsewhere(self, job_ids: list[str]) -> None:
        """Jobs the reaper ended (given up after their workers died, or cancelled as asked): no worker
        concluded them, so their metrics and notifications go from here (the job read back first)."""
        task = asyncio.create_task(self._ended_elsewhere(job_ids), name="reaped-jobs")
        self.notifier.tasks.add(task)
        task.add_done_callback(self.notifier.tasks.discard)

    async def _ended_elsewhere(self, job_ids: list[str]) -> None:
        for job_id in job_ids:
            try:
                record = await asyncio.to_thread(self.store.get, job_id)
            except JobError as exc:
                log.warning("job %s: ended by the reaper; not notified (%s)", job_id, exc)
                continue
            if record is None:
                continue
            self.metrics.job_done(record.state.value.lower(), None)
            self.notifier.job_ended_later(job_id, self._sealed_notify(record.secrets))

    def _sealed_notify(self, sealed: bytes | None) -> dict[str, Any] | None:
        if not sealed:
            return None
        try:
            notify = self.box.open(sealed).get("notify")
        except Exception:  # undecryptable: no job hook (the service-wide one still applies)
            return None
        return notify if isinstance(notify, dict) else None

    async def close(self) -> None:
        await self.notifier.close()


def _registry(endpoint: str) -> str:
    try:
        return parse_endpoint(endpoint).name
    except Exception:
        return endpoint


async def purge_loop(store: JobStore, settings: Settings, stopping: asyncio.Event, every: float = 3600.0) -> None:
    """Delete finished jobs older than REGCAST_JOB_RETENTION, at start and then hourly."""
    retention = settings.retention()
    if retention is None:
        return
    while not stopping.is_set():
        try:
            n = await asyncio.to_thread(store.purge_finished, retention)
            if n:
                log.info("purged %d finished job(s) older than %s", n, settings.job_retention)
        except Exception as exc:
            log.warning("purge: database unavailable (%s)", type(exc).__name__)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), every)
