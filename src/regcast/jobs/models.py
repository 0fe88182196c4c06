"""Tables of the job store (SQLAlchemy Core). Alembic migrations in ``migrations/`` create them.

The two must describe the same schema, server defaults included: ``tests/unit/test_migrations.py``
upgrades an empty database and compares it with this module.

``jobs.request`` holds the request without any credential; credentials live only in
``jobs.secrets``, encrypted (see ``secrets.py``). ``workers`` holds one row per live worker
process and its heartbeat (database clock); see ``docs/decisions.md`` (liveness).
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
    false,
    true,
)

from regcast.transfer.progress import TargetState

metadata = MetaData()


class JobState(enum.StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    FINISHED = "FINISHED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


FINAL_STATES = (JobState.FINISHED, JobState.FAILED, JobState.CANCELLED)
# A target in one of these is settled; a job that ends settles its others (FAILED or CANCELLED).
FINAL_TARGET_STATES = tuple(
    s.value for s in (TargetState.FINISHED, TargetState.SKIPPED, TargetState.FAILED, TargetState.CANCELLED)
)

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
    Column("attempts", Integer, nullable=False, server_default="0"),  # claims that counted
    Column("worker_id", String(100)),
    Column("heartbeat_at", DateTime(timezone=True)),
    Column("not_before", DateTime(timezone=True)),  # not claimable before (job-level retry backoff)
    Column("cancel_requested", Boolean, nullable=False, server_default=false()),
    Column("error", Text),
    # +1 on every claim; a worker's writes are fenced by the generation it claimed
    Column("claim_generation", Integer, nullable=False, server_default="0"),
    Column("notifications", JSON),  # delivery attempts of the job's notifications (ops/notify.py)
)
Index("ix_jobs_state_created", jobs.c.state, jobs.c.created_at)
Index("ix_jobs_created", jobs.c.created_at)
Index("ix_jobs_worker", jobs.c.worker_id)

job_targets = Table(
    "job_targets",
    metadata,
    Column("job_id", String(36), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    Column("idx", Integer, primary_key=True),
    Column("endpoint", Text, nullable=False),
    Column("repository", Text, nullable=False),
    Column("ref", Text, nullable=False),
    Column("state", String(16), nullable=False),
    Column("bytes_done", BigInteger, nullable=False, server_default="0"),
    Column("bytes_total", BigInteger, nullable=False, server_default="0"),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("error", Text),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("retries", Integer, nullable=False, server_default="0"),
    Column("reason", String(32)),  # why SKIPPED: up-to-date / tag-differs
    Column("referrers", Integer, nullable=False, server_default="0"),  # referrers copied to this target
    Column("referrers_left_out", JSON),  # lines: which referrer was not copied, and why
    Column("finished_at", DateTime(timezone=True)),  # when this target ended: its own time (issue 19)
    Column("blobs_detached", Integer, nullable=False, server_default="0"),  # blobs it finished from its own read
    Column("detached_reason", Text),  # why it was detached from the shared stream
    Column("waiting", Text),  # a registry's rate limit holds it back: why, until when (revision 0008)
    Column("waiting_until", DateTime(timezone=True)),
    # a FAILED target worth another job-level attempt (a network fault, not bad credentials)
    Column("retryable", Boolean, nullable=False, server_default=true()),
    # this job's tag check passed for a push here: a tag found later at the source digest is its own (0009)
    Column("tag_pushed", Boolean, nullable=False, server_default=false()),
)

workers = Table(
    "workers",
    metadata,
    Column("id", String(100), primary_key=True),
    Column("host", String(255), nullable=False),  # hostname + boot id: "this machine"
    Column("pid", Integer, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("heartbeat_at", DateTime(timezone=True), nullable=False),  # the database's clock
)
