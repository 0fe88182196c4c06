"""Authentication as real registries and users do it, end to end through ``regcast copy`` and service jobs:
token answers of every shape, the OAuth2 variant, Docker config files as docker writes them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from tests.support import images
from tests.support.cli import regcast
from tests.support.registry import RegistryServer
from tests.support.tokenserver import TokenServer


@contextmanager
def answering(ts: TokenServer, **fields: object) -> Iterator[TokenServer]:
    """The token server's answers carry ``fields`` (over its own) for the block."""
    ts.answer_fields = dict(fields)
    try:
        yield ts
    finally:
        ts.answer_fields = {}


def creds(reg: RegistryServer) -> str:
    user, password = next(iter(reg.users.items()))
    return f"{user}:{password}"


def test_a_token_answer_whose_expires_in_is_nan_is_used_not_asked_again_per_request(
    repo: str, src_reg: RegistryServer, token_reg: RegistryServer
) -> None:
    """``"expires_in": NaN`` (Python's JSON reader takes it): the token counted as never valid, so every
    request of the copy asked the token server again (one token per scope is what a copy needs)."""
    images.image().push(src_reg.http(), repo, "v1")
    ts = token_reg.token_server
    assert ts is not None
    before = len(ts.requests)
    with answering(ts, expires_in=float("nan")):
        r = regcast("copy", "--dest-creds", creds(token_reg), f"{src_reg.host}/{repo}:v1", f"{token_reg.host}/{repo}")
    assert r.returncode == 0, r.stderr
    asked = [str(q["scopes"]) for q in ts.requests[before:]]
    assert sorted(asked) == sorted(set(asked)), asked  # each scope asked once
