"""Workers table (liveness by heartbeat), claim generation fencing, retryable targets.

Revision ID: 0007_workers
Revises: 0006_target_detach
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_workers"
down_revision = "0006_target_detach"


def upgrade() -> None:
    op.create_table(
        "workers",
        sa.Column("id", sa.String(100), primary_key=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
    )
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("claim_generation", sa.Integer, nullable=False, server_default="0"))
        batch.create_index("ix_jobs_worker", ["worker_id"])
    with op.batch_alter_table("job_targets") as batch:
        batch.add_column(sa.Column("retryable", sa.Boolean, nullable=False, server_default=sa.true()))


def downgrade() -> None:
    with op.batch_alter_table("job_targets") as batch:
        batch.drop_column("retryable")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_worker")
        batch.drop_column("claim_generation")
    op.drop_table("workers")
