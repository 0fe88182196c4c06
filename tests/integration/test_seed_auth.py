"""The seed's explicit ``auth`` block, and basic credentials answering a Bearer challenge."""

from __future__ import annotations

import asyncio
import base64

from regcast.registry.auth import SeedAuth
from regcast.registry.client import RegistryClient
from regcast.registry.reference import parse_endpoint
from regcast.transfer.engine import CopyEngine, Target
from regcast.transfer.remote import RegistryRepository
from tests.support import images
from tests.support.clients import client_for
from tests.support.registries import TOKEN_USERS
from tests.support.registry import RegistryServer
from tests.support.verify import assert_same_image


def test_seed_token_block_as_the_seed_used_it(repo: str, src_reg: RegistryServer, token_reg: RegistryServer) -> None:
    images.image().push(src_reg.http(), repo, "v1")
    ts = token_reg.token_server
    assert ts
    user, pw = next(iter(TOKEN_USERS.items()))
    url = f"{ts.realm}?service={ts.service}&scope=repository:{repo}:pull,push"
    auth = SeedAuth(
        url=url,
        token_type="Bearer",
        header={"Authorization": "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()},
        json_body={"ignored": True},
    )
    asked_before = len(ts.requests)

    async def go() -> bool:
        dst = RegistryClient(parse_endpoint(token_reg.endpoint), seed_auth=auth)
        src = client_for(src_reg)
        try:
            res = await CopyEngine().copy(
                RegistryRepository(src, repo), "v1", [Target("t", RegistryRepository(dst, repo), "v1")]
            )
            return res.ok
        finally:
            await dst.close()
            await src.close()

    assert asyncio.run(go())
    assert len(ts.requests) == asked_before + 1  # fetched once, as the seed did
    assert ts.requests[-1]["scopes"] == [f"repository:{repo}:pull,push"]
    assert_same_image(src_reg.http(), repo, "v1", token_reg.http(), repo, "v1")


def test_token_source_with_basic_credentials(repo: str, token_reg: RegistryServer, open_reg: RegistryServer) -> None:
    images.image().push(token_reg.http(), repo, "v1")

    async def go() -> bool:
        src = client_for(token_reg, read_only=True)
        dst = client_for(open_reg)
        try:
            return (
                await CopyEngine().copy(
                    RegistryRepository(src, repo), "v1", [Target("t", RegistryRepository(dst, repo), "v1")]
                )
            ).ok
        finally:
            await src.close()
            await dst.close()

    assert asyncio.run(go())
    assert_same_image(token_reg.http(), repo, "v1", open_reg.http(), repo, "v1")
