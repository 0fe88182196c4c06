"""Scenario x (issue 19): two fast targets alone, then beside a target behind a 5 MB/s upload link.

Rows: the fast targets alone (the whole copy); with the slow target, the moment both fast targets
hold the tag (polled HEADs) and the end of the copy; the slow link's own limit (bytes / rate).
Goals: fast targets in sync within 1.3x their time alone; the slow one within 1.1x of its link.
"""

from __future__ import annotations

import subprocess
import time
import urllib.request

from tests.support.proxy import TcpProxy

from benchmarks.runner import REGCAST, Bench, MiB, Result, build_image, report

RATE = 5_000_000  # bytes/s of the slow target's upload link


def _tagged(host: str) -> bool:
    req = urllib.request.Request(f"http://{host}/v2/bench/s/manifests/v1", method="HEAD")
    req.add_header(
        "Accept", "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def _copy(src_ref: str, dests: list[str], fast_hosts: list[str]) -> tuple[float, float]:
    """(seconds until every fast host has the tag, seconds until the copy ended)."""
    t = time.perf_counter()
    proc = subprocess.Popen([REGCAST, "copy", src_ref, *dests], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    fast_at = 0.0
    while proc.poll() is None:
        if not fast_at and all(_tagged(h) for h in fast_hosts):
            fast_at = time.perf_counter() - t
        time.sleep(0.05)
    end = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"regcast failed: {proc.stderr.read().decode()[-500:] if proc.stderr else ''}")
    return fast_at or end, end


def scenario_detach(bench: Bench, out: list[str], quick: bool) -> None:
    src = bench.registries(1)[0]
    img = build_image(bench.workdir / "img-s", src, "bench/s", [(4 if quick else 16) * MiB] * 4)
    src_ref = f"{src.host}/bench/s:v1"
    results = {k: Result() for k in ("fast alone", "fast in sync, slow beside", "slow done", "slow link limit")}
    try:
        for _ in range(bench.rounds):
            fast = bench.registries(2)
            try:
                hosts = [r.host for r in fast]
                results["fast alone"].seconds.append(_copy(src_ref, [f"{h}/bench/s:v1" for h in hosts], hosts)[1])
            finally:
                bench.drop(fast)
            fast, slow = bench.registries(2), bench.registries(1)[0]
            link = TcpProxy(slow.port, upload_rate=RATE).start()
            try:
                hosts = [r.host for r in fast]
                dests = [f"{h}/bench/s:v1" for h in hosts] + [f"127.0.0.1:{link.port}/bench/s:v1"]
                fast_at, end = _copy(src_ref, dests, hosts)
            finally:
                link.stop()
                bench.drop([*fast, slow])
            results["fast in sync, slow beside"].seconds.append(fast_at)
            results["slow done"].seconds.append(end)
            results["slow link limit"].seconds.append(img.total / RATE)
    finally:
        bench.drop([src])
    report(out, f"x: {img.total / MiB:.0f} MiB, 2 fast targets and one behind a {RATE / 1e6:.0f} MB/s link", results)
