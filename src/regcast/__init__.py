"""regcast: copy one container image to many registries over the registry HTTP API."""

from __future__ import annotations

__version__ = "0.1.0"
