"""Loaded by service subprocesses started with ``JAIL_ENV``: only loopback is reachable."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from tests.support import loopback

loopback.install()
