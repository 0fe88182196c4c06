"""Mirror sets and their runs (``regcast.mirrors.models``).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    op.create_table(
        "mirrors",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("document", sa.JSON, nullable=False),
        sa.Column("sealed", sa.LargeBinary, nullable=False),
        sa.Column("schedule", sa.String(200)),
        sa.Column("interval_seconds", sa.Float),
        sa.Column("active_run", sa.String(36)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "mirror_runs",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("mirror", sa.String(100), nullable=False),
        sa.Column("run_key", sa.String(300), nullable=False, unique=True),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True)),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("planned_at", sa.DateTime(timezone=True)),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("images_selected", sa.Integer, nullable=False, server_default="0"),
        sa.Column("images_up_to_date", sa.Integer, nullable=False, server_default="0"),
        sa.Column("images_skipped", sa.Integer, nullable=False, server_default="0"),
        sa.Column("images_failed", sa.Integer, nullable=False, server_default="0"),
        sa.Column("owner", sa.String(100)),
        sa.Column("error", sa.Text),
    )
    op.create_index("ix_mirror_runs_mirror_created", "mirror_runs", ["mirror", "created_at"])
    op.create_table(
        "mirror_run_jobs",
        sa.Column("run_id", sa.String(36), primary_key=True),
        sa.Column("job_id", sa.String(36), primary_key=True),
        sa.Column("tag", sa.Text, nullable=False),
    )
    op.create_index("ix_mirror_run_jobs_job", "mirror_run_jobs", ["job_id"])


def downgrade() -> None:
    op.drop_table("mirror_run_jobs")
    op.drop_table("mirror_runs")
    op.drop_table("mirrors")
