"""Engines that cannot hang, and the one place SQLAlchemy errors become ``JobStoreUnavailable``.

Both stores of the service database (``jobs/store.py``, ``mirrors/store.py``) run every
transaction through ``Database.tx``, so neither hands a SQLAlchemy error to its callers.

A frozen database (or network) never answers, and neither TCP keepalives nor a server-side
``statement_timeout`` can end a wait for an answer that never comes: the server never saw the
query. So every database call runs under a deadline kept by a ``Watchdog`` thread, which cuts
the connection's socket when the deadline passes; the driver then fails at once and SQLAlchemy
throws the connection away. Keepalives and ``tcp_user_timeout`` still catch dead peers, and
``connect_timeout`` bounds new connections.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import DateTime, Engine, Interval, create_engine, event, exc, func, literal
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from regcast._exceptions import JobError, JobStoreUnavailable, StoreConflict

log = logging.getLogger("regcast.jobs")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def as_utc(value: dt.datetime | None) -> dt.datetime | None:
    """A timestamp read back from the database: SQLite hands back naive datetimes, written as UTC."""
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


# Query parameters a database URL may carry that are never secret (libpq's and SQLite's); any other value
# (``password``, ``sslpassword``, a driver's own key) is hidden: an allow-list, as a deny-list misses keys.
_SHOWN_PARAMS = frozenset(
    {
        "host", "hostaddr", "port", "dbname", "user", "sslmode", "sslrootcert", "sslcert", "sslkey", "sslcrl",
        "application_name", "connect_timeout", "target_session_attrs", "client_encoding", "gssencmode",
        "keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count", "load_balance_hosts",
        "mode", "cache", "uri", "timeout",
    }
)  # fmt: skip


def database_label(url: str) -> str:
    """The database URL as messages name it: the password and every query value not known to be harmless
    hidden."""
    from sqlalchemy.engine import make_url

    from regcast.registry.redact import REDACTED

    try:
        parsed = make_url(url)
    except exc.ArgumentError:
        return "<unparsable database URL>"
    query = {k: (v if k.lower() in _SHOWN_PARAMS else REDACTED) for k, v in parsed.query.items()}
    return parsed.set(query=query).render_as_string(hide_password=True)


def failure_reason(error: BaseException) -> str:
    """Why a database call failed, in one line: the driver's own first line (drivers never echo a
    password), else the error's message (a watchdog's deadline, a pool timeout)."""
    from regcast.registry.redact import printable

    cause = error.__cause__
    orig = getattr(cause, "orig", None)
    if isinstance(orig, BaseException) and str(orig).strip():
        return printable(str(orig).strip().splitlines()[0], 300)
    return printable(str(error), 300)


@dataclass(eq=False)
class _Guard:
    deadline: float
    seconds: float
    fds: list[int] = field(default_factory=list)
    fired: bool = False


class Watchdog:
    """Cuts the socket of a database call that outlived its deadline (one thread per store)."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._cond = threading.Condition()
        self._guards: set[_Guard] = set()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._wakes_at = float("inf")  # monotonic time the thread looks at the guards next

    @contextlib.contextmanager
    def guard(self, seconds: float) -> Iterator[_Guard]:
        g = _Guard(time.monotonic() + seconds, seconds)
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="regcast-db-watchdog", daemon=True)
                self._thread.start()
            self._guards.add(g)
            if g.deadline < self._wakes_at:  # else the thread wakes in time anyway: no switch per call (#17)
                self._cond.notify()
        self._local.guard = g
        try:
            yield g
        finally:
            self._local.guard = None
            with self._cond:
                self._guards.discard(g)

    def attach(self, dbapi_conn: Any) -> None:
        """Put the connection this thread is using under its current guard."""
        g: _Guard | None = getattr(self._local, "guard", None)
        if g is None:
            return
        with self._cond:
            g.fds.append(dbapi_conn.fileno())
            if g.fired:  # already late: fail now rather than block
                _cut(g.fds[-1])

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()

    def _run(self) -> None:
        with self._cond:
            while not self._closed:
                now = time.monotonic()
                for g in self._guards:
                    if not g.fired and g.deadline <= now:
                        g.fired = True
                        for fd in g.fds:
                            _cut(fd)
                soonest = min((g.deadline for g in self._guards if not g.fired), default=now + 60)
                self._wakes_at = max(now + 0.01, soonest)
                self._cond.wait(self._wakes_at - now)


def _cut(fd: int) -> None:
    """Shut the socket down (both ways) without closing the driver's descriptor."""
    with contextlib.suppress(OSError):
        s = socket.socket(fileno=os.dup(fd))
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)
        s.close()


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def _private_file(url: str) -> None:
    """Create the SQLite file 0600 (its -wal and -shm files take the same mode): it holds job secrets' ciphertext
    and error texts."""
    path = url.split(":///", 1)[1].split("?", 1)[0] if ":///" in url else ""
    if not path or path == ":memory:":
        return
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
    except OSError:
        return  # the engine reports an unusable path itself


