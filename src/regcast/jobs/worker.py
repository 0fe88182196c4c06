"""Workers: claim jobs fairly, run them, keep the store told, recover jobs of workers that died.

Side tasks (heartbeat, reaper, claimer, listener) are named and supervised (restarted after a
crash). A running job has a monitor that flushes progress, notices a cancel request or a lost
claim, and writes the outcome shielded from cancellation — retrying until the database answers,
bounded by the shutdown deadline, so a job that finished during an outage is not run again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from regcast._exceptions import CredentialsUnreadable, JobError, JobStoreUnavailable, NotFound, RegcastError
from regcast.config import Settings
from regcast.jobs.liveness import Liveness
from regcast.jobs.models import JobState
from regcast.jobs.runner import DONE_STATES, JobRun, JobRunner, describe_job_error, failure_summary
from regcast.jobs.secrets import SecretBox
from regcast.jobs.store import Claim, JobRecord, JobStore, TargetUpdate
from regcast.ops.events import JobEvents, purge_loop
from regcast.ops.logs import current_job
from regcast.transfer.engine import CopyEngine
from regcast.transfer.progress import TargetState

log = logging.getLogger("regcast.worker")
T = TypeVar("T")
FAIR_WINDOW = 0.1  # seconds a fully busy process waits before claiming, so idle processes go first
PROGRESS_COALESCE = 0.25  # seconds: state changes closer than this go to the store in one write


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
        self.liveness = Liveness(store, settings, self.id, self.stopping, events.ended_elsewhere if events else None)
        self.problem: str | None = None  # set when this worker must not run jobs (reported by /readyz)
        self._wake = asyncio.Event()
        self._listening = False  # NOTIFY reaches this process: it wakes with everybody else
        self._deadline: float | None = None  # loop time by which a stopping worker gives up on writes
        # the last claim got every job it asked for, so more may be queued. When it got fewer, a freed
        # slot does not claim again at once (an empty claim per job, #17): jobs queued since wake the
        # worker themselves (a POST here, NOTIFY) or are found at the next poll, as by an idle worker
        self._backlog = True

    def wake(self) -> None:
        """A job was queued in this process: claim now instead of at the next poll.

        With NOTIFY flowing this is left to the notification, which wakes every process at once:
        the process that took the POST gets no head start.
        """
        if not self._listening:
            self._wake.set()

    def _listener_up(self, up: bool) -> None:
        self._listening = up

    def stop(self) -> None:
        """Stop claiming; running jobs are interrupted and put back in the queue."""
        if not self.stopping.is_set():
            self._deadline = asyncio.get_running_loop().time() + self.settings.shutdown_grace
        self.stopping.set()

    def unready(self) -> str | None:
        """Why this worker cannot take jobs now (None: it can)."""
        if self.problem:
            return self.problem
        if not self.liveness.connected:
            return "database unavailable"
        return None

    async def run(self) -> None:
        log.info("worker %s started (%d job(s) at a time)", self.id, self.settings.jobs_in_flight)
        if not await self.liveness.start():
            return
        sides: list[tuple[str, Callable[[], Awaitable[None]]]] = [
            ("heartbeat", self.liveness.heartbeats),
            ("reaper", self.liveness.reaper),
            ("claimer", self._claim_loop),
            ("purge", lambda: purge_loop(self.store, self.settings, self.stopping)),
        ]
        if self.store.postgres:
            from regcast.jobs.listen import listen

            store, notified = self.store, self._wake.set
            sides.append(
                ("listener", lambda: listen(store.url, notified, self.stopping, store.timeout, self._listener_up))
            )
        tasks = [asyncio.create_task(supervised(n, fn, self.stopping), name=n) for n, fn in sides]
        try:
            claimer = next(t for t in tasks if t.get_name() == "claimer")
            await claimer  # returns once stopping and every job is back or done
        finally:
            self.stopping.set()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.runner.close()  # the registry connections kept across jobs
            await self.liveness.stop()
            if self.events is not None:
                await self.events.close()
            log.info("worker %s stopped", self.id)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)

    async def _claim_loop(self) -> None:
        """Each pass claims one job per free slot, then waits for a wake-up or the next poll.

        Waiting between passes lets other processes in (a fair prefetch); ``stopping`` and ``problem``
        are checked after every wait, and a claim that raced with either is handed back at once.
        """
        running: set[asyncio.Task[None]] = set()
        try:
            while not self.stopping.is_set():
                free = self.settings.jobs_in_flight - len(running)
                self._wake.clear()
                if free > 0 and self.problem is None:
                    # a fair prefetch: the busier this process, the longer it lets others claim first
                    busy = len(running) / self.settings.jobs_in_flight
                    await self._sleep(FAIR_WINDOW * busy + random.uniform(0, 0.01))
                    for record in await self._claim(free):
                        task = asyncio.create_task(self._run_one(record), name=f"run-{record.id}")
                        running.add(task)
                        task.add_done_callback(running.discard)
                    if self.stopping.is_set():
                        break
                await self._idle()
        finally:
            if running:  # shutting down: each job stops cleanly and goes back to the queue
                await asyncio.gather(*running, return_exceptions=True)

    async def _claim(self, free: int) -> list[JobRecord]:
        """Up to ``free`` jobs for this worker; none once it is stopping or barred (``problem``)."""
        if self.stopping.is_set() or self.problem is not None:  # a job failed meanwhile in a way that bars it
            return []
        try:
            records = await asyncio.to_thread(self.store.claim, self.id, free)
            self._backlog = len(records) >= free
        except JobStoreUnavailable as exc:
            log.warning("claim: %s", exc)
            records, self._backlog = [], True
        if self.stopping.is_set() or self.problem is not None:
            # a claim that raced with shutdown, or with a hand-back: straight back to the queue
            for r in records:
                await self._write("release", self.store.release, _claim_of(r, self.id))
            return []
        return records

    async def _run_one(self, record: JobRecord) -> None:
        try:
            await self.execute(record)
        except Exception:  # never leave a task exception unretrieved
            log.exception("job %s: worker error", record.id)
        finally:
            if self._backlog:  # a slot is free and the last claim filled every slot: look for more at once
                self._wake.set()

    async def _idle(self) -> None:
        """Wait for the poll interval, a wake-up (job queued, slot freed) or shutdown."""
        waits = [asyncio.create_task(self._wake.wait()), asyncio.create_task(self.stopping.wait())]
        await asyncio.wait(waits, timeout=self.settings.poll_interval, return_when=asyncio.FIRST_COMPLETED)
        for w in waits:
            w.cancel()

    async def _write(self, what: str, fn: Callable[..., T], *args: Any) -> T | None:
        """A write that must land: retried until the database answers, or the shutdown deadline."""
        delay = 0.25
        loop = asyncio.get_running_loop()
        while True:
            try:
                return await asyncio.to_thread(fn, *args)
            except JobStoreUnavailable as exc:
                if self._deadline is not None and loop.time() >= self._deadline:
                    log.error("%s: database still unavailable at the shutdown deadline (%s); giving up", what, exc)
                    return None
                log.warning("%s: %s; retrying in %.1fs", what, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    # -- one job ----------------------------------------------------------------------------------
    async def execute(self, record: JobRecord) -> None:
        current_job.set(record.id)  # every log line of this job's task carries its id
        log.info("job %s: claimed by %s (attempt %d)", record.id, self.id, record.attempts)
        claim = _claim_of(record, self.id)
        run = self.runner.prepare(record)
        task = asyncio.create_task(self.runner.run(run), name=f"job-{record.id}")
        try:
            await self._monitor(claim, run, task)
        finally:  # whatever happened to the monitor, the job task is stopped and its outcome retrieved
            if not task.done():
                await _cancel(task)
            elif not task.cancelled():
                task.exception()

    async def _monitor(self, claim: Claim, run: JobRun, task: asyncio.Task[None]) -> None:
        """Flush progress on a tick or a state change (changes coalesced over ``PROGRESS_COALESCE``).

        A job that is over is not flushed: ``_conclude`` writes every target with the outcome in
        one transaction (a small job costs its claim and that write, #17).
        """
        record = run.record
        cancelled = False
        loop = asyncio.get_running_loop()
        flushed = loop.time()  # the claim itself was a write
        while True:
            stopper = asyncio.create_task(self.stopping.wait())
            waiter = asyncio.create_task(run.changed.wait())
            await asyncio.wait(
                {task, waiter, stopper},
                timeout=min(1.0, self.settings.heartbeat_interval),
                return_when=asyncio.FIRST_COMPLETED,
            )
            waiter.cancel()
            pause = flushed + PROGRESS_COALESCE - loop.time()
            if pause > 0 and not task.done() and not stopper.done():  # let more changes join this write
                # ...but a job that ends meanwhile is concluded at once, not after the pause (#17: up to
                # 0.25 s of a small job's wall)
                await asyncio.wait({task, stopper}, timeout=pause, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if task.done():
                break
            run.changed.clear()
            owned, cancel = await self._flush(claim, run)
            flushed = loop.time()
            if not owned:
                log.warning("job %s: claimed by another worker meanwhile; stopping here without writing", record.id)
                await _cancel(task)
                return
            if cancel and not task.done():
                log.info("job %s: cancelled by user", record.id)
                await _cancel(task)
                cancelled = True
                break
            if self.stopping.is_set() and not task.done():
                await _cancel(task)
                ok = await asyncio.shield(self._write(f"job {record.id}", self.store.release, claim, _updates(run)))
                if not (ok and await self._cancelled_meanwhile(run)):
                    log.info("job %s: interrupted by shutdown; back in the queue", record.id)
                return
        await asyncio.shield(self._conclude(claim, run, task, cancelled))

    async def _cancelled_meanwhile(self, run: JobRun) -> bool:
        """Whether the job just put back in the queue ended CANCELLED instead (a cancel asked since the last
        flush: the store ends it there): then it is said, counted and notified here, as any job's end."""
        try:
            record = await asyncio.to_thread(self.store.get, run.record.id)
        except JobError as exc:
            log.warning("job %s: back in the queue, or cancelled as asked: cannot tell (%s)", run.record.id, exc)
            return False
        if record is None or record.state is not JobState.CANCELLED:
            return False
        log.info("job %s: CANCELLED (cancelled by user)", run.record.id)
        if self.events is not None:
            self.events.job_ended(run, JobState.CANCELLED.value, "cancelled by user")
        return True

    async def _flush(self, claim: Claim, run: JobRun) -> tuple[bool, bool]:
        changed = [u for u in _updates(run) if run.saved.get(u.idx) != u]  # unchanged rows are not written again
        try:
            held = await asyncio.shield(asyncio.to_thread(self.store.save_progress, claim, changed, run.source_digest))
        except JobStoreUnavailable as exc:  # keep copying: the outcome is written once the database is back
            log.warning("job %s: could not save progress (%s)", claim.job_id, exc)
            return True, False
        run.saved.update((u.idx, u) for u in changed)
        return held

    async def _conclude(self, claim: Claim, run: JobRun, task: asyncio.Task[None], cancelled: bool) -> None:
        what = f"job {claim.job_id}"
        exc = None if cancelled else task.exception()
        if isinstance(exc, CredentialsUnreadable):
            # another replica has the right key: hand the job over, and stop taking jobs here
            self.problem = f"cannot decrypt stored credentials ({exc}); check REGCAST_SECRET_KEY"
            log.error("worker %s: %s; job %s handed back, this worker takes no more jobs", self.id, exc, claim.job_id)
            await self._write(what, self.store.release, claim)
            return
        error: str | None = None
        if cancelled:
            state, error = JobState.CANCELLED, "cancelled by user"
        elif exc is not None:
            if not isinstance(exc, RegcastError):
                log.error("job %s: unexpected error", claim.job_id, exc_info=exc)
            state = JobState.FAILED
            error = f"Image not found ({describe_job_error(exc)})" if isinstance(exc, NotFound) else None
            error = error or describe_job_error(exc)
        elif all(st.state.value in DONE_STATES for st in run.statuses.values()):
            state = JobState.FINISHED
        elif _retryable(run) and run.record.attempts < self.settings.max_attempts:
            delay = self.settings.retry_backoff * 2 ** (run.record.attempts - 1)
            ok = await self._write(what, self.store.retry_later, claim, delay, _updates(run, requeue=True))
            if not (ok and await self._cancelled_meanwhile(run)):
                said = f"retrying failed target(s) in {delay:.1f}s" if ok else "claim lost"
                log.info("job %s: %s", claim.job_id, said)
            return
        else:
            state, error = JobState.FAILED, failure_summary(run)
        ok = await self._write(what, self.store.finish, claim, state, error, _updates(run), run.source_digest)
        outcome = f"{state.value}{f' ({error})' if error else ''}" if ok else "claimed by another worker meanwhile"
        log.info("job %s: %s", claim.job_id, outcome, extra={"error": error})
        if ok and self.events is not None:
            self.events.job_ended(run, state.value, error)


def _claim_of(record: JobRecord, worker_id: str) -> Claim:
    return Claim(record.id, worker_id, record.claim_generation)


def _retryable(run: JobRun) -> bool:
    return any(st.state is TargetState.FAILED and st.retryable for st in run.statuses.values())


def _updates(run: JobRun, requeue: bool = False) -> list[TargetUpdate]:
    """Target rows to write; on ``requeue`` retryable failures go back to PENDING (error kept)."""
    out = []
    for i, st in run.statuses.items():
        back = requeue and st.state is TargetState.FAILED and st.retryable
        out.append(TargetUpdate.of(i, st, TargetState.PENDING if back else None))
    return out


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
