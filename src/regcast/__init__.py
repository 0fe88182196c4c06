"""regcast: copy one container image from one registry to many, over the registry HTTP API only."""

from __future__ import annotations

# The one version: setuptools (pyproject's dynamic version), the Makefile, the API, `--version` and the
# User-Agent read it here. A constant, not the package metadata: importlib.metadata cost each command 22 M
# instructions (#17, start-up).
__version__ = "0.1.0"
USER_AGENT = f"regcast/{__version__}"
