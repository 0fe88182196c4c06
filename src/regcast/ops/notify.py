"""Job notifications: one signed JSON summary POSTed per event, retried with backoff.

Signature (the header ``X-Regcast-Signature: t=<unix seconds>,v1=<hex>``)::

    v1 = HMAC-SHA256(key=secret, msg=f"{t}.".encode() + raw_body).hexdigest()

A receiver recomputes it over the raw body, compares in constant time and refuses a ``t`` far from
its clock (replays). Hooks come from the job (``notify`` in its request, URL and secret sealed with
its credentials) and from ``REGCAST_NOTIFY_URL`` (every job). The URL passes the same outbound
guards as registries; redirects are not followed. Every attempt is written to the job's status.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from regcast import USER_AGENT
from regcast._exceptions import InvalidInput, RegcastError
from regcast.api.status import in_sync
from regcast.config import Settings
from regcast.jobs.store import JobRecord, JobStore
from regcast.registry._transport import read_capped
from regcast.registry.redact import origin_only, printable, redact_text, redact_urls
from regcast.registry.tls import aiohttp, trust

if TYPE_CHECKING:
    from regcast.mirrors.document import MirrorDocument
    from regcast.mirrors.records import RunRecord

log = logging.getLogger("regcast.notify")
Record = Callable[[dict[str, Any]], Awaitable[None]]
SIGNATURE_HEADER = "X-Regcast-Signature"
EVENT_HEADER = "X-Regcast-Event"
DELIVERY_HEADER = "X-Regcast-Delivery"
EVENT_OF_STATE = {"FINISHED": "finished", "FAILED": "failed", "CANCELLED": "cancelled"}


@dataclass(frozen=True)
class Hook:
    url: str
    events: tuple[str, ...]
    secret: str | None
    origin: str  # "job" or "service"

    @property
    def shown(self) -> str:
        """The URL as shown in a status: scheme and host only (the path of a chat hook is its secret)."""
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}/..."


def sign(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(secret: str, header: str, body: bytes, tolerance: float = 300.0, now: float | None = None) -> bool:
    """The receiver's check (also what the docs show): right MAC, timestamp within ``tolerance``."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    t, given = parts.get("t", ""), parts.get("v1", "")
    if not t.isdigit() or abs((now or time.time()) - int(t)) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, t, body), f"t={t},v1={given}")


def hooks_for(job_notify: dict[str, Any] | None, settings: Settings) -> list[Hook]:
    hooks = []
    if job_notify and job_notify.get("url"):
        events = tuple(job_notify.get("events") or EVENT_OF_STATE.values())
        hooks.append(Hook(job_notify["url"], events, job_notify.get("secret"), "job"))
    if settings.notify_url:
        events = tuple(e.strip() for e in settings.notify_events.split(",") if e.strip())
        hooks.append(Hook(settings.notify_url, events, settings.notify_secret, "service"))
    return hooks


def summary(job: JobRecord, event: str) -> dict[str, Any]:
    """What a receiver needs to act: the job, its source digest, each target's state and reason."""
    src = job.request.get("source", {})
    targets = [
        {
            "endpoint": t.endpoint,
            "image": t.repository,
            "ref": t.ref,
            "state": t.state,
            "reason": t.error if t.state == "FAILED" else t.reason,
        }
        for t in job.targets
    ]
    return {
        "event": event,
        "id": job.id,
        "state": job.state,
        "source": {"endpoint": src.get("endpoint"), "image": src.get("image"), "ref": src.get("ref")},
        "source_digest": job.source_digest,
        "in_sync": in_sync(job),
        "error": job.error,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        "targets": targets,
    }


def check_url(url: str, settings: Settings) -> None:
    """The outbound policy of registries (allow-list, no link-local/metadata or blocked address)."""
    why = settings.outbound_policy().problem(url)
    if why:
        raise InvalidInput(f"notify.url: {why}")


