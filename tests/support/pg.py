"""PostgreSQL helpers for the tests: a test's own schema reached through a TCP proxy."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from tests.support.proxy import TcpProxy


def db_proxy(pg_url: str) -> TcpProxy:
    """A proxy in front of the test server (cut or freeze it to simulate an outage)."""
    parts = urlsplit(pg_url)
    return TcpProxy(parts.port or 5432, upstream_host=parts.hostname or "127.0.0.1").start()


def via(pg_url: str, proxy: TcpProxy) -> str:
    """``pg_url`` (schema selection kept) pointed at the proxy."""
    parts = urlsplit(pg_url)
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{proxy.port}"))
