"""Whether a job's tag check passed for a push at a target: stored, so an attempt after a crash that finds
the tag at the source digest knows it is the job's own push (FINISHED, not SKIPPED by the seed's rule).

Revision ID: 0009_target_tag_pushed
Revises: 0008_rate_waits
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_target_tag_pushed"
down_revision = "0008_rate_waits"


def upgrade() -> None:
    with op.batch_alter_table("job_targets") as batch:
        batch.add_column(sa.Column("tag_pushed", sa.Boolean, nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("job_targets") as batch:
        batch.drop_column("tag_pushed")
