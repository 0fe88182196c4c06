"""Compare a migrated database with ``jobs/models.py`` (procrastinate's migration test)."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine

from regcast.jobs.models import metadata
from regcast.mirrors.models import metadata as mirror_metadata


def schema_diff(engine: Engine) -> list[Any]:
    """Every difference Alembic's autogenerate sees, server defaults and types included."""
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_server_default": True, "compare_type": True})
        return list(compare_metadata(ctx, [metadata, mirror_metadata]))  # type: ignore[arg-type]
