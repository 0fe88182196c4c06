"""The real ``regcast`` executable of this virtualenv, run as users run it."""

from __future__ import annotations

import os
import subprocess

from tests.support.service import FAST, REGCAST

__all__ = ["REGCAST", "regcast"]


def regcast(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [REGCAST, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **FAST, **(env or {})},
        stdin=subprocess.DEVNULL,
    )
