"""PostgreSQL LISTEN: wake idle workers of every process the moment a job becomes claimable.

The store NOTIFYs ``regcast_jobs`` when a job is queued, released or requeued. Polling stays
as the fallback (and is all SQLite has), so a lost connection here only costs latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import psycopg
from sqlalchemy.engine import make_url

from regcast.jobs.store import CHANNEL

log = logging.getLogger("regcast.worker")


def conninfo(sqlalchemy_url: str) -> str:
    return make_url(sqlalchemy_url).set(drivername="postgresql").render_as_string(hide_password=False)


async def listen(
    url: str,
    wake: Callable[[], None],
    stopping: asyncio.Event,
    db_timeout: float,
    connected: Callable[[bool], None] = lambda _up: None,
) -> None:
    """Call ``wake`` on every notification until ``stopping``; reconnect after failures.

    ``connected`` is told whether notifications are flowing (the worker then relies on them).
    """
    delay = 0.5
    while not stopping.is_set():
        try:
            conn = await asyncio.wait_for(
                psycopg.AsyncConnection.connect(
                    conninfo(url),
                    autocommit=True,
                    connect_timeout=max(2, round(db_timeout)),
                    keepalives=1,
                    keepalives_idle=5,
                    keepalives_interval=2,
                    keepalives_count=3,
                ),
                db_timeout * 2,
            )
            async with conn:
                await asyncio.wait_for(conn.execute(f"LISTEN {CHANNEL}"), db_timeout)
                delay = 0.5
                connected(True)
                wake()  # anything queued while this connection was down
                while not stopping.is_set():
                    async for _note in conn.notifies(timeout=min(5.0, db_timeout)):
                        wake()
                    # quiet for a while: make sure the connection is not frozen
                    await asyncio.wait_for(conn.execute("SELECT 1"), db_timeout)
        except (psycopg.Error, OSError, TimeoutError) as exc:
            connected(False)
            log.debug("listen: %s; polling until reconnected", type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), delay)
            delay = min(delay * 2, 10.0)
