"""``python -m benchmarks --no-skopeo`` leaves skopeo out everywhere, its header included.

A stand-in ``skopeo`` first on PATH records every call: with ``--no-skopeo`` it must not be named
in the header nor run by a scenario that would otherwise run it (``s``: ``skopeo --version``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]


def _bench(tmp_path: Path, *args: str) -> tuple[str, list[str]]:
    """The bench's first stdout line, and the calls the stand-in skopeo received."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "skopeo-calls"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "skopeo"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {calls}\necho "skopeo version 0.0.0-fake"\n')
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--rounds", "1", "--quick", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.splitlines()[0], calls.read_text().splitlines() if calls.exists() else []


def test_no_skopeo_leaves_it_out_of_the_header_and_the_scenarios(tmp_path: Path) -> None:
    header, calls = _bench(tmp_path, "--no-skopeo", "--scenarios", "s")
    assert "skopeo left out (--no-skopeo)" in header
    assert str(tmp_path) not in header  # its path is not shown
    assert calls == []  # never run, not even ``skopeo --version``


def test_without_the_flag_the_installed_skopeo_is_named_and_used(tmp_path: Path) -> None:
    header, calls = _bench(tmp_path, "--scenarios", "s")
    assert header.endswith(f"; skopeo: {tmp_path / 'bin' / 'skopeo'}")
    assert "--version" in calls
