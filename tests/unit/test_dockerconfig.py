from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from regcast.registry.auth import Credentials
from regcast.registry.dockerconfig import credentials_for, helper_for


def write(tmp_path: Path, auths: dict[str, object]) -> Path:
    p = tmp_path / "config.json"
    p.write_text(json.dumps({"auths": auths, "credsStore": "desktop"}))
    return p


def test_auth_entries(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        {
            "https://index.docker.io/v1/": {"auth": base64.b64encode(b"hub:pw:x").decode()},
            "https://reg.example:5000": {"username": "u", "password": "p"},
            "ghcr.io": {"auth": "!!notbase64"},
            "quay.io": {},
        },
    )
    assert credentials_for("docker.io", p) == Credentials("hub", "pw:x")
    assert credentials_for("reg.example:5000", p) == Credentials("u", "p")
    assert credentials_for("ghcr.io", p) is None
    assert credentials_for("quay.io", p) is None
    assert credentials_for("other.example", p) is None
    assert credentials_for("x", tmp_path / "missing.json") is None


def test_identity_tokens_are_read_and_never_shown(tmp_path: Path) -> None:
    placeholder = base64.b64encode(b"00000000-0000-0000-0000-000000000000:").decode()
    p = write(tmp_path, {"acr.example": {"auth": placeholder, "identitytoken": "refresh-secret"}})
    creds = credentials_for("acr.example", p)
    assert creds == Credentials("00000000-0000-0000-0000-000000000000", "", "refresh-secret")
    assert "refresh-secret" not in repr(creds)


def test_a_credential_helper_is_named_where_the_config_keeps_a_registry_in_it(tmp_path: Path) -> None:
    """Docker Desktop's config: ``credsStore`` with an empty ``auths`` entry per login, ``credHelpers`` per host."""
    p = tmp_path / "config.json"
    p.write_text(
        json.dumps(
            {
                "auths": {"https://index.docker.io/v1/": {}, "reg.example:5000": {}, "plain.example": {"auth": "dTpw"}},
                "credsStore": "desktop",
                "credHelpers": {"123.dkr.ecr.us-east-1.amazonaws.com": "ecr-login"},
            }
        )
    )
    assert helper_for("docker.io", p) == "desktop"
    assert helper_for("reg.example:5000", p) == "desktop"
    assert helper_for("123.dkr.ecr.us-east-1.amazonaws.com", p) == "ecr-login"
    assert helper_for("never.example", p) is None  # not logged in there: anonymous is what docker does too
    assert credentials_for("plain.example", p) == Credentials("u", "p")
    assert helper_for("x", tmp_path / "missing.json") is None


@pytest.mark.parametrize(
    ("key", "registry"),
    [
        ("https://reg.example/v1/", "reg.example"),  # docker login of old
        ("https://reg.example/v2/", "reg.example"),
        ("http://reg.example", "reg.example"),
        ("reg.example:5000", "reg.example:5000"),
        ("https://reg.example:5000", "reg.example:5000"),
        ("REG.Example", "reg.example"),
        ("index.docker.io/v1/", "docker.io"),
        ("https://index.docker.io/v1/", "docker.io"),
        ("registry-1.docker.io", "docker.io"),
        ("docker.io", "docker.io"),
    ],
)
def test_auths_keys_as_docker_and_its_tools_write_them(tmp_path: Path, key: str, registry: str) -> None:
    """Every spelling of a registry docker login, podman, skopeo and CI scripts leave in ``auths``, the
    password holding a colon; ``username``/``password`` fields name the same as ``auth``."""
    encoded = base64.b64encode(b"user:pa:ss").decode()
    assert credentials_for(registry, write(tmp_path, {key: {"auth": encoded}})) == Credentials("user", "pa:ss")
    fields: dict[str, object] = {key: {"username": "user", "password": "pa:ss"}}
    assert credentials_for(registry, write(tmp_path, fields)) == Credentials("user", "pa:ss")
    assert credentials_for("other.example", write(tmp_path, fields)) is None
    assert credentials_for(f"x{registry}", write(tmp_path, fields)) is None  # a longer name is another host


def test_an_identity_token_alone_is_used_with_docker_logins_placeholder_user(tmp_path: Path) -> None:
    """An entry holding only ``identitytoken`` (written by tools other than docker login, or by hand): docker
    takes the OAuth2 refresh-token flow with it; regcast went anonymous."""
    p = write(tmp_path, {"acr.example": {"identitytoken": "refresh-only"}})
    assert credentials_for("acr.example", p) == Credentials("00000000-0000-0000-0000-000000000000", "", "refresh-only")