class Notifier:
    """Delivers a job's notifications in the background; ``close`` waits for what is in flight."""

    def __init__(self, store: JobStore, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self.tasks: set[asyncio.Task[None]] = set()
        self.on_delivery: Any = None  # metrics hook: called with "delivered" / "failed"

    def job_ended_later(self, job_id: str, job_notify: dict[str, Any] | None) -> None:
        """Deliver the job's end event in the background (the job is read back from the store first)."""
        if not hooks_for(job_notify, self.settings):
            return
        task = asyncio.create_task(self._ended(job_id, job_notify), name=f"notify-{job_id}")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _ended(self, job_id: str, job_notify: dict[str, Any] | None) -> None:
        job = await asyncio.to_thread(self.store.get, job_id)
        event = EVENT_OF_STATE.get(job.state) if job else None
        if job is None or event is None:
            return
        hooks = [h for h in hooks_for(job_notify, self.settings) if event in h.events]
        if hooks:
            await self.deliver(job, event, hooks)

    async def deliver(self, job: JobRecord, event: str, hooks: list[Hook]) -> None:
        attempts: list[dict[str, Any]] = list(job.notifications)

        async def record(attempt: dict[str, Any]) -> None:
            attempts.append(attempt)
            try:
                await asyncio.to_thread(self.store.save_notifications, job.id, list(attempts))
            except Exception as exc:  # the database is down: delivery still goes on
                log.warning("job %s: could not record a notification attempt (%s)", job.id, type(exc).__name__)

        await self._send(f"job {job.id}", event, hooks, json.dumps(summary(job, event)).encode(), record)

    def run_ended(self, run: RunRecord, doc: MirrorDocument) -> None:
        """A mirror run ended: POST its summary to the mirror's ``notify`` hook (attempts are logged)."""
        from regcast.mirrors.models import RunState

        mirror = doc.mirrors[0]
        finished = run.state is RunState.FINISHED
        event = "finished" if finished else "failed"
        if mirror.notify is None or event not in mirror.notify.events:
            return
        hook = Hook(mirror.notify.url, tuple(mirror.notify.events), mirror.notify.secret, "mirror")
        public = run.public()
        body = {"event": event, "mirror": mirror.name, "in_sync": finished and not public["failed"]}
        payload = json.dumps({**body, "run": public}).encode()
        task = asyncio.create_task(self._send(f"mirror {mirror.name} run {run.id}", event, [hook], payload, None))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _send(self, what: str, event: str, hooks: list[Hook], body: bytes, record: Record | None) -> None:
        timeout = aiohttp.ClientTimeout(total=self.settings.notify_timeout)
        policy = self.settings.outbound_policy()
        ssl_ctx = trust(self.settings.ca_bundle)
        connector = aiohttp.TCPConnector(ssl=ssl_ctx, socket_factory=policy.socket_factory)  # the address used
        async with aiohttp.ClientSession(
            connector=connector,
            timeout=timeout,
            headers={"User-Agent": USER_AGENT},
            middlewares=(policy.middleware("registry"),),  # every request's URL
        ) as session:
            await asyncio.gather(*(self._one(session, what, event, h, body, record) for h in hooks))

    async def _one(
        self, session: aiohttp.ClientSession, what: str, event: str, hook: Hook, body: bytes, record: Record | None
    ) -> None:
        delivery = str(uuid.uuid4())
        for n in range(1, self.settings.notify_attempts + 1):
            status, error = await self._post(session, hook, event, delivery, body)
            ok = status is not None and 200 <= status < 300
            if record is not None:
                await record(
                    {
                        "url": hook.shown,
                        "origin": hook.origin,
                        "event": event,
                        "attempt": n,
                        "at": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
                        "status": status,
                        "error": error,
                        "delivered": ok,
                    }
                )
            if ok:
                log.info("%s: notification %s delivered to %s", what, event, hook.shown)
                self._count("delivered")
                return
            final = error is not None and error.startswith("refused:")
            if final or n == self.settings.notify_attempts:
                break
            delay = min(self.settings.notify_backoff * 2 ** (n - 1), 300.0)
            log.warning(
                "%s: notification to %s failed (%s); retry %d in %.1fs",
                what,
                hook.shown,
                error or status,
                n,
                delay,
                extra={"error": error or f"HTTP {status}"},
            )
            await asyncio.sleep(delay)
        log.warning("%s: notification %s to %s not delivered", what, event, hook.shown)
        self._count("failed")

    async def _post(
        self, session: aiohttp.ClientSession, hook: Hook, event: str, delivery: str, body: bytes
    ) -> tuple[int | None, str | None]:
        try:
            check_url(hook.url, self.settings)
        except InvalidInput as exc:
            return None, f"refused: {exc}"
        headers = {"Content-Type": "application/json", EVENT_HEADER: event, DELIVERY_HEADER: delivery}
        if hook.secret:
            headers[SIGNATURE_HEADER] = sign(hook.secret, str(int(time.time())), body)
        try:
            async with session.post(hook.url, data=body, headers=headers, allow_redirects=False) as resp:
                await read_capped(resp, 64 * 1024)  # a receiver's answer is never kept, nor read unbounded
                return resp.status, None if resp.status < 300 else f"HTTP {resp.status}"
        except (aiohttp.ClientError, TimeoutError, OSError, RegcastError) as exc:
            # the hook's URL as the library wrote it (yarl's form: lower-case host, %7e as ~) is not the URL given,
            # so every URL in the text is cut to its origin; a ClientResponseError's str() ends with one
            said = exc.message if isinstance(exc, aiohttp.ClientResponseError) else str(exc)
            text = redact_urls(redact_text(f"{type(exc).__name__}: {said}", (hook.url, hook.secret or "")), origin_only)
            return None, printable(text, 300)

    def _count(self, outcome: str) -> None:
        if self.on_delivery is not None:
            self.on_delivery(outcome)

    async def close(self, grace: float = 10.0) -> None:
        """Deliveries under way get ``grace`` seconds in all, those started meanwhile too (a job read back by
        ``ended_elsewhere`` is notified after the close began); what is left then is cancelled."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self.tasks and (left := deadline - loop.time()) > 0:
            await asyncio.wait(set(self.tasks), timeout=left)
        for t in list(self.tasks):
            t.cancel()
