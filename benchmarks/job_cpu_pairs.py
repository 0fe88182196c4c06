"""Scenario j side by side (issue 17): one ``regcast serve`` per code, all up at once, jobs alternating.

Each code is ``NAME=SRC[:LOOP:HTTP]``: ``SRC`` a checkout's ``src`` put first on ``PYTHONPATH`` (empty:
the installed regcast), ``LOOP``/``HTTP`` uvicorn's loop and HTTP parser forced on that service (for
code older than the explicit choice, where uvicorn's "auto" would take whatever is installed).
Per job, as ``service_cost.measure_job_cpu``: CPU of every thread (schedstat) from the POST until the
job is over; the GET-polled jobs' "job only" takes out the status GETs at the client's pace and the
idle service; the next job of each service is followed in its SQLite file (no GETs). Per service the
main thread (the event loop) and the other threads (the store's) are shown apart.

    python -m benchmarks.job_cpu_pairs --jobs 40 old=/tmp/old/src:asyncio:h11 new=
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.runner import Bench, ServiceRunner, build_image
from benchmarks.service_cost import _calibrate, _wait, _wait_in_database

# run the regcast script with uvicorn's loop/http forced (argv: LOOP HTTP REGCAST ARGS...)
FORCE = """
import runpy, sys, uvicorn
loop, http = sys.argv[1:3]
init = uvicorn.Config.__init__
def forced(self, app, *a, **kw):
    kw.update(loop=loop, http=http)
    init(self, app, *a, **kw)
uvicorn.Config.__init__ = forced
sys.argv = sys.argv[3:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def threads_ns(pid: int) -> dict[int, int]:
    """CPU nanoseconds of each live thread of ``pid``."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):
            out[int(task.name)] = int((task / "schedstat").read_text().split()[0])
    return out


@dataclass
class Code:
    name: str
    service: ServiceRunner
    db: sqlite3.Connection
    idle: float = 0.0
    per_get: float = 0.0
    per_get_burst: float = 0.0
    rows: dict[str, list[float]] = field(default_factory=dict)

    def add(self, key: str, value: float) -> None:
        self.rows.setdefault(key, []).append(value)


def start(bench: Bench, spec: str) -> Code:
    name, _, rest = spec.partition("=")
    src, _, forced = rest.partition(":")
    env = {"REGCAST_POLL_INTERVAL": "1", "REGCAST_JOBS_IN_FLIGHT": "4"}
    if src:
        env["PYTHONPATH"] = src
    prefix = [sys.executable, "-c", FORCE, *forced.split(":")] if forced else None
    service = ServiceRunner(bench.workdir, env=env, prefix=prefix)
    return Code(name, service, sqlite3.connect(f"file:{service.dir / 'regcast.db'}?mode=ro", uri=True))


def one_job(code: Code, src: str, repo: str, targets: list, polled: bool) -> None:
    pid = code.service.proc.pid
    t, before = time.perf_counter(), threads_ns(pid)
    job_id = code.service.post(src, repo, targets)
    gets = _wait(code.service, job_id) if polled else 0
    if not polled:
        _wait_in_database(code.db, job_id)
    after, wall = threads_ns(pid), time.perf_counter() - t
    main = (after.get(pid, 0) - before.get(pid, 0)) / 1e6
    other = sum(v - before.get(k, 0) for k, v in after.items() if k != pid) / 1e6
    idle = wall * code.idle
    if polled:
        code.add("POST to FINISHED", main + other)
        code.add("job only", main + other - gets * code.per_get - idle)
        code.add("job only, GETs at a burst's cost", main + other - gets * code.per_get_burst - idle)
    else:
        code.add("no GETs", main + other - idle)
        code.add("no GETs: loop thread", main - idle)
        code.add("no GETs: other threads", other)


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.job_cpu_pairs", description=__doc__)
    ap.add_argument("codes", nargs="+", help="NAME=SRC[:LOOP:HTTP]")
    ap.add_argument("--jobs", type=int, default=40, help="jobs per code and kind (GET-polled, unpolled)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="regcast-pairs-") as tmp:
        bench = Bench(Path(tmp), 1)
        src = bench.registries(1)[0]
        targets = bench.registries(2)
        n = len(args.codes) * (2 * args.jobs + 1)
        imgs = iter([build_image(Path(tmp) / f"i{i}", src, f"pairs/j{i}", [256 << 10, 64 << 10]) for i in range(n)])
        codes = [start(bench, spec) for spec in args.codes]
        try:
            for c in codes:
                first = c.service.post(src.host, next(imgs).repo, targets)
                _wait(c.service, first)
                c.idle, c.per_get_burst, c.per_get = _calibrate(c.service, first)
            load = [os.getloadavg()[0]]
            for j in range(2 * args.jobs):
                for c in codes if j % 4 < 2 else reversed(codes):
                    one_job(c, src.host, next(imgs).repo, targets, polled=j % 2 == 0)
            load.append(os.getloadavg()[0])
        finally:
            for c in codes:
                c.db.close()
                c.service.stop()
            bench.drop([src, *targets])
    print(f"\n{args.jobs} + {args.jobs} jobs per code, load average {load[0]:.1f} -> {load[1]:.1f}; CPU ms, medians\n")
    keys = list(codes[0].rows)
    print("| code | " + " | ".join(keys) + " | status GET | idle per s |")
    print("| --- " * (len(keys) + 3) + "|")
    for c in codes:
        cells = " | ".join(f"{statistics.median(c.rows[k]):.1f}" for k in keys)
        print(f"| {c.name} | {cells} | {c.per_get:.2f} | {c.idle:.2f} |")
    base = codes[0]
    for c in codes[1:]:  # paired: the jobs ran next to each other
        diffs = {k: statistics.median(b - a for a, b in zip(base.rows[k], c.rows[k], strict=True)) for k in keys}
        print(
            f"{c.name} - {base.name}, median of paired differences: "
            + ", ".join(f"{k} {v:+.1f}" for k, v in diffs.items())
        )


if __name__ == "__main__":
    main()
