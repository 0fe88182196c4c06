"""Per-target reason of a SKIPPED state (``up-to-date`` or ``tag-differs``).

Revision ID: 0003_target_reason
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_target_reason"
down_revision = "0003"  # after the mirror tables: one linear chain


def upgrade() -> None:
    with op.batch_alter_table("job_targets") as batch:
        batch.add_column(sa.Column("reason", sa.String(32)))


def downgrade() -> None:
    with op.batch_alter_table("job_targets") as batch:
        batch.drop_column("reason")
