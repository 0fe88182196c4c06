"""Scenarios j and rss (#17): what one service job costs in CPU, and the service's resident memory.

j: small jobs (a 256 KiB and a 64 KiB layer, 2 targets) one after the other through one ``regcast
serve`` with its default settings (poll interval 1 s: a POST wakes the worker at once). A job's
CPU is the service's CPU from the POST until the client sees FINISHED, read from every thread's
``schedstat`` (nanoseconds; ``/proc/<pid>/stat`` counts 10 ms ticks). The client polls the status
every 50 ms; those GETs, and what the idle service spends meanwhile (heartbeats, claim polls), are
measured on their own and taken out in the "job only" row. A status GET is measured at the
client's pace (one every 50 ms): one GET 50 ms after another costs the service more than one of a
burst (a thread and a loop woken each time; ~2.2-2.9 against ~1.0-1.6 ms), and taking out the
burst's figure left ~1 ms per GET, ~7 ms per job, in "job only". Every other job is followed
without GETs at all, its state read from the service's SQLite file: a check of that row.

rss: peak resident memory (VmHWM) of a fresh service per case, so one case's peak cannot hide
another's, restarted on one database (a first start migrates, and keeps Alembic loaded): idle,
one small job, 256 MiB (4 x 64 MiB) to 3 targets, one 1 GiB layer to 3 targets, and 20
concurrent jobs of a 16 MiB layer each to 3 targets.
"""

from __future__ import annotations

import contextlib
import sqlite3
import statistics
import time
import urllib.request
from pathlib import Path

from benchmarks.runner import Bench, Image, MiB, ServiceRunner, build_image, vm_hwm

POLL = 0.05  # seconds between a client's status GETs in scenario j


def cpu_ns(pid: int) -> int:
    """CPU time of every live thread of ``pid`` in nanoseconds (schedstat's first field)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += int((task / "schedstat").read_text().split()[0])
    return total


def vm_rss(pid: int) -> int:
    """Current resident set size in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _status_gets(service: ServiceRunner, job_id: str, n: int) -> None:
    for _ in range(n):
        urllib.request.urlopen(f"{service.base}/api/distribute/image/{job_id}").close()


def _wait(service: ServiceRunner, job_id: str) -> int:
    """Poll the job every ``POLL`` s until it is over; the number of status GETs."""
    gets = 0
    while True:
        gets += 1
        with urllib.request.urlopen(f"{service.base}/api/distribute/image/{job_id}") as r:
            body = r.read()
        if b'"FINISHED"' in body:
            return gets
        if b'"FAILED"' in body or b'"CANCELLED"' in body:
            raise RuntimeError(f"job {job_id}: {body[:300]!r}")
        time.sleep(POLL)


def _wait_in_database(db: sqlite3.Connection, job_id: str) -> None:
    """Read the job's state from the service's SQLite file (costs the service nothing) until it is over."""
    while True:
        row = db.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row and row[0] == "FINISHED":
            return
        if row and row[0] in ("FAILED", "CANCELLED"):
            raise RuntimeError(f"job {job_id}: {row[0]}")
        time.sleep(0.01)


def _calibrate(service: ServiceRunner, job_id: str) -> tuple[float, float, float]:
    """Milliseconds of service CPU: idle per second, one status GET of a burst, one GET at the client's pace."""
    pid = service.proc.pid
    t, c = time.perf_counter(), cpu_ns(pid)
    time.sleep(3)
    idle_per_s = (cpu_ns(pid) - c) / 1e6 / (time.perf_counter() - t)
    c = cpu_ns(pid)
    _status_gets(service, job_id, 200)
    burst = (cpu_ns(pid) - c) / 1e6 / 200
    t, c = time.perf_counter(), cpu_ns(pid)
    for _ in range(40):
        _status_gets(service, job_id, 1)
        time.sleep(POLL)
    paced = ((cpu_ns(pid) - c) / 1e6 - (time.perf_counter() - t) * idle_per_s) / 40
    return idle_per_s, burst, paced


def measure_job_cpu(bench: Bench, jobs: int, env: dict[str, str] | None = None) -> dict[str, float]:
    """Milliseconds of service CPU: per job (median: raw, job only, no GETs), per status GET, idle per second.

    Jobs alternate: one followed by status GETs (the scenario), the next by reading the database file.
    """
    src = bench.registries(1)[0]
    imgs = [build_image(bench.workdir / f"img-j{i}", src, f"bench/j{i}", [256 * 1024, 64 * 1024]) for i in range(jobs)]
    targets = bench.registries(2)
    service = ServiceRunner(
        bench.workdir, env={"REGCAST_POLL_INTERVAL": "1", "REGCAST_JOBS_IN_FLIGHT": "4", **(env or {})}
    )
    pid = service.proc.pid
    raw: list[float] = []
    only: list[float] = []
    only_burst: list[float] = []
    quiet: list[float] = []
    db = sqlite3.connect(f"file:{service.dir / 'regcast.db'}?mode=ro", uri=True)
    try:
        first = service.post(src.host, imgs[0].repo, targets)  # warm: imports, connections, tokens
        _wait(service, first)
        idle_per_s, per_get_burst, per_get = _calibrate(service, first)
        for i, img in enumerate(imgs[1:]):
            t, c = time.perf_counter(), cpu_ns(pid)
            job_id = service.post(src.host, img.repo, targets)
            if i % 2:
                _wait_in_database(db, job_id)
                quiet.append((cpu_ns(pid) - c) / 1e6 - (time.perf_counter() - t) * idle_per_s)
                continue
            gets = _wait(service, job_id)
            ms = (cpu_ns(pid) - c) / 1e6
            idle = (time.perf_counter() - t) * idle_per_s
            raw.append(ms)
            only.append(ms - gets * per_get - idle)
            only_burst.append(ms - gets * per_get_burst - idle)
    finally:
        db.close()
        service.stop()
        bench.drop([src, *targets])
    return {
        "job": statistics.median(raw),
        "job only": statistics.median(only),
        "job only (burst GET)": statistics.median(only_burst),
        "job without GETs": statistics.median(quiet),
        "status GET": per_get,
        "status GET (burst)": per_get_burst,
        "idle per s": idle_per_s,
        "jobs": float(len(raw)),
    }


