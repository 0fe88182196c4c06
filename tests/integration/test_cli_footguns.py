"""Issue #9, defects 7 and 9: command-line mistakes that used to do the wrong thing quietly."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

from tests.support import images
from tests.support.cli import REGCAST, regcast
from tests.support.registries import BASIC_USERS, TOKEN_USERS
from tests.support.registry import RegistryServer
from tests.support.service import FAST, Service
from tests.support.verify import assert_same_image

BASIC = "{}:{}".format(*next(iter(BASIC_USERS.items())))
TOKEN = "{}:{}".format(*next(iter(TOKEN_USERS.items())))


def test_host_only_src_or_dst_is_refused(repo: str, src_reg: RegistryServer, open_reg: RegistryServer) -> None:
    """``127.0.0.1:5000`` alone is a registry, not docker.io/library/127.0.0.1:5000."""
    images.image().push(src_reg.http(), repo, "v1")
    for args, bad in [
        ((f"{src_reg.host}/{repo}:v1", open_reg.host), open_reg.host),
        ((f"{src_reg.host}/{repo}:v1", f"{open_reg.host}/{repo}", "localhost:5000"), "localhost:5000"),
        ((src_reg.host, f"{open_reg.host}/{repo}"), src_reg.host),
        ((f"{src_reg.host}/{repo}:v1", "registry.example.com"), "registry.example.com"),
    ]:
        r = regcast("copy", *args)
        assert r.returncode == 2, r.stderr
        assert f"{bad} is a registry, not an image; write {bad}/NAME[:TAG]" in r.stderr
    assert open_reg.http().get_manifest(repo, "v1").status_code == 404  # nothing copied anywhere


def test_platform_matching_nothing_in_a_single_image_is_an_error(
    repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    img = images.image(arch="amd64").push(src_reg.http(), repo, "v1")
    r = regcast("copy", "--platform", "linux/arm64", f"{src_reg.host}/{repo}:v1", f"{open_reg.host}/{repo}")
    assert r.returncode == 1
    assert f"{img.digest} is an image for linux/amd64, not for platform linux/arm64" in r.stderr
    assert open_reg.http().get_manifest(repo, "v1").status_code == 404
    r = regcast("copy", "--platform", "linux/amd64", f"{src_reg.host}/{repo}:v1", f"{open_reg.host}/{repo}")
    assert r.returncode == 0, r.stderr
    assert_same_image(src_reg.http(), repo, "v1", open_reg.http(), repo, "v1")


def test_jobs_without_a_database_names_it_and_creates_nothing(tmp_path: Path) -> None:
    tmp_path = tmp_path / "elsewhere"
    tmp_path.mkdir()
    r = subprocess.run(
        [REGCAST, "jobs"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **FAST},
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode == 1
    assert f"error: no job database at {tmp_path.resolve() / 'regcast.db'}" in r.stderr
    assert list(tmp_path.iterdir()) == []  # no empty database, no key file
    elsewhere = tmp_path / "other.db"
    r = subprocess.run(
        [REGCAST, "jobs", "--database-url", f"sqlite:///{elsewhere}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode == 1 and str(elsewhere) in r.stderr


def test_jobs_with_a_bad_setting_is_a_usage_error_not_a_traceback(tmp_path: Path) -> None:
    """As for the other commands: exit 2 and what is wrong, whether the environment or the flag is bad."""
    tmp_path = tmp_path / "here"
    tmp_path.mkdir()
    for env, args, said in [
        (
            {"REGCAST_JOBS_IN_FLIGHT": "0"},
            [],
            "Error: REGCAST_JOBS_IN_FLIGHT: Input should be greater than or equal to 1",
        ),
        ({"REGCAST_PORT": "abc"}, [], "Error: REGCAST_PORT: Input should be a valid integer"),
        ({"REGCAST_CHUNK_CAPS": "{bad"}, [], "Error: REGCAST_CHUNK_CAPS: not JSON"),
        ({}, ["--database-url", "not a url"], "--database-url / REGCAST_DATABASE_URL: Could not parse"),
    ]:
        r = subprocess.run(
            [REGCAST, "jobs", *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, **FAST, **env},
            stdin=subprocess.DEVNULL,
        )
        assert r.returncode == 2, r.stderr
        assert said in r.stderr
        assert "Traceback" not in r.stderr
        assert "validation error" not in r.stderr and "errors.pydantic.dev" not in r.stderr
    assert list(tmp_path.iterdir()) == []  # nothing created


def _copy_with_input(args: list[str], stdin: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [REGCAST, "copy", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **FAST, **env},
    )


def test_credentials_from_a_file_stdin_or_the_environment(
    repo: str, tmp_path: Path, basic_reg: RegistryServer, token_reg: RegistryServer, ca_bundle: Path
) -> None:
    """Credentials need not be on the command line (where ``ps`` shows them)."""
    images.image().push(basic_reg.http(), repo, "v1")
    creds = tmp_path / "src-creds"
    creds.write_text(BASIC + "\n")
    common = ["--ca-bundle", str(ca_bundle), f"{basic_reg.host}/{repo}:v1"]
    r = _copy_with_input(
        ["--src-creds-file", str(creds), "--dest-creds-file", "-", *common, f"{token_reg.host}/{repo}/a"], TOKEN, {}
    )
    assert r.returncode == 0, r.stderr
    assert_same_image(basic_reg.http(), repo, "v1", token_reg.http(), f"{repo}/a", "v1")
    env = {"REGCAST_SRC_CREDS": BASIC, "REGCAST_DEST_CREDS": TOKEN}
    r = _copy_with_input([*common, f"{token_reg.host}/{repo}/b"], "", env)
    assert r.returncode == 0, r.stderr
    assert_same_image(basic_reg.http(), repo, "v1", token_reg.http(), f"{repo}/b", "v1")
    for out in (r.stdout, r.stderr):
        assert BASIC.split(":")[1] not in out and TOKEN.split(":")[1] not in out
    # wrong ones from the environment are used (and fail), so the variable really is read
    r = _copy_with_input([*common, f"{token_reg.host}/{repo}/c"], "", {**env, "REGCAST_SRC_CREDS": "alice:nope"})
    assert r.returncode == 1 and "401" in r.stderr
    # mistakes are usage errors naming the option
    r = _copy_with_input(["--src-creds", BASIC, "--src-creds-file", str(creds), *common, f"{token_reg.host}/x"], "", {})
    assert r.returncode == 2 and "--src-creds or --src-creds-file, not both" in r.stderr
    r = _copy_with_input(["--src-creds-file", "-", "--dest-creds-file", "-", *common, f"{token_reg.host}/x"], "", {})
    assert r.returncode == 2 and "can read standard input" in r.stderr
    empty = tmp_path / "empty"
    empty.write_text("")
    r = _copy_with_input(["--src-creds-file", str(empty), *common, f"{token_reg.host}/x"], "", {})
    assert r.returncode == 2 and f"--src-creds-file: {empty} is empty" in r.stderr


def test_serve_on_a_busy_port_fails_at_once_without_starting(tmp_path: Path) -> None:
    """Defect 7: bind first; a busy port is one error line, exit 1, nothing started, no "serving on"."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = subprocess.run(
            [REGCAST, "serve", "--port", str(port)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, **FAST},
            stdin=subprocess.DEVNULL,
        )
    assert r.returncode == 1
    assert f"error: cannot listen on 127.0.0.1:{port}: Address already in use" in r.stderr
    out = r.stdout + r.stderr
    assert "serving on" not in out and "startup" not in out and "worker" not in out
    assert "Traceback" not in out


