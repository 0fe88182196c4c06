"""Mirror documents built to exhaust the service: aliases that expand exponentially, nesting past the stack."""

from __future__ import annotations

import time
from pathlib import Path

from tests.support.loopback import JAIL_ENV
from tests.support.service import Service


def laughs(levels: int) -> str:
    """Under 1 KiB of YAML: ten aliases of the level below, ``levels`` deep (10^levels values)."""
    lines = ['l0: &l0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, levels)]
    return "\n".join([*lines, "version: 1", f"mirrors: *l{levels - 1}"])


def test_a_document_of_exploding_aliases_or_endless_nesting_is_400_at_once(tmp_path: Path) -> None:
    """Ten aliases of ten (the billion laughs) were walked value by value on the API's event loop (ten levels:
    hours, every route and job of the process stalled); nesting past the stack answered 500."""
    svc = Service(tmp_path, JAIL_ENV).start()
    try:
        started = time.monotonic()
        r = svc.http.post("/api/mirrors", content=laughs(10), headers={"Content-Type": "application/yaml"}, timeout=30)
        assert time.monotonic() - started < 10
        assert r.status_code == 400, r.text
        assert (
            r.json()["msg"]
            == "Failed to parse data: document: over 250000 values once its aliases (*name) are followed"
        )
        r = svc.http.post("/api/mirrors/plan", content="[" * 100_000, timeout=30)
        assert r.status_code == 400, r.text
        assert r.json()["msg"] == "Failed to parse data: document: nested too deeply"
        assert svc.http.get("/healthz").status_code == 200
    finally:
        svc.stop()
