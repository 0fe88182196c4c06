"""Tables of the job store (SQLAlchemy Core). Alembic migrations in ``migrations/`` create them.

``jobs.request`` holds the request without any credential; credentials live only in
``jobs.secrets``, encrypted (see ``secrets.py``).
"""

from __future__ import annotations

import enum

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()


class JobState(enum.StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    FINISHED = "FINISHED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


FINAL_STATES = (JobState.FINISHED, JobState.FAILED, JobState.CANCELLED)
# A target in one of these is settled; a job that ends settles its others (FAILED or CANCELLED).
FINAL_TARGET_STATES = ("FINISHED", "SKIPPED", "FAILED", "CANCELLED")

jobs = Table(
    "jobs",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("state", String(16), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),  # the seed's: set at submission
    Column("running_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("request", JSON, nullable=False),
    Column("secrets", LargeBinary),
    Column("source_digest", String(200)),
    Column("attempts", Integer, nullable=False, default=0),
    Column("worker_id", String(100)),
    Column("heartbeat_at", DateTime(timezone=True)),
    Column("not_before", DateTime(timezone=True)),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("error", Text),
    Column("notifications", JSON),  # delivery attempts of the job's notifications (ops/notify.py)
)
Index("ix_jobs_state_created", jobs.c.state, jobs.c.created_at)
Index("ix_jobs_created", jobs.c.created_at)

job_targets = Table(
    "job_targets",
    metadata,
    Column("job_id", String(36), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    Column("idx", Integer, primary_key=True),
    Column("endpoint", Text, nullable=False),
    Column("repository", Text, nullable=False),
    Column("ref", Text, nullable=False),
    Column("state", String(16), nullable=False),
    Column("bytes_done", BigInteger, nullable=False, default=0),
    Column("bytes_total", BigInteger, nullable=False, default=0),
    Column("attempts", Integer, nullable=False, default=0),
    Column("error", Text),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("retries", Integer, nullable=False, default=0),
    Column("reason", String(32)),  # why SKIPPED: up-to-date / tag-differs
    Column("referrers", Integer, nullable=False, default=0),  # referrers copied to this target
    Column("referrers_left_out", JSON),  # lines: which referrer was not copied, and why
    Column("finished_at", DateTime(timezone=True)),  # when this target ended: its own time (issue 19)
    Column("blobs_detached", Integer, nullable=False, default=0),  # blobs it finished from its own read
    Column("detached_reason", Text),  # why it was detached from the shared stream
)