def test_submit_takes_credentials_from_stdin_or_the_environment(
    repo: str, tmp_path: Path, token_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    """``regcast submit`` (to a service) reads them the same ways as ``copy``."""
    images.image().push(token_reg.http(), repo, "v1")
    svc = Service(tmp_path).start()
    try:
        args = ["submit", "--server", svc.url, "--wait", f"{token_reg.host}/{repo}:v1"]
        for extra, stdin, env, name in [
            (["--src-creds-file", "-"], TOKEN + "\n", {}, "a"),
            ([], "", {"REGCAST_SRC_CREDS": TOKEN}, "b"),
        ]:
            r = subprocess.run(
                [REGCAST, *args[:1], *extra, *args[1:], f"{open_reg.host}/{repo}/{name}"],
                input=stdin,
                capture_output=True,
                text=True,
                timeout=180,
                env={**os.environ, **FAST, **env},
            )
            assert r.returncode == 0, r.stdout + r.stderr
            assert_same_image(token_reg.http(), repo, "v1", open_reg.http(), f"{repo}/{name}", "v1")
            assert TOKEN.split(":")[1] not in r.stdout + r.stderr
        # the tag is there now: --no-overwrite skips it, and `regcast jobs ID` says why
        r = subprocess.run(
            [REGCAST, *args[:1], "--no-overwrite", *args[1:], f"{open_reg.host}/{repo}/a"],
            capture_output=True,
            text=True,
            timeout=180,
            env={**os.environ, **FAST, "REGCAST_SRC_CREDS": TOKEN},
        )
        assert r.returncode == 0, r.stdout + r.stderr
        job = r.stdout.split()[0]
        shown = subprocess.run(
            [REGCAST, "jobs", job],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            env={k: v for k, v in os.environ.items() if k != "COLUMNS"},  # a pipe, as in a CI log: no width
        )
        assert shown.returncode == 0, shown.stderr
        assert "in sync True" in shown.stdout and "SKIPPED (up-to-date)" in shown.stdout, shown.stdout
        assert f"{repo}/a:v1" in shown.stdout, shown.stdout  # names whole, not cut to 80 columns
    finally:
        svc.stop()
