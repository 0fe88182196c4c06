"""A registry client's connection settings and its aiohttp session (pool, TLS trust, outbound checks).

Kept apart from the request path: what a connection may be (which CAs, which addresses, how long a
read may stall) is decided once per client here; ``request.py`` only sends through the session.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Protocol

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
SLOT_WAIT_WARNING: Final = 300.0  # seconds a request waits for a pooled connection before it is said
log = logging.getLogger("regcast.registry")


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


class ConnectionSlots:
    """One slot per connection a session's pool may hold, taken before a request is sent and given back
    when its response is released.

    aiohttp counts the wait for a pooled connection into a request's total timeout. A service's jobs share
    a registry's pool (``pool.py``), so a few jobs streaming large blobs kept other jobs' HEADs and manifest
    PUTs waiting past ``request_timeout``: they failed as timeouts although the registry answered at once.
    With as many slots as the pool has connections, a request that holds a slot finds a connection free,
    and its clock starts only then. Waiting for a slot is never a failure, but a long wait is said (every
    ``SLOT_WAIT_WARNING`` seconds): every connection busy that long is a large transfer, or a bug that kept a
    response unreleased (its slot then never comes back)."""

    def __init__(self, size: int, registry: str) -> None:
        self._free = asyncio.Semaphore(size)
        self.size = size
        self.registry = registry

    async def send(self, request: Callable[[], Awaitable[aiohttp.ClientResponse]]) -> aiohttp.ClientResponse:
        if self._free.locked():
            await self._wait_for_slot()
        else:  # free: no timer (the common case costs a request nothing more)
            await self._free.acquire()
        try:
            resp = await request()
        except BaseException:
            self._free.release()
            raise
        release_also(resp, self._free.release)
        return resp

    async def _wait_for_slot(self) -> None:
        """Acquire, saying so every ``SLOT_WAIT_WARNING`` seconds; one acquire, so the waiter keeps its
        place in the queue, and a cancellation is never lost (``wait_for`` on 3.11 could drop one that
        came as the slot did) nor leaves a slot taken."""
        acquire = asyncio.ensure_future(self._free.acquire())
        waited = 0.0
        try:
            while not (await asyncio.wait({acquire}, timeout=SLOT_WAIT_WARNING))[0]:
                waited += SLOT_WAIT_WARNING
                log.warning(
                    "registry %s: a request has waited %.0fs for one of its %d connections",
                    self.registry,
                    waited,
                    self.size,
                )
        except BaseException:
            if acquire.done() and not acquire.cancelled():
                self._free.release()  # it came as this waiter left
            else:
                acquire.cancel()
            raise


def release_also(resp: aiohttp.ClientResponse, extra: Callable[[], None]) -> None:
    """Run ``extra`` once when the caller releases ``resp`` (a slot follows the connection), or when ``resp``
    is collected unreleased (a response whose body was read; one still being received stays referenced by
    its connection, so every path must release what it sent)."""
    pending = [extra]

    def give_back() -> None:
        while pending:
            pending.pop()()

    earlier = resp.__dict__.get("release")  # an earlier wrapper (no argument), else the class's own
    ref = weakref.ref(resp)  # no cycle through the instance: it is freed (and finalized) by refcount

    def release() -> Any:
        try:
            if earlier is not None:
                return earlier()
            obj = ref()
            return None if obj is None else type(obj).release(obj)
        finally:
            give_back()

    resp.release = release  # type: ignore[method-assign]
    weakref.finalize(resp, give_back)
