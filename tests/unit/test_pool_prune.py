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


def test_reading_and_writing_clients_of_one_registry_get_pools_of_their_own() -> None:
    """A blob's source read is held while its upload waits for a connection: were the source and the
    target the same pool (one registry, same credentials, no mount), reads holding every connection
    would starve the uploads they feed. Writers of one registry still share one pool, readers another."""

    async def main() -> None:
        pools = ConnectionPools()
        endpoint = parse_endpoint("http://127.0.0.1:1")
        reader = pools.client(endpoint, options=ClientOptions(), read_only=True)
        reader2 = pools.client(endpoint, options=ClientOptions(), read_only=True)
        writer = pools.client(endpoint, options=ClientOptions())
        writer2 = pools.client(endpoint, options=ClientOptions())
        try:
            assert reader.session() is reader2.session()
            assert writer.session() is writer2.session()
            assert reader.session() is not writer.session()
            assert reader.slots is reader2.slots and reader.slots is not writer.slots
        finally:
            for c in (reader, reader2, writer, writer2):
                await c.close()
            await pools.close()

    asyncio.run(main())
