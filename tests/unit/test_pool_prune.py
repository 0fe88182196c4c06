"""Jobs that start together prune the shared connection pools concurrently (#17): each idle entry
is closed once, and no prune fails on an entry another one is closing (a ValueError that failed
every target of a job in the 50-concurrent-jobs bench)."""

from __future__ import annotations

import asyncio

import aiohttp

from regcast.registry.pool import ConnectionPools
from regcast.registry.reference import parse_endpoint
from regcast.registry.session import ClientOptions


def test_concurrent_prunes_close_each_idle_entry_once() -> None:
    async def main() -> None:
        pools = ConnectionPools(max_idle=0)
        sessions = []
        for port in (1, 2, 3):
            client = pools.client(parse_endpoint(f"http://127.0.0.1:{port}"), options=ClientOptions())
            shared = client._shared
            assert shared is not None
            shared.session = aiohttp.ClientSession()
            sessions.append(shared.session)
            await client.close()  # idle now: the pool keeps the session
        await asyncio.gather(*(pools.prune() for _ in range(5)))
        assert len(pools) == 0
        assert all(s.closed for s in sessions)

    asyncio.run(main())
