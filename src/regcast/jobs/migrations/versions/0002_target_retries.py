"""Per-target retry counter (requests retried and blobs re-sent).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    with op.batch_alter_table("job_targets") as batch:
        batch.add_column(sa.Column("retries", sa.Integer, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("job_targets") as batch:
        batch.drop_column("retries")
