"""What every part of ``JobStore`` shares: the engine, the one ``Database.tx`` boundary, the clock.

``JobStore`` (``store.py``) is this plus its parts, each a mixin on it: claims and fenced
writes (``_claims.py``), worker rows and the reaper (``_workers.py``), operators' queries
(``store_ops.py``). Every transaction of them goes through ``_tx``, so SQLAlchemy errors leave
only as ``JobStoreUnavailable`` / ``StoreConflict`` / ``JobError`` (``_db.py``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from regcast.jobs._db import Clock, Database, Watchdog, database_label, make_engine
from regcast.jobs._statements import Statements

CHANNEL = "regcast_jobs"  # PostgreSQL NOTIFY channel: a job became claimable


class StoreCore:
    def __init__(self, url: str, *, timeout: float = 5.0) -> None:
        self.url = url
        self.label = database_label(url)  # the URL as messages name it (no password)
        self.timeout = timeout
        self._watchdog = Watchdog()
        self.engine = make_engine(url, timeout, self._watchdog)
        self.db = Database(self.engine, self._watchdog, timeout)  # shared with the mirror store
        self.postgres = self.engine.dialect.name == "postgresql"
        self.clock = Clock(self.postgres)
        self.sql = Statements.build(self.postgres)  # the job path's statements, built once

    def close(self) -> None:
        self.engine.dispose()
        self._watchdog.close()

    @contextlib.contextmanager
    def _tx(self, timeout: float | None = None) -> Iterator[Connection]:
        """One transaction under the deadline; commits on success."""
        with self.db.tx(timeout) as conn:
            yield conn

    def _notify(self, conn: Connection) -> None:
        """Wake idle workers of every process (delivered at commit); polling covers SQLite."""
        if self.postgres:
            conn.execute(select(func.pg_notify(CHANNEL, "")))
