"""Job status bodies: the seed's fields first, in the seed's order, then regcast's additions."""

from __future__ import annotations

import datetime as dt
from typing import Any

from regcast.jobs.store import JobRecord, TargetRecord
from regcast.transfer.engine import SKIP_UP_TO_DATE

# The store's PENDING is the contract's QUEUED (a target not started yet).
_SHOWN_STATE = {"PENDING": "QUEUED"}


def iso(value: dt.datetime | None) -> str | None:
    """The seed's format: ``2026-11-28T14:17:07.880471+00:00``."""
    return value.astimezone(dt.UTC).isoformat(timespec="microseconds") if value else None


def shown_state(t: TargetRecord) -> str:
    """The contract's name of a target's state (the store's PENDING is QUEUED)."""
    return _SHOWN_STATE.get(t.state, t.state)


def holds_source(t: TargetRecord) -> bool:
    """The target has the source digest under its tag: copied, or skipped because it already had it."""
    return t.state == "FINISHED" or (t.state == "SKIPPED" and t.reason == SKIP_UP_TO_DATE)


def in_sync(job: JobRecord) -> bool:
    """What a CI script can trust: the job finished and every target now holds the source digest (a job
    with no targets, as the seed accepted, has none that does not)."""
    return job.state == "FINISHED" and all(holds_source(t) for t in job.targets)


def seed_lists(job: JobRecord) -> dict[str, list[str]]:
    """``finished_endpoints`` and ``skipped_clusters``: a target named twice is listed once across both, in
    the list of the first that ended so, as the seed listed them (it passed over a target whose endpoint it
    had listed: its targets had no ``image``/``ref``, so one endpoint was one target). Targets that differ in
    those extensions are listed each, as written."""
    lists: dict[str, list[str]] = {"FINISHED": [], "SKIPPED": []}
    listed: set[tuple[str, str, str]] = set()
    for t in job.targets:
        key = (t.endpoint, t.repository, t.ref)
        if t.state in lists and key not in listed:
            listed.add(key)
            lists[t.state].append(t.endpoint)
    return lists


def _rate(job: JobRecord, t: TargetRecord) -> int | None:
    """This target's own average rate since the job started running (to its own end, if it ended)."""
    end = t.finished_at or (job.updated_at if t.state == "RUNNING" else None)
    if job.running_at is None or end is None or not t.bytes_done:
        return None
    seconds = (end - job.running_at).total_seconds()
    return int(t.bytes_done / seconds) if seconds > 0 else None


def job_status(job: JobRecord) -> dict[str, Any]:
    src = job.request.get("source", {})
    now = dt.datetime.now(dt.UTC)
    targets_in = job.request.get("targets", [])
    targets = []
    for t in job.targets:
        spec = targets_in[t.idx] if t.idx < len(targets_in) else {}
        targets.append(
            {
                "endpoint": t.endpoint,
                "image": spec.get("image") or src.get("image"),
                "ref": spec.get("ref") or src.get("ref"),
                "overwrite": spec.get("overwrite", False),
                "state": shown_state(t),
                "reason": t.reason if t.state == "SKIPPED" else None,
                "bytes_done": t.bytes_done,
                "bytes_total": t.bytes_total,
                "attempts": t.attempts,
                "retries": t.retries,
                "referrers": t.referrers,  # signatures, attestations, SBOMs copied to this target
                "referrers_left_out": t.referrers_left_out,
                "error": t.error,
                "finished_at": iso(t.finished_at),  # its own end: a fast target is done before a slow one
                "bytes_per_second": _rate(job, t),
                "detached": {"blobs": t.blobs_detached, "reason": t.detached_reason} if t.blobs_detached else None,
                "waiting": t.waiting_now(now),  # a registry's rate limit holds it back: until when, why
            }
        )
    lists = seed_lists(job)
    return {
        "value": job.state,
        "started_at": iso(job.started_at),
        "finished_endpoints": lists["FINISHED"],
        "skipped_clusters": lists["SKIPPED"],
        "finished_at": iso(job.finished_at),
        "in_sync": in_sync(job),
        "id": job.id,
        "source": {"endpoint": src.get("endpoint"), "image": src.get("image"), "ref": src.get("ref")},
        "source_digest": job.source_digest,
        "platforms": job.request.get("platforms"),
        "referrers": job.request.get("referrers", True),
        "referrer_types": job.request.get("referrer_types"),
        "spool": job.request.get("spool"),  # as asked; null: the process's default (REGCAST_SPOOL_DIR set)
        "attempts": job.attempts,
        "cancel_requested": job.cancel_requested,
        "error": job.error,
        "running_at": iso(job.running_at),
        "updated_at": iso(job.updated_at),
        "targets": targets,
        "notifications": job.notifications,
        **({"mirror": job.request["mirror"]} if "mirror" in job.request else {}),  # the mirror run it belongs to
    }
