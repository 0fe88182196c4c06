"""Job status bodies: the seed's fields first, in the seed's order, then regcast's additions."""

from __future__ import annotations

import datetime as dt
from typing import Any

from regcast.jobs.store import JobRecord


def iso(value: dt.datetime | None) -> str | None:
    """The seed's format: ``2026-11-28T14:17:07.880471+00:00``."""
    return value.astimezone(dt.UTC).isoformat(timespec="microseconds") if value else None


def job_status(job: JobRecord) -> dict[str, Any]:
    src = job.request.get("source", {})
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
                "state": t.state,
                "bytes_done": t.bytes_done,
                "bytes_total": t.bytes_total,
                "attempts": t.attempts,
                "retries": t.retries,
                "error": t.error,
            }
        )
    return {
        "value": job.state,
        "started_at": iso(job.started_at),
        "finished_endpoints": [t.endpoint for t in job.targets if t.state == "FINISHED"],
        "skipped_clusters": [t.endpoint for t in job.targets if t.state == "SKIPPED"],
        "finished_at": iso(job.finished_at),
        "id": job.id,
        "source": {"endpoint": src.get("endpoint"), "image": src.get("image"), "ref": src.get("ref")},
        "source_digest": job.source_digest,
        "platforms": job.request.get("platforms"),
        "attempts": job.attempts,
        "cancel_requested": job.cancel_requested,
        "error": job.error,
        "running_at": iso(job.running_at),
        "updated_at": iso(job.updated_at),
        "targets": targets,
    }