def make_engine(url: str, timeout: float, watchdog: Watchdog) -> Engine:
    """An engine whose every connect, checkout and statement is bounded by ``timeout`` seconds."""
    if url.startswith("sqlite"):
        _private_file(url)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    connect_args = {
        "connect_timeout": max(2, round(timeout)),
        "keepalives": 1,
        "keepalives_idle": 5,
        "keepalives_interval": 2,
        "keepalives_count": 3,
        "tcp_user_timeout": int(timeout * 1000),
    }
    engine = create_engine(
        url, pool_size=5, max_overflow=10, pool_timeout=timeout, pool_recycle=600, connect_args=connect_args
    )

    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        watchdog.attach(dbapi_conn)
        with dbapi_conn.cursor() as cur:  # a server-side bound too, for slow queries and lock waits
            cur.execute(f"SET statement_timeout = {int(timeout * 1000)}")
            cur.execute(f"SET lock_timeout = {int(timeout * 1000)}")
        dbapi_conn.commit()

    def on_checkout(dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
        # our own pre-ping, under the watchdog (SQLAlchemy's runs before any event could arm it)
        watchdog.attach(dbapi_conn)
        try:
            with dbapi_conn.cursor() as cur:
                cur.execute("SELECT 1")
            dbapi_conn.rollback()
        except Exception as e:
            raise exc.DisconnectionError(f"pre-ping failed: {type(e).__name__}") from e

    event.listen(engine, "connect", on_connect)
    event.listen(engine, "checkout", on_checkout)
    return engine


@contextlib.contextmanager
def boundary(watchdog: Watchdog, seconds: float) -> Iterator[None]:
    """Run database work under a deadline; SQLAlchemy errors leave as ``JobStoreUnavailable``."""
    try:
        with watchdog.guard(seconds) as g:
            try:
                yield
            except exc.SQLAlchemyError as e:
                if g.fired:
                    raise JobStoreUnavailable(f"database did not answer within {seconds:g}s") from e
                raise
    except (exc.OperationalError, exc.InterfaceError, exc.TimeoutError, exc.DisconnectionError) as e:
        raise JobStoreUnavailable(f"database unavailable ({type(e).__name__})") from e
    except exc.IntegrityError as e:
        if e.connection_invalidated:
            raise JobStoreUnavailable(f"database unavailable ({type(e).__name__})") from e
        raise StoreConflict(f"database refused a duplicate ({type(e).__name__})") from e
    except exc.DBAPIError as e:
        if e.connection_invalidated:
            raise JobStoreUnavailable(f"database unavailable ({type(e).__name__})") from e
        raise JobError(f"database error ({type(e).__name__})") from e
    except exc.SQLAlchemyError as e:
        raise JobError(f"database error ({type(e).__name__})") from e


def invalidate_if_cut(conn: Connection, watchdog: Watchdog) -> None:
    """A connection whose socket the watchdog cut must not go back to the pool."""
    g: _Guard | None = getattr(watchdog._local, "guard", None)
    if g is not None and g.fired and not conn.invalidated:
        conn.invalidate()


@dataclass(frozen=True)
class Database:
    """One engine, its watchdog and its deadline: what every store of the service database shares."""

    engine: Engine
    watchdog: Watchdog
    timeout: float

    @contextlib.contextmanager
    def tx(self, timeout: float | None = None) -> Iterator[Connection]:
        """One transaction under the deadline, committed on success; errors leave translated (``boundary``)."""
        with boundary(self.watchdog, timeout or self.timeout), self.engine.connect() as conn:
            try:
                with conn.begin():
                    yield conn
            finally:
                invalidate_if_cut(conn, self.watchdog)


class Clock:
    """Timestamps for liveness decisions: the database's ``now()`` on PostgreSQL.

    Workers on several hosts compare heartbeats; only one clock may judge them. SQLite is one
    host by construction, so its "database clock" is this process's clock.
    """

    def __init__(self, postgres: bool) -> None:
        self.postgres = postgres

    def now(self) -> ColumnElement[dt.datetime]:
        if self.postgres:
            return func.now()
        return literal(utcnow(), DateTime(timezone=True))

    def later(self, seconds: float) -> ColumnElement[dt.datetime]:
        """``now() + seconds`` (negative: in the past)."""
        if self.postgres:
            return func.now() + literal(dt.timedelta(seconds=seconds), Interval())
        return literal(utcnow() + dt.timedelta(seconds=seconds), DateTime(timezone=True))