def scenario_job_cpu(bench: Bench, out: list[str], quick: bool) -> None:
    m = measure_job_cpu(bench, 11 if quick else 61)
    text = "\n".join(
        [
            f"\n### j: service CPU per small job (256 KiB + 64 KiB layers, 2 targets), {m['jobs']:.0f} + "
            f"{m['jobs']:.0f} jobs in turn",
            "",
            "| what | CPU ms (median) |",
            "| --- | --- |",
            f"| one job, POST to FINISHED, status polled every {POLL * 1000:.0f} ms | {m['job']:.1f} |",
            f"| one job only (status GETs at the client's pace and idle service taken out) | {m['job only']:.1f} |",
            f"| the same, GETs taken out at their cost in a burst (before issue 17 session 5) | "
            f"{m['job only (burst GET)']:.1f} |",
            f"| one job, no status GETs (state read from the database file), idle taken out | "
            f"{m['job without GETs']:.1f} |",
            f"| one status GET, one every {POLL * 1000:.0f} ms / in a burst | {m['status GET']:.2f} / "
            f"{m['status GET (burst)']:.2f} |",
            f"| idle service, per second | {m['idle per s']:.2f} |",
        ]
    )
    print(text, flush=True)
    out.append(text)


def _peak(
    bench: Bench, src_host: str, imgs: list[Image], n_targets: int, directory: Path, env: dict[str, str] | None = None
) -> tuple[int, int, float]:
    """(idle RSS KiB before, peak RSS KiB, seconds) of a fresh service copying ``imgs`` at once."""
    targets = bench.registries(n_targets)
    service = ServiceRunner(bench.workdir, env=env, directory=directory)
    try:
        time.sleep(0.5)
        idle = vm_rss(service.proc.pid)
        t = time.perf_counter()
        ids = [service.post(src_host, img.repo, targets) for img in imgs]
        for i in ids:
            service.wait(i)
        return idle, vm_hwm(service.proc.pid), time.perf_counter() - t
    finally:
        service.stop()
        bench.drop(targets)


def measure_rss(bench: Bench, quick: bool, env: dict[str, str] | None = None) -> list[tuple[str, int, int, float]]:
    """Rows (case, idle KiB, peak KiB, seconds)."""
    src = bench.registries(1)[0]
    big, huge, each = (16 * MiB, 64 * MiB, 4 * MiB) if quick else (64 * MiB, 1024 * MiB, 16 * MiB)
    w = bench.workdir
    cases = {
        "one small job (256 KiB + 64 KiB), 3 targets": (
            [build_image(w / "rss-s", src, "rss/s", [256 << 10, 64 << 10])],
            3,
        ),
        f"4 x {big // MiB} MiB, 3 targets": ([build_image(w / "rss-b", src, "rss/b", [big] * 4)], 3),
        f"1 x {huge // MiB} MiB, 3 targets": ([build_image(w / "rss-h", src, "rss/h", [huge])], 3),
        f"20 concurrent jobs, 1 x {each // MiB} MiB each, 3 targets": (
            [build_image(w / f"rss-c{i}", src, f"rss/c{i}", [each]) for i in range(20)],
            3,
        ),
    }
    rows = []
    directory = w / "rss-service"  # one database: the first start migrates it, the cases restart on it
    try:
        first = ServiceRunner(w, env=env, directory=directory)
        time.sleep(0.5)
        rows.append(("idle, first start (migrates a new database)", vm_rss(first.proc.pid), 0, 0.0))
        first.stop()
        for name, (imgs, n) in cases.items():
            idle, peak, secs = _peak(bench, src.host, imgs, n, directory, env)
            rows.append((name, idle, peak, secs))
    finally:
        bench.drop([src])
    return rows


def scenario_rss(bench: Bench, out: list[str], quick: bool) -> None:
    lines = [
        "\n### rss: service resident memory (a fresh `regcast serve` per case)",
        "",
        "| case | RSS idle MiB | peak RSS MiB | s |",
        "| --- | --- | --- | --- |",
    ]
    for name, idle, peak, secs in measure_rss(bench, quick):
        lines.append(
            f"| {name} | {idle / 1024:.0f} | {peak / 1024:.0f} | {secs:.2f} |".replace("| 0 | 0.00 |", "| | |")
        )
    text = "\n".join(lines)
    print(text, flush=True)
    out.append(text)
