"""Per-target referrers: how many were copied, and which were left out (and why).

Revision ID: 0005_target_referrers
Revises: 0004_notifications
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_target_referrers"
down_revision = "0004_notifications"


def upgrade() -> None:
    with op.batch_alter_table("job_targets") as batch:
        batch.add_column(sa.Column("referrers", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("referrers_left_out", sa.JSON))


def downgrade() -> None:
    with op.batch_alter_table("job_targets") as batch:
        batch.drop_column("referrers_left_out")
        batch.drop_column("referrers")
