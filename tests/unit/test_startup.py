"""Start-up (#17): each command imports only what it needs; asserted on module lists, never on seconds.

Each case runs the CLI in a fresh interpreter under ``python -X importtime`` and reads the modules it
imported from that report: a heavy library imported at module level anywhere on the path shows up here.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest

import regcast
from regcast.console.progress import Lines, PlainConsole, display_for
from tests.support.registry import free_port
from tests.support.service import FAST

# The service's and the remote commands' libraries: `--help`, `--version` and `copy` need none of them.
SERVICE_ONLY = (
    "fastapi",
    "starlette",
    "uvicorn",
    "uvloop",
    "httptools",
    "sqlalchemy",
    "alembic",
    "psycopg",
    "prometheus_client",
    "jinja2",
    "httpx",
    "pygments",
    "cryptography",
)
# What only a command's body needs: settings, the registry transport, progress bars.
COMMAND_ONLY = ("pydantic", "pydantic_core", "pydantic_settings", "dotenv", "aiohttp", "yarl", "rich", "asyncio")


def run_cli(*argv: str, env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """``regcast ARGV`` in a new interpreter; its result and the top-level packages of every module it imported."""
    code = f"import sys; sys.argv = ['regcast', *{list(argv)!r}]; from regcast.cli import main; main()"
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={
            k: v for k, v in {**os.environ, **FAST, **(env or {})}.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")
        },
        stdin=subprocess.DEVNULL,
    )
    modules = {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    modules.discard("imported package")  # the report's header line
    assert "regcast.cli" in modules, proc.stderr[-2000:]  # the report was read: an empty set proves nothing
    return proc, modules


def tops(modules: set[str]) -> set[str]:
    return {m.split(".")[0] for m in modules}


def test_help_imports_click_and_the_cli_only() -> None:
    proc, modules = run_cli("--help")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Usage: regcast" in proc.stdout and "copy" in proc.stdout
    assert not tops(modules) & {*SERVICE_ONLY, *COMMAND_ONLY}
    assert {m for m in modules if m.startswith("regcast")} == {
        "regcast",
        "regcast.cli",
        "regcast.cli._common",
        "regcast.cli.copy",
        "regcast.cli.jobs",
        "regcast.cli.service",
        "regcast.cli.sync",
        "regcast.console",
        "regcast.console.remote",
    }
    assert "importlib.metadata" not in modules


@pytest.mark.parametrize("command", ["copy", "serve", "worker", "jobs", "sync", "submit"])
def test_command_help_imports_no_command_library(command: str) -> None:
    """The group callback runs before the command reads --help: it must not build Settings (pydantic)."""
    proc, modules = run_cli(command, "--help")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith(f"Usage: regcast {command} ")
    assert not tops(modules) & {*SERVICE_ONLY, *COMMAND_ONLY}
    assert not {m for m in modules if m.startswith(("regcast.config", "regcast.ops", "regcast.registry"))}


def test_version_imports_no_command_library() -> None:
    proc, modules = run_cli("--version")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout == f"regcast, version {regcast.__version__}\n"
    assert not tops(modules) & {*SERVICE_ONLY, *COMMAND_ONLY}
    assert "importlib.metadata" not in modules  # the version is a constant in regcast/__init__.py, not the metadata


def test_copy_imports_no_service_library() -> None:
    """The whole copy path, up to its first request (to a closed loopback port), without the service's libraries
    or pydantic (REGCAST_REQUEST_RETRIES=1 is plainly valid).

    Its stderr is a pipe, not a terminal: progress is plain lines, and rich is not imported either.
    """
    port = free_port()  # nothing listens there
    proc, modules = run_cli(
        "copy", f"127.0.0.1:{port}/src/img:1", f"127.0.0.1:{port}/dst/img", env={"REGCAST_REQUEST_RETRIES": "1"}
    )
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"registry 127.0.0.1:{port}" in errors[0], proc.stderr[-2000:]
    assert "connection failed" in errors[0]
    assert "aiohttp" in tops(modules) and "regcast.config" in modules  # it did reach the transport and the settings
    # pydantic validates only settings that are not plainly valid (config_source.py): none here
    assert not tops(modules) & {*SERVICE_ONLY, "rich", "pydantic", "pydantic_core", "pydantic_settings"}
    assert f"progress 127.0.0.1:{port}/dst/img:1 PENDING 0 B/0 B" in proc.stderr.splitlines()
    assert not {m for m in modules if m.startswith(("regcast.api", "regcast.jobs", "regcast.mirrors"))}
    # nor the other commands' modules, nor what reads image layouts (no oci: reference here)
    others = {"regcast.cli.service", "regcast.cli.jobs", "regcast.cli.sync", "regcast.console.remote"}
    assert not modules & {*others, "regcast.layouts.repository", "regcast.layouts.archive"}
    assert "importlib.metadata" not in modules  # the User-Agent's version is a constant


def test_plain_progress_lines_escape_control_characters() -> None:
    out = io.StringIO()
    display = display_for(PlainConsole(out), ["oci:/tmp/a\x1b[2Jb:1"], 10.0)
    assert isinstance(display, Lines)
    display.update("oci:/tmp/a\x1b[2Jb:1", "RUNNING", 1536, 3072)
    display.print_lines()
    assert out.getvalue() == "progress oci:/tmp/a\\x1b[2Jb:1 RUNNING 1.5 KiB/3.0 KiB (50%)\n"


def test_copy_runs_with_the_collector_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """The collector is off only while copy starts up (imports, settings, clients): on for the copy and after it,
    with what start-up made frozen (out of the collector's walks)."""
    import gc

    from click.testing import CliRunner

    from regcast._exceptions import RegistryUnreachable
    from regcast.cli import main
    from regcast.transfer.engine import CopyEngine

    seen: list[tuple[bool, bool]] = []

    async def copy(self: CopyEngine, *args: object, **kwargs: object) -> None:
        seen.append((gc.isenabled(), gc.get_freeze_count() > 0))
        raise RegistryUnreachable("stopped here")

    monkeypatch.setattr(CopyEngine, "copy", copy)
    port = free_port()
    result = CliRunner().invoke(main, ["copy", f"127.0.0.1:{port}/a:1", f"127.0.0.1:{port}/b"])
    assert result.exit_code == 1 and "stopped here" in result.output
    gc.unfreeze()  # the copy froze this test process's heap
    assert seen == [(True, True)] and gc.isenabled()
