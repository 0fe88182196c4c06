"""A pool entry's memory (issue 17, registry/memo.py): verified manifests by digest within bounds and
a time limit, never across credentials; a registry's missing referrers API remembered for a while."""

from __future__ import annotations

import asyncio

from regcast.registry.auth import Credentials
from regcast.registry.manifest import Manifest, parse_manifest
from regcast.registry.memo import ManifestCache, Memo
from regcast.registry.pool import ConnectionPools
from regcast.registry.reference import parse_endpoint
from regcast.registry.session import ClientOptions


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def manifest(n: int, pad: int = 0) -> Manifest:
    raw = b'{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [], "n": %d}' % n
    return parse_manifest(raw + b" " * pad, "application/vnd.oci.image.index.v1+json")


def test_kept_for_its_seconds_then_read_again() -> None:
    clock = Clock()
    cache = ManifestCache(seconds=120, clock=clock)
    owner, m = object(), manifest(1)
    cache.put(owner, "r", m)
    clock.now += 120
    assert cache.get(owner, "r", m.digest) is m
    clock.now += 0.5
    assert cache.get(owner, "r", m.digest) is None
    assert len(cache) == 0 and cache.bytes == 0


def test_bounded_in_entries_and_bytes_least_recently_used_first() -> None:
    cache = ManifestCache(entries=3, max_bytes=10_000, clock=Clock())
    owner = object()
    ms = [manifest(i) for i in range(4)]
    for m in ms[:3]:
        cache.put(owner, "r", m)
    assert cache.get(owner, "r", ms[0].digest) is ms[0]  # used: the oldest is now ms[1]
    cache.put(owner, "r", ms[3])
    assert [cache.get(owner, "r", m.digest) is not None for m in ms] == [True, False, True, True]
    big = manifest(9, pad=9_000)
    cache.put(owner, "r", big)  # 9 KiB more: the others go until the bytes fit
    assert cache.bytes <= 10_000 and cache.get(owner, "r", big.digest) is big
    assert cache.bytes == sum(len(m.raw) for m in [*ms, big] if cache.get(owner, "r", m.digest) is not None)
    kept = len(cache)
    huge = manifest(10, pad=20_000)
    cache.put(owner, "r", huge)  # larger than the whole cache: not kept, nothing pushed out for it
    assert cache.get(owner, "r", huge.digest) is None and len(cache) == kept


def test_keyed_by_owner_and_repository() -> None:
    cache = ManifestCache(clock=Clock())
    alice, carol, m = object(), object(), manifest(1)
    cache.put(alice, "r", m)
    assert cache.get(carol, "r", m.digest) is None
    assert cache.get(alice, "other", m.digest) is None
    assert cache.get(alice, "r", m.digest) is m


def test_tag_hint_and_forget() -> None:
    memo = Memo(ManifestCache(clock=Clock()))
    m = manifest(1)
    memo.keep("r", m, "v1")
    assert memo.tagged("r", "v1") is m
    assert memo.manifest("r", m.digest) is m
    memo.forget("r", "v1")
    assert memo.tagged("r", "v1") is None and memo.manifest("r", m.digest) is None
    assert Memo().manifest("r", m.digest) is None  # a client of its own (the CLI's copy) keeps none
    Memo().keep("r", m, "v1")


def test_registry_facts_remembered_for_their_seconds() -> None:
    clock = Clock()
    memo = Memo(no_referrers_api_seconds=300, clock=clock)
    assert not memo.referrers_api_absent() and not memo.tag_list_refused("r") and not memo.holds_tags("r")
    memo.note_referrers_api_absent()
    memo.note_tag_list_refused("r")
    memo.note_tags("r")
    clock.now += 299
    assert memo.referrers_api_absent() and memo.tag_list_refused("r") and memo.holds_tags("r")
    assert not memo.holds_tags("other")
    assert not memo.tag_list_refused("other")  # listing is a permission per repository (ECR, robot accounts)
    clock.now += 2
    assert not memo.referrers_api_absent() and not memo.tag_list_refused("r") and not memo.holds_tags("r")


def test_a_present_tag_stands_for_three_seconds() -> None:
    clock = Clock()
    memo = Memo(clock=clock)
    memo.note_present("r", "v1")
    clock.now += 2.9
    assert memo.recently_present("r", "v1") and not memo.recently_present("r", "v2")
    clock.now += 0.2
    assert not memo.recently_present("r", "v1")


def test_pool_entries_of_other_credentials_share_no_memory() -> None:
    async def main() -> None:
        pools = ConnectionPools()
        endpoint, options = parse_endpoint("http://127.0.0.1:1"), ClientOptions()
        alice = pools.client(endpoint, credentials=Credentials("alice", "a"), options=options)
        alice2 = pools.client(endpoint, credentials=Credentials("alice", "a"), options=options)
        other_pw = pools.client(endpoint, credentials=Credentials("alice", "b"), options=options)
        anonymous = pools.client(endpoint, options=options)
        m = manifest(1)
        alice.memo.keep("r", m)
        alice.memo.note_referrers_api_absent()
        assert alice2.memo.manifest("r", m.digest) is m and alice2.memo.referrers_api_absent()
        for c in (other_pw, anonymous):
            assert c.memo.manifest("r", m.digest) is None and not c.memo.referrers_api_absent()
        for c in (alice, alice2, other_pw, anonymous):
            await c.close()

    asyncio.run(main())
