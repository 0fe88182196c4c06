"""Tables of stored mirror sets and their runs (SQLAlchemy Core); revision 0003 creates them.

``mirrors.document`` is the public form (no password); the resolved document with its
credentials lives only in ``mirrors.sealed``, encrypted like job credentials. ``active_run``
is the lease that keeps two runs of one mirror from overlapping; ``mirror_runs.run_key``
(mirror + due time) is unique, so a due time fires once however many replicas look at it.
"""

from __future__ import annotations

import enum

from sqlalchemy import JSON, Column, DateTime, Float, Index, Integer, LargeBinary, MetaData, String, Table, Text

metadata = MetaData()


class RunState(enum.StrEnum):
    PLANNING = "PLANNING"  # selecting tags, HEADs; jobs not yet queued
    RUNNING = "RUNNING"  # its jobs are queued or running
    FINISHED = "FINISHED"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"  # due while the previous run was still going


class Trigger(enum.StrEnum):
    """What started a run."""

    SCHEDULE = "schedule"  # a due time of its cron or interval
    MANUAL = "manual"  # POST /api/mirrors/<name>/run
    PUSH = "push"  # a registry's push notification (triggers/)


mirrors = Table(
    "mirrors",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("document", JSON, nullable=False),
    Column("sealed", LargeBinary, nullable=False),
    Column("schedule", String(200)),
    Column("interval_seconds", Float),
    Column("active_run", String(36)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

mirror_runs = Table(
    "mirror_runs",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("mirror", String(100), nullable=False),
    Column("run_key", String(300), nullable=False, unique=True),
    Column("trigger", String(16), nullable=False),
    Column("due_at", DateTime(timezone=True)),
    Column("state", String(16), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("planned_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    Column("images_selected", Integer, nullable=False, server_default="0"),
    Column("images_up_to_date", Integer, nullable=False, server_default="0"),
    Column("images_skipped", Integer, nullable=False, server_default="0"),
    Column("images_failed", Integer, nullable=False, server_default="0"),
    Column("owner", String(100)),
    Column("error", Text),
    Column("waiting", Text),  # its planner waits on a registry's rate limit: why, until when (revision 0008)
    Column("waiting_until", DateTime(timezone=True)),
)
Index("ix_mirror_runs_mirror_created", mirror_runs.c.mirror, mirror_runs.c.created_at)

mirror_run_jobs = Table(
    "mirror_run_jobs",
    metadata,
    Column("run_id", String(36), primary_key=True),
    Column("job_id", String(36), primary_key=True),
    Column("tag", Text, nullable=False),
)
Index("ix_mirror_run_jobs_job", mirror_run_jobs.c.job_id)
