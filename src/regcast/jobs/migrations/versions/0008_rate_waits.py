"""Rate-limit waits shown (a copy or a mirror run held back by a registry's 429 / RateLimit gate):
why and until when, per target and per run (its planning).

Revision ID: 0008_rate_waits
Revises: 0007_workers
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_rate_waits"
down_revision = "0007_workers"


def upgrade() -> None:
    for table in ("job_targets", "mirror_runs"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("waiting", sa.Text))
            batch.add_column(sa.Column("waiting_until", sa.DateTime(timezone=True)))


def downgrade() -> None:
    for table in ("mirror_runs", "job_targets"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("waiting_until")
            batch.drop_column("waiting")
