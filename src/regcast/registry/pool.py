"""Registry connections and tokens kept across a service's jobs (#17: per-job cost).

A job builds its own ``RegistryClient`` per source and target, so everything that is the job's
stays the job's: retry counters and watchers, upload-strategy learning, read-only. What a client
would otherwise build again for every job is shared by every client of the same endpoint,
credentials and client options (TLS settings, CA bundle, timeouts, pool size, outbound policy):
the aiohttp connection pool, the ``Authenticator`` (challenge and tokens per scope) and the
result of the first ``GET /v2/`` (scheme after an HTTP fallback). Different credentials never
share anything. An entry no client uses is closed when idle too long or when too many are idle.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from regcast.registry.authenticator import Authenticator
from regcast.registry.coalesce import InFlight
from regcast.registry.memo import ManifestCache, Memo

if TYPE_CHECKING:
    import aiohttp

    from regcast.registry.auth import Credentials, SeedAuth
    from regcast.registry.client import ClientOptions, RegistryClient
    from regcast.registry.limits import RegistryLimit
    from regcast.registry.reference import Endpoint
    from regcast.registry.session import ConnectionSlots


@dataclass(eq=False)
class Shared:
    """What the clients of one (endpoint, credentials, options) share."""

    key: tuple[object, ...]
    auth: Authenticator
    session: aiohttp.ClientSession | None = None
    slots: ConnectionSlots | None = None  # the session's connection slots (session.py)
    pinged: Endpoint | None = None  # the endpoint as the first successful ping settled it
    ping_lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one ping at a time for the entry's clients
    reads: InFlight = field(default_factory=InFlight)  # identical small reads under way (coalesce.py)
    memo: Memo = field(default_factory=Memo)  # what this entry's jobs learnt and may reuse (memo.py)
    users: int = 0
    idle_since: float = field(default_factory=time.monotonic)

    def release(self) -> None:
        self.users -= 1
        if self.users == 0:
            self.idle_since = time.monotonic()


class ConnectionPools:
    """Hands out ``RegistryClient``s whose connections and tokens outlive one job; ``close()`` at the end."""

    def __init__(self, max_idle: int = 32, idle_seconds: float = 300.0, manifests: ManifestCache | None = None) -> None:
        self.max_idle = max_idle
        self.idle_seconds = idle_seconds
        self.manifests = manifests or ManifestCache()  # one bound for every entry; keys hold the entry's Memo
        self._entries: list[Shared] = []  # compared with ==: credentials and seed auth are not hashable

    def client(
        self,
        endpoint: Endpoint,
        *,
        credentials: Credentials | None = None,
        seed_auth: SeedAuth | None = None,
        options: ClientOptions,
        read_only: bool = False,
        limit: RegistryLimit | None = None,
    ) -> RegistryClient:
        from regcast.registry.client import RegistryClient

        # the observer only counts (it is not the pool's); the resolver shapes connections, so it is part of the key.
        # Reading and writing clients of one registry get pools of their own: a blob's source read, held while
        # its upload waits for a connection, must never hold the connections that upload waits for.
        key = (endpoint, credentials, seed_auth, replace(options, observer=None), id(options.resolver), read_only)
        shared = next((e for e in self._entries if e.key == key), None)
        if shared is None:
            auth = Authenticator(endpoint.host, credentials, seed_auth, options.policy)
            shared = Shared(key, auth, memo=Memo(self.manifests))
            self._entries.append(shared)
        shared.users += 1
        return RegistryClient(
            endpoint,
            credentials=credentials,
            seed_auth=seed_auth,
            options=options,
            read_only=read_only,
            limit=limit,
            shared=shared,
        )

    async def prune(self) -> None:
        """Close what no client has used for ``idle_seconds``, and the oldest idle beyond ``max_idle``."""
        now = time.monotonic()
        idle = sorted((e for e in self._entries if e.users == 0), key=lambda e: e.idle_since)
        stale = [e for e in idle if now - e.idle_since > self.idle_seconds]
        stale += [e for e in idle[: max(0, len(idle) - self.max_idle)] if e not in stale]
        # out of the list before the first await: jobs starting together prune concurrently, and a
        # second prune must not find (and remove again: ValueError) what this one is closing
        for e in stale:
            self._entries.remove(e)
        for e in stale:
            if e.session is not None:
                await e.session.close()

    async def close(self) -> None:
        entries, self._entries = self._entries, []
        for e in entries:
            if e.session is not None:
                await e.session.close()

    def __len__(self) -> int:
        return len(self._entries)
