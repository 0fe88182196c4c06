"""Scenario p (push-triggered mirroring): the lag from a tag's push at a source to that tag at every target.

A real distribution source notifies a real ``regcast serve`` (its ``notifications`` endpoint);
each round pushes a small image under a new tag and times from the tag's manifest PUT to the
moment all three targets answer the tag (polled with HEADs every 20 ms). Goal: under 2 s on loopback.
"""

from __future__ import annotations

import secrets
import statistics
import time
from typing import Any

from tests.support import images
from tests.support.registry import RegistryServer
from tests.support.service import Service

SECRET = secrets.token_hex(16)
REPO = "bench/pushed"


def _wait_everywhere(targets: list[RegistryServer], tag: str, timeout: float = 60) -> float:
    https = [t.http() for t in targets]
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(h.client.head(f"{REPO}/manifests/{tag}", headers=_accept()).status_code == 200 for h in https):
                return time.perf_counter()
            time.sleep(0.02)
        raise RuntimeError(f"{tag} did not reach every target in {timeout} s")
    finally:
        for h in https:
            h.close()


def _accept() -> dict[str, str]:
    return {"Accept": f"{images.OCI_MANIFEST}, {images.DOCKER_MANIFEST}"}


def scenario_push(bench: Any, out: list[str], rounds: int) -> None:
    svc = Service(bench.workdir / "push-svc", {"REGCAST_SECRET_KEY": SECRET + "-key"}).start()
    source = RegistryServer(
        "push-src",
        bench.workdir / "push-src",
        notify=(f"{svc.url}/api/events/src", {"Authorization": f"Bearer {SECRET}"}),
    ).start()
    targets = bench.registries(3)
    lags: list[float] = []
    try:
        doc = {
            "version": 1,
            "registries": [{"host": source.host, "events": {"name": "src", "secret": SECRET}}],
            "mirrors": [{"name": "pushed", "source": f"{source.host}/{REPO}", "targets": [t.host for t in targets]}],
        }
        r = svc.http.post("/api/mirrors", json=doc)
        assert r.status_code == 201, r.text
        http = source.http()
        for i in range(max(rounds, 5)):
            img = images.image([images.layer_bytes(32 * 1024), images.layer_bytes(32 * 1024)])
            for digest, data in img.blobs.items():
                http.push_blob(REPO, data, digest)
            tag = f"v{i}"
            t0 = time.perf_counter()
            http.push_manifest(REPO, tag, img.root.raw, img.root.media_type)
            lags.append(_wait_everywhere(targets, tag) - t0)
        http.close()
        server = [
            run["lag_seconds"]
            for run in svc.http.get("/api/mirrors/pushed/runs").json()["runs"]
            if run.get("lag_seconds") is not None
        ]
    finally:
        svc.stop()
        bench.drop([source, *targets])
    line = (
        f"\n### p: push-triggered mirroring, small image to 3 targets\n\n"
        f"push to in sync at every target: median {statistics.median(lags):.2f} s, "
        f"max {max(lags):.2f} s over {len(lags)} pushes (goal: under 2 s); "
        f"regcast's own lag_seconds median {statistics.median(server) if server else float('nan'):.2f} s"
    )
    print(line, flush=True)
    out.append(line)
