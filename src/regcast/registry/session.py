"""A registry client's connection settings and its aiohttp session (pool, TLS trust, outbound checks).

Kept apart from the request path: what a connection may be (which CAs, which addresses, how long a
read may stall) is decided once per client here; ``request.py`` only sends through the session.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Protocol

from regcast import USER_AGENT
from regcast.registry.guards import OutboundPolicy
from regcast.registry.retry import RetryPolicy
from regcast.registry.tls import aiohttp, trust

if TYPE_CHECKING:
    from aiohttp.abc import AbstractResolver

# Bytes per read of a blob body, and so per chunk a fan-out shares (REGCAST_CHUNK_SIZE). 256 KiB, not
# 1 MiB: what a lagging target holds is counted in chunks (its channel, the socket's send buffer),
# and at 1 MiB a slow target cost ~10 MiB more peak RSS than a fast one; the CPU per byte is within
# the noise of bench a/b/e (docs/decisions.md, issue 19).
READ_CHUNK: Final = 256 * 1024


class RequestObserver(Protocol):
    """Told about every request, retry and rate-limit header (``ops.metrics.Metrics`` is one)."""

    def request(self, registry: str, method: str, status: int | None, seconds: float) -> None: ...

    def retry(self, status: int | None) -> None: ...

    def remaining(self, registry: str, left: int) -> None: ...

    def bytes_read(self, registry: str, n: int) -> None: ...


@dataclass(frozen=True)
class ClientOptions:
    """Connection settings for one registry client (built from ``Settings``)."""

    verify_tls: bool = True
    ca_bundle: str | None = None
    max_connections: int = 16
    connect_timeout: float = 20.0
    read_timeout: float = 120.0  # between reads of a streamed body
    request_timeout: float = 60.0  # a whole request without a streamed body (tokens, manifests, HEADs)
    chunk_size: int = READ_CHUNK
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    upload_strategy: str = "auto"  # auto | monolithic | chunked
    chunk_cap: int | None = None  # largest PATCH body this registry takes (GHCR: 4 MiB)
    policy: OutboundPolicy = field(default_factory=OutboundPolicy)  # where requests may go (guards.py)
    resolver: AbstractResolver | None = field(default=None, compare=False)  # tests: names -> loopback
    allow_plain_http: bool = False  # Basic credentials over an HTTP fallback to a non-loopback host
    min_throughput: int = 0  # bytes/s a blob download must keep up over ``throughput_window`` (0: no floor)
    throughput_window: float = 60.0
    observer: RequestObserver | None = field(default=None, compare=False)


def ssl_context(options: ClientOptions) -> ssl.SSLContext | bool:
    """False turns verification off (``verify_tls: false``); otherwise the system CAs plus ``ca_bundle``
    (the process's one context for that bundle: ``tls.py``)."""
    if not options.verify_tls:
        return False
    return trust(options.ca_bundle)


def open_session(options: ClientOptions) -> aiohttp.ClientSession:
    """One keep-alive pool for one registry: every connect checked on the resolved address, every
    request's URL (each redirect hop included) checked by the outbound policy's middleware."""
    connector = aiohttp.TCPConnector(
        limit=options.max_connections,
        ssl=ssl_context(options),
        ttl_dns_cache=300,
        resolver=options.resolver,
        socket_factory=options.policy.socket_factory,  # checks the address really connected to
    )
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=options.connect_timeout, sock_read=options.read_timeout)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        auto_decompress=False,
        headers={"User-Agent": USER_AGENT},
        skip_auto_headers=("Accept-Encoding",),
        read_bufsize=options.chunk_size,  # fewer, larger chunks: less work per byte per target
        middlewares=(options.policy.middleware("registry"),),  # every request's URL, every hop
    )
