"""Scenario fd (issue 19): how many detaches happen with NO slow target, for each grace.

Every target here is as fast as the others (a, b, c of the runner: a WAN source, loopback, many
small layers), so each detach is a false one: it costs a second source read of the rest of the
blob (unless the copy spools). Counted from the ``-v`` log lines of ``regcast copy`` ("detached
from blob"), with ``REGCAST_DETACH_AFTER`` set per run; the shortest grace with none is the default.
"""

from __future__ import annotations

import os
import subprocess
import time

from tests.support.proxy import TcpProxy

from benchmarks.runner import REGCAST, Bench, MiB, build_image

GRACES = tuple(os.environ.get("BENCH_FD_GRACES", "0.1,0.5,1,2").split(","))  # a subset: BENCH_FD_GRACES=1
SETUPS = {
    "a (WAN source)": (4, True),
    "b": (4, False),
    "c": (60, False),
}  # layers (big, or 100 KiB for c), WAN  # 0.1: a control, to show the count can be non-zero


def _detaches(src_ref: str, dests: list[str], grace: str) -> tuple[int, float]:
    """(detaches logged, wall seconds) of one copy with ``grace``."""
    env = {**os.environ, "REGCAST_DETACH_AFTER": grace}
    t = time.perf_counter()
    proc = subprocess.run([REGCAST, "-v", "copy", src_ref, *dests], env=env, capture_output=True, text=True)
    secs = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"regcast failed: {proc.stderr[-500:]}")
    return proc.stderr.count("detached from blob"), secs


def scenario_false_detach(bench: Bench, out: list[str], quick: bool) -> None:
    big = (8 if quick else 64) * MiB
    setups = {k: ([big if k != "c" else 100 * 1024] * n, wan) for k, (n, wan) in SETUPS.items()}
    counts = {(s, g): [0, 0, 0.0] for s in setups for g in GRACES}  # detaches, runs, seconds
    for name, (sizes, wan) in setups.items():
        src = bench.registries(1)[0]
        img = build_image(bench.workdir / f"img-fd-{name[0]}", src, f"bench/fd{name[0]}", sizes)
        proxy = TcpProxy(src.port, rate=40e6, connect_delay=0.02).start() if wan else None
        src_host = f"127.0.0.1:{proxy.port}" if proxy else src.host
        try:
            for _ in range(bench.rounds):
                for grace in GRACES:  # interleaved: each grace sees the same load
                    targets = bench.registries(3)
                    try:
                        n, secs = _detaches(
                            f"{src_host}/{img.repo}:v1", [f"{t.host}/{img.repo}:v1" for t in targets], grace
                        )
                    finally:
                        bench.drop(targets)
                    row = counts[(name, grace)]
                    row[0] += n
                    row[1] += 1
                    row[2] += secs
                    print(f"fd {name} grace {grace}s: {n} detaches in {secs:.1f}s", flush=True)
        finally:
            if proxy:
                proxy.stop()
            bench.drop([src])
    out.append(f"\n#### fd: detaches with no slow target (3 equal targets), rounds={bench.rounds}\n")
    out.append("| scenario | grace s | detaches | runs | mean s |")
    out.append("| --- | --- | --- | --- | --- |")
    for (name, grace), (n, runs, secs) in counts.items():
        out.append(f"| {name} | {grace} | {n} | {runs} | {secs / max(1, runs):.2f} |")
