"""``regcast copy`` as users run it: the real executable against real registries."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from tests.support import images
from tests.support.cli import regcast
from tests.support.registries import BASIC_USERS, TOKEN_USERS
from tests.support.registry import RegistryServer
from tests.support.verify import assert_same_image


def docker_config(tmp_path: Path, entries: dict[str, dict[str, str]]) -> dict[str, str]:
    d = tmp_path / "dockercfg"
    d.mkdir(exist_ok=True)
    (d / "config.json").write_text(json.dumps({"auths": entries}))
    return {"DOCKER_CONFIG": str(d)}


def test_copy_to_three_targets_with_docker_config(
    repo: str,
    tmp_path: Path,
    src_reg: RegistryServer,
    open_reg: RegistryServer,
    basic_reg: RegistryServer,
    token_reg: RegistryServer,
    ca_bundle: Path,
) -> None:
    img = images.multi_platform().push(src_reg.http(), repo, "v1")
    (user, pw), (tuser, tpw) = next(iter(BASIC_USERS.items())), next(iter(TOKEN_USERS.items()))
    env = docker_config(
        tmp_path,
        {
            f"https://{basic_reg.host}": {"auth": base64.b64encode(f"{user}:{pw}".encode()).decode()},
            token_reg.host: {"username": tuser, "password": tpw},
        },
    )
    r = regcast(
        "copy",
        "--ca-bundle",
        str(ca_bundle),
        f"{src_reg.host}/{repo}:v1",
        f"{open_reg.host}/{repo}",
        f"{basic_reg.host}/{repo}:v2",
        f"{token_reg.host}/other/{repo}",
        env=env,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("ok ") == 3
    assert img.digest in r.stdout
    assert_same_image(src_reg.http(), repo, "v1", open_reg.http(), repo, "v1")
    assert_same_image(src_reg.http(), repo, "v1", basic_reg.http(), repo, "v2")
    assert_same_image(src_reg.http(), repo, "v1", token_reg.http(), f"other/{repo}", "v1")
    assert pw not in r.stdout + r.stderr
    assert tpw not in r.stdout + r.stderr


def test_flags_credentials_and_digest_reference(
    repo: str, src_reg: RegistryServer, basic_reg: RegistryServer, ca_bundle: Path
) -> None:
    img = images.image().push(src_reg.http(), repo, "v1")
    user, pw = next(iter(BASIC_USERS.items()))
    r = regcast(
        "copy",
        "--ca-bundle",
        str(ca_bundle),
        "--dest-creds",
        f"{user}:{pw}",
        f"{src_reg.host}/{repo}@{img.digest}",
        f"{basic_reg.host}/{repo}",
    )
    assert r.returncode == 0, r.stderr
    assert_same_image(src_reg.http(), repo, img.digest, basic_reg.http(), repo, img.digest)


def test_wrong_password_gives_one_line_error(
    repo: str, src_reg: RegistryServer, basic_reg: RegistryServer, open_reg: RegistryServer, ca_bundle: Path
) -> None:
    images.image().push(src_reg.http(), repo, "v1")
    args = ["--ca-bundle", str(ca_bundle), "--dest-creds", "alice:not-the-Password-9"]
    r = regcast("copy", *args, f"{src_reg.host}/{repo}:v1", f"{basic_reg.host}/{repo}:v1")
    assert r.returncode == 1
    errors = [line for line in r.stderr.splitlines() if not line.startswith("progress ")]  # the periodic line
    assert len(errors) == 1, r.stderr  # not a log line saying it too
    assert errors[0].startswith("error: ")
    assert basic_reg.host in errors[0]
    assert "401" in errors[0]
    assert "Traceback" not in r.stderr
    assert "not-the-Password-9" not in r.stderr + r.stdout
    verbose = regcast("-v", "copy", *args, f"{src_reg.host}/{repo}:v1", f"{basic_reg.host}/{repo}:v1")
    assert f"target {basic_reg.host}/{repo}:v1 failed: " in verbose.stderr  # -v: the log says it as well


def test_unreachable_target_and_missing_source(repo: str, src_reg: RegistryServer, open_reg: RegistryServer) -> None:
    images.image().push(src_reg.http(), repo, "v1")
    r = regcast("copy", f"{src_reg.host}/{repo}:v1", f"{open_reg.host}/{repo}:v1", f"127.0.0.1:1/{repo}:v1")
    assert r.returncode == 1, r.stderr
    assert "ok " in r.stdout
    err = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(err) == 1
    assert "127.0.0.1:1" in err[0]
    assert "Traceback" not in r.stderr
    r = regcast("copy", f"{src_reg.host}/{repo}:nope", f"{open_reg.host}/{repo}:v1")
    assert r.returncode == 1
    assert "not found" in r.stderr
    assert "Traceback" not in r.stderr


def test_an_unreachable_source_is_one_error_line_its_retries_shown_with_verbose(
    repo: str, open_reg: RegistryServer
) -> None:
    r = regcast("copy", f"127.0.0.1:1/{repo}:v1", f"{open_reg.host}/{repo}:v1")
    assert r.returncode == 1, r.stderr
    said = [line for line in r.stderr.splitlines() if not line.startswith("progress ")]  # the periodic line
    assert len(said) == 1, r.stderr
    assert said[0].startswith("error: registry 127.0.0.1:1: "), said
    r = regcast("-v", "copy", f"127.0.0.1:1/{repo}:v1", f"{open_reg.host}/{repo}:v1")
    assert r.returncode == 1, r.stderr
    assert "; retry 1 in " in r.stderr


def test_no_overwrite_skips_with_exit_3(repo: str, src_reg: RegistryServer, open_reg: RegistryServer) -> None:
    images.image().push(src_reg.http(), repo, "v1")
    images.image().push(open_reg.http(), repo, "v1")
    r = regcast("copy", "--no-overwrite", f"{src_reg.host}/{repo}:v1", f"{open_reg.host}/{repo}:v1")
    assert r.returncode == 3
    assert "skipped" in r.stderr
    r = regcast("copy", f"{src_reg.host}/{repo}:v1", f"{open_reg.host}/{repo}:v1")
    assert r.returncode == 0, r.stderr
    assert_same_image(src_reg.http(), repo, "v1", open_reg.http(), repo, "v1")


def test_platform_flag(repo: str, src_reg: RegistryServer, open_reg: RegistryServer) -> None:
    img = images.multi_platform().push(src_reg.http(), repo, "v1")
    r = regcast("copy", "--platform", "linux/s390x", f"{src_reg.host}/{repo}:v1", f"{open_reg.host}/{repo}:v1")
    assert r.returncode == 0, r.stderr
    assert open_reg.http().get_manifest(repo, "v1").content == img.children[2].raw


@pytest.mark.parametrize(
    "args",
    [
        ["not a ref", "x/y"],
        ["127.0.0.1:5/UPPER:v1", "x/y"],
        ["--platform", "linux", "a/b", "c/d"],
        ["--src-creds", "nocolon", "a/b", "c/d"],
    ],
)
def test_bad_usage_exit_2(args: list[str]) -> None:
    r = regcast("copy", *args)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
