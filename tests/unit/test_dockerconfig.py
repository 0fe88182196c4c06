from __future__ import annotations

import base64
import json
from pathlib import Path

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
