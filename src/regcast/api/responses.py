"""Seed-style JSON bodies: ``json.dumps`` defaults (``", "`` and ``": "``), as the seed's were."""

from __future__ import annotations

import json
from typing import Any

from fastapi.responses import JSONResponse


class SeedJSON(JSONResponse):
    def render(self, content: Any) -> bytes:
        return json.dumps(content).encode()


def error(status: int, msg: str) -> SeedJSON:
    """The seed's error body: ``{"status": "error", "msg": ...}``."""
    return SeedJSON({"status": "error", "msg": msg}, status_code=status)
