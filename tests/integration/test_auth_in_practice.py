"""Authentication as real registries and users do it, end to end through ``regcast copy`` and service jobs:
token answers of every shape, the OAuth2 variant, Docker config files as docker writes them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

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


def _docker_config(tmp_path: Path, text: str) -> dict[str, str]:
    directory = tmp_path / "docker-config-written"
    directory.mkdir(exist_ok=True)
    (directory / "config.json").write_text(text)
    return {"DOCKER_CONFIG": str(directory)}


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ('{"auths": {', "is not valid JSON (line 1 column 12)"),
        ('["auths"]', "is not a JSON object"),
    ],
)
def test_a_docker_config_that_is_not_one_is_said_once_not_a_silent_anonymous_copy(
    text: str, why: str, tmp_path: Path, repo: str, src_reg: RegistryServer, token_reg: RegistryServer
) -> None:
    """A broken config file (a hand edit, a half-written file): its credentials were dropped in silence, and
    the copy ended in a 401 that sent the user to check credentials they had given. Now one warning line names
    the file (once, though source and target both looked), then the copy goes on as without it."""
    images.image().push(src_reg.http(), repo, "v1")
    env = _docker_config(tmp_path, text)
    r = regcast("copy", f"{src_reg.host}/{repo}:v1", f"{token_reg.host}/{repo}", env=env)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    path = Path(env["DOCKER_CONFIG"]) / "config.json"
    said = [line for line in r.stderr.splitlines() if f"Docker config {path} {why}" in line]
    assert len(said) == 1 and said[0].endswith("no credentials are taken from it"), r.stderr


def test_a_docker_config_entry_whose_auth_is_not_base64_is_named(
    tmp_path: Path, repo: str, src_reg: RegistryServer, token_reg: RegistryServer
) -> None:
    images.image().push(src_reg.http(), repo, "v1")
    env = _docker_config(tmp_path, json.dumps({"auths": {token_reg.host: {"auth": "bob:not-base64!"}}}))
    r = regcast("copy", f"{src_reg.host}/{repo}:v1", f"{token_reg.host}/{repo}", env=env)
    assert r.returncode == 1
    assert f"the 'auth' of '{token_reg.host}' is not base64 of USER:PASSWORD: not used" in r.stderr, r.stderr
    assert "not-base64" not in r.stderr.replace("is not base64", "")
