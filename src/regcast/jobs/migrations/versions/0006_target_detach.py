"""Per-target completion and detaching (issue 19): when each target ended, and whether it lagged.

Revision ID: 0006_target_detach
Revises: 0005_target_referrers
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_target_detach"
down_revision = "0005_target_referrers"


def upgrade() -> None:
    with op.batch_alter_table("job_targets") as batch:
        batch.add_column(sa.Column("finished_at", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("blobs_detached", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("detached_reason", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("job_targets") as batch:
        batch.drop_column("detached_reason")
        batch.drop_column("blobs_detached")
        batch.drop_column("finished_at")
