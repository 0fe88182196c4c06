"""Scenario c side by side (issue 17): one ``regcast serve`` per code, rounds interleaved with the limit.

Each code is ``NAME=SRC[,VAR=VALUE...]``: ``SRC`` a checkout's ``src`` put first on ``PYTHONPATH``
(empty: the installed regcast), the ``REGCAST_*`` settings given to that service only. Every round
copies 60 small layers to 3 fresh targets once per code and once with the limit (``Bench.limit``),
the order of the codes turned round every other round; a warm-up job per service is left out. CPU
comes from every thread's schedstat (the services' and the registries'), so a Go registry's threads
are counted. ``--limit-parts`` first measures what the limit pays apart: its POSTs (before its
clock), its GET part and its PUT part, with the registries' and the curl processes' CPU.

    python -m benchmarks.c_pairs --rounds 12 old=/tmp/old/src new= new32=,REGCAST_SMALL_BLOBS_IN_FLIGHT=32
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tests.support.registry import RegistryServer

from benchmarks.runner import Bench, Image, ServiceRunner, build_image, limit_commands


def cpu(pid: int) -> float:
    """CPU seconds of every live thread of ``pid``."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


def registries_cpu(regs: list[RegistryServer]) -> float:
    return sum(cpu(r.proc.pid) for r in regs if r.proc)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def limit_parts(bench: Bench, src: RegistryServer, img: Image, rounds: int) -> None:
    """The limit's POSTs, GET part and PUT part apart: wall, registries' CPU, curl's CPU."""
    rows = []
    for _ in range(rounds):
        targets = bench.registries(3)
        regs = [src, *targets]
        t, r = time.perf_counter(), registries_cpu(regs)
        gets, puts = limit_commands(src.host, img, targets)  # the POSTs: timed here, before the limit's clock
        row = [time.perf_counter() - t, registries_cpu(regs) - r]
        for cmds in (gets, puts):
            k, r = children_cpu(), registries_cpu(regs)
            row += [bench._all_at_once(cmds), registries_cpu(regs) - r, children_cpu() - k]
        rows.append(row)
        bench.drop(targets)
    m = [statistics.median(x) for x in zip(*rows, strict=True)]
    print(f"limit apart, {rounds} rounds, medians (load {os.getloadavg()[0]:.1f}):")
    print(f"  POSTs (before its clock): {m[0]:.2f} s, registries {m[1]:.2f} CPU-s")
    print(f"  GET part: {m[2]:.2f} s, registries {m[3]:.2f} CPU-s, curl {m[4]:.2f} CPU-s")
    print(f"  PUT part: {m[5]:.2f} s, registries {m[6]:.2f} CPU-s, curl {m[7]:.2f} CPU-s", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.c_pairs", description=__doc__)
    ap.add_argument("codes", nargs="+", help="NAME=SRC[,REGCAST_X=VALUE...]")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--small-kib", type=int, default=32)
    ap.add_argument("--limit-parts", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="regcast-c-pairs-") as tmp:
        bench = Bench(Path(tmp), args.rounds, None)
        src = bench.registries(1)[0]
        img = build_image(Path(tmp) / "img", src, "bench/c", [args.small_kib * 1024] * 60)
        if args.limit_parts:
            limit_parts(bench, src, img, args.rounds)
        services: dict[str, ServiceRunner] = {}
        try:
            for code in args.codes:
                name, spec = code.split("=", 1)
                path, *settings = spec.split(",")
                env = dict(s.split("=", 1) for s in settings)
                if path:
                    env["PYTHONPATH"] = path + os.pathsep + os.environ.get("PYTHONPATH", "")
                services[name] = ServiceRunner(Path(tmp), env=env)
            for svc in services.values():  # warm-up: imports, first connections
                targets = bench.registries(3)
                svc.copy(src.host, img, targets)
                bench.drop(targets)
            rows: dict[str, dict[str, list[float]]] = {
                n: {"wall": [], "cpu": [], "reg": []} for n in ["limit", *services]
            }
            for i in range(args.rounds):
                runs: list[tuple[str, ServiceRunner | None]] = [("limit", None)]
                runs += list(services.items())[:: -1 if i % 2 else 1]
                for name, run in runs:
                    targets = bench.registries(3)
                    regs = [src, *targets]
                    r, c = registries_cpu(regs), cpu(run.proc.pid) if run else 0.0
                    wall = run.copy(src.host, img, targets)[0] if run else bench.limit(src.host, img, targets)[0]
                    rows[name]["reg"].append(registries_cpu(regs) - r)
                    rows[name]["cpu"].append(cpu(run.proc.pid) - c if run else 0.0)
                    rows[name]["wall"].append(wall)
                    bench.drop(targets)
                line = "  ".join(f"{n} {v['wall'][-1]:.2f}" for n, v in rows.items())
                print(f"round {i}: {line}  (load {os.getloadavg()[0]:.1f})", flush=True)
        finally:
            for svc in services.values():
                svc.stop()
            bench.drop([src])
    report(rows)


def report(rows: dict[str, dict[str, list[float]]]) -> None:
    print("\n| code | wall median s | x limit (median of per-round ratios) | service CPU s | registries CPU s |")
    print("| --- | --- | --- | --- | --- |")
    limit = rows["limit"]["wall"]
    for name, v in rows.items():
        ratio = (
            "" if name == "limit" else f"{statistics.median(w / x for w, x in zip(v['wall'], limit, strict=True)):.3f}"
        )
        service = "" if name == "limit" else f"{statistics.median(v['cpu']):.3f}"
        print(
            f"| {name} | {statistics.median(v['wall']):.3f} | {ratio} | {service} | {statistics.median(v['reg']):.3f} |"
        )
    print(f"load average now: {' '.join(f'{x:.1f}' for x in os.getloadavg())}", file=sys.stderr)


if __name__ == "__main__":
    main()
