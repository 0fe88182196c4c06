"""regcast: copy one container image from one registry to many, over the registry HTTP API only."""

from __future__ import annotations

from importlib.metadata import version

__version__ = version("regcast")  # the one source is pyproject.toml; the API, CLI and User-Agent read it here
USER_AGENT = f"regcast/{__version__}"
