"""Workers: claim jobs, run them, keep the store told, recover jobs of workers that died.

Side tasks are named and supervised (restarted after a crash). A running job has a monitor
that flushes progress (which is also its heartbeat), notices a cancel request or a lost claim,
and writes the final state shielded from cancellation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable

from sqlalchemy.exc import SQLAlchemyError

from regcast._exceptions import NotFound, RegcastError
from regcast.config import Settings
from regcast.jobs.models import JobState
from regcast.jobs.runner import DONE_STATES, JobRun, JobRunner, describe_job_error, failure_summary
from regcast.jobs.secrets import SecretBox
from regcast.jobs.store import JobRecord, JobStore, TargetUpdate
from regcast.ops.events import JobEvents, purge_loop
from regcast.ops.logs import current_job
from regcast.transfer.engine import CopyEngine

log = logging.getLogger("regcast.worker")


async def supervised(name: str, fn: Callable[[], Awaitable[None]], stop: asyncio.Event) -> None:
    """Run ``fn`` until ``stop``; log and restart it if it crashes."""
    while not stop.is_set():
        try:
            await fn()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("side task %s crashed; restarting in 1s", name)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)


class Worker:
    def __init__(
        self,
        store: JobStore,
        settings: Settings,
        box: SecretBox,
        engine: CopyEngine | None = None,
        worker_id: str | None = None,
        events: JobEvents | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.events = events  # metrics, per-target log lines, notifications (ops/)
        observer = events.metrics if events else None
        self.runner = JobRunner(settings, engine or CopyEngine(settings.transfer_options()), box, observer)
        self.stopping = asyncio.Event()
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """A job was just queued in this process: claim now instead of at the next poll."""
        self._wake.set()

    def stop(self) -> None:
        """Stop claiming; running jobs are interrupted and put back in the queue."""
        self.stopping.set()

    async def run(self) -> None:
        log.info("worker %s started (%d job(s) at a time)", self.id, self.settings.jobs_in_flight)
        tasks = [
            asyncio.create_task(supervised("reaper", self._reap, self.stopping), name="reaper"),
            asyncio.create_task(supervised("claimer", self._claim_loop, self.stopping), name="claimer"),
            asyncio.create_task(
                supervised("purge", lambda: purge_loop(self.store, self.settings, self.stopping), self.stopping),
                name="purge",
            ),
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.runner.close()  # the registry connections kept across jobs
            if self.events is not None:
                await self.events.close()
            log.info("worker %s stopped", self.id)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)

    async def _reap(self) -> None:
        interval = max(0.5, self.settings.stale_after / 3)
        while not self.stopping.is_set():
            try:
                await asyncio.to_thread(self.store.requeue_stale, self.settings.stale_after, self.settings.max_attempts)
            except SQLAlchemyError as exc:
                log.warning("reaper: database unavailable (%s)", type(exc).__name__)
            await self._sleep(interval)

    async def _claim_loop(self) -> None:
        """One claimer per process fills up to ``jobs_in_flight`` slots (idle polling stays one query)."""
        slots = asyncio.Semaphore(self.settings.jobs_in_flight)
        running: set[asyncio.Task[None]] = set()

        async def run(record: JobRecord) -> None:
            try:
                await self.execute(record)
            except Exception:  # retrieved here, never left to "Task exception was never retrieved"
                log.exception("job %s: the worker failed while running it", record.id)
            finally:
                slots.release()
                self._wake.set()  # a slot is free: look for more work at once

        try:
            while not self.stopping.is_set():
                await slots.acquire()
                try:
                    record = await asyncio.to_thread(self.store.claim, self.id)
                except SQLAlchemyError as exc:
                    slots.release()
                    log.warning("claim: database unavailable (%s)", type(exc).__name__)
                    await self._sleep(2.0)
                    continue
                if record is None:
                    slots.release()
                    await self._idle()
                    continue
                task = asyncio.create_task(run(record), name=f"run-{record.id}")
                running.add(task)
                task.add_done_callback(running.discard)
        finally:
            if running:  # shutting down: each job stops cleanly and goes back to the queue
                await asyncio.gather(*running, return_exceptions=True)

    async def _idle(self) -> None:
        """Wait for the poll interval, a wake-up (job queued here, slot freed) or shutdown."""
        waits = [asyncio.create_task(self._wake.wait()), asyncio.create_task(self.stopping.wait())]
        await asyncio.wait(waits, timeout=self.settings.poll_interval, return_when=asyncio.FIRST_COMPLETED)
        for w in waits:
            w.cancel()
        self._wake.clear()

    # -- one job ----------------------------------------------------------------------------------
    async def execute(self, record: JobRecord) -> None:
        current_job.set(record.id)  # every log line of this job's task carries its id
        log.info("job %s: claimed by %s (attempt %d)", record.id, self.id, record.attempts)
        run = self.runner.prepare(record)
        task = asyncio.create_task(self.runner.run(run), name=f"job-{record.id}")
        try:
            await self._monitor(run, task)
        finally:  # whatever happened to the monitor, the job task is stopped and its outcome retrieved
            if not task.done():
                await _cancel(task)
            elif not task.cancelled():
                task.exception()

    async def _monitor(self, run: JobRun, task: asyncio.Task[None]) -> None:
        record = run.record
        cancelled = False
        while True:
            waiter = asyncio.create_task(run.changed.wait())
            stopper = asyncio.create_task(self.stopping.wait())
            await asyncio.wait(
                {task, waiter, stopper},
                timeout=min(1.0, self.settings.heartbeat_interval),
                return_when=asyncio.FIRST_COMPLETED,
            )
            waiter.cancel()
            stopper.cancel()
            run.changed.clear()
            owned, cancel = await self._flush(run)
            if not owned:
                log.warning("job %s: claim lost (requeued elsewhere); stopping here without writing", record.id)
                await _cancel(task)
                return
            if cancel and not task.done():
                log.info("job %s: cancelled by user", record.id)
                await _cancel(task)
                cancelled = True
                break
            if self.stopping.is_set() and not task.done():
                await _cancel(task)
                await self._flush(run)
                await asyncio.shield(asyncio.to_thread(self.store.release, record.id, self.id))
                log.info("job %s: interrupted by shutdown; back in the queue", record.id)
                return
            if task.done():
                break
        await asyncio.shield(self._finish(run, task, cancelled))

    async def _flush(self, run: JobRun) -> tuple[bool, bool]:
        updates = [
            TargetUpdate(
                i,
                st.state.value,
                st.bytes_done,
                st.bytes_total,
                st.attempts,
                st.error,
                st.retries,
                st.reason,
                st.referrers,
                tuple(st.referrers_left_out),
                st.finished_at,
                st.blobs_detached,
                st.detached_reason,
            )
            for i, st in run.statuses.items()
        ]
        try:
            return await asyncio.shield(
                asyncio.to_thread(self.store.save_progress, run.record.id, self.id, updates, run.source_digest)
            )
        except SQLAlchemyError as exc:
            log.warning("job %s: could not save progress (%s)", run.record.id, type(exc).__name__)
            return True, False

    async def _finish(self, run: JobRun, task: asyncio.Task[None], cancelled: bool) -> None:
        error: str | None
        if cancelled:
            state, error = JobState.CANCELLED, "cancelled by user"
        elif (exc := task.exception()) is not None:
            if not isinstance(exc, RegcastError):
                log.error("job %s: unexpected error", run.record.id, exc_info=exc)
            state = JobState.FAILED
            error = "Image not found" if isinstance(exc, NotFound) else describe_job_error(exc)
            if isinstance(exc, NotFound):
                error = f"Image not found ({describe_job_error(exc)})"
        elif all(st.state.value in DONE_STATES for st in run.statuses.values()):
            state, error = JobState.FINISHED, None
        else:
            state, error = JobState.FAILED, failure_summary(run)
        await self._flush(run)
        ok = await asyncio.to_thread(self.store.finish, run.record.id, self.id, state, error)
        note = f" ({error})" if error and ok else ""
        log.info("job %s: %s%s", run.record.id, state.value, note, extra={"error": error})
        if ok and self.events is not None:
            self.events.job_ended(run, state.value, error)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
