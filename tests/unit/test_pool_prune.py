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


def test_a_closed_pooled_client_keeps_the_pools_session_for_reads_still_under_way() -> None:
    """A read other jobs joined may still run on a client whose own job ended (``coalesce.py``): after
    close() it goes on over the pool's session, with its retries, instead of opening a session of its
    own that nobody closes; the entry is released once however often close() is called."""

    async def main() -> None:
        pools = ConnectionPools()
        endpoint = parse_endpoint("http://127.0.0.1:1")
        leader = pools.client(endpoint, options=ClientOptions())
        follower = pools.client(endpoint, options=ClientOptions())
        pooled = leader.session()
        await leader.close()
        await leader.close()
        try:
            assert leader.session() is pooled
            assert not leader.closed  # its requests are still retried for whoever joined them
            shared = follower._shared
            assert shared is not None
            assert shared.users == 1  # released once
            pooled_closed_later = aiohttp.ClientSession()
            await pooled.close()  # the pool closed the idle entry afterwards: a session of its own, then
            shared.session = pooled_closed_later
            own = leader.session()
            assert own is not pooled and not own.closed
            await leader.close()
            assert own.closed and leader.closed
            await pooled_closed_later.close()
        finally:
            await follower.close()
            await pools.close()

    asyncio.run(main())
