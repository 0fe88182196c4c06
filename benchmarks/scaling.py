"""Scenario scale (#17): time against the number of targets and against the number of concurrent jobs.

Targets (1, 2, 4, 8, 12): one image of 3 x 8 MiB layers, fresh target registries for every run;
regcast CLI, regcast service, skopeo (one ``skopeo copy`` per target, all in parallel) and the
limit (curl, as in the other scenarios: every blob GET once, every blob PUT to every target, all
at once, upload sessions opened before the clock).

Concurrent jobs (1, 5, 20, 50): each job copies its own image (a 1 MiB and a 256 KiB layer) to the
same 2 fresh targets; the jobs start together. regcast service (N POSTs, then wait for all; the
bench's service runs 20 jobs at a time), regcast CLI (N ``regcast copy`` processes), skopeo (N x 2
processes) and the limit, here one ``curl --parallel`` per phase: 150 GETs and 300 PUTs as
separate curl processes would measure process start-up, not transfer.

Rounds are interleaved (every tool once per point and round); medians. The numbers go to
``benchmarks/plots/scaling.json`` and are drawn by ``benchmarks/plots.py``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.support.registry import RegistryServer

from benchmarks.runner import CURL, REGCAST, Bench, Image, MiB, ServiceRunner, build_image

PLOTS = Path(__file__).parent / "plots"
TARGET_COUNTS = (1, 2, 4, 8, 12)
JOB_COUNTS = (1, 5, 20, 50)
Run = Callable[[list[RegistryServer]], float]
FAILURES: list[str] = []  # runs that failed, printed under the tables


def _skopeo_cmd(skopeo: str, src: str, repo: str, dest: str) -> list[str]:
    return [
        skopeo,
        "copy",
        "--all",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        f"docker://{src}/{repo}:v1",
        f"docker://{dest}/{repo}:v1",
    ]


def _parallel(cmds: list[list[str]]) -> float:
    """Wall seconds of ``cmds`` run all at once; any failure raises."""
    t = time.perf_counter()
    with ThreadPoolExecutor(len(cmds)) as pool:
        list(pool.map(lambda c: Bench.run_timed(c), cmds))
    return time.perf_counter() - t


def _upload_url(host: str, repo: str, digest: str) -> str:
    req = urllib.request.Request(f"http://{host}/v2/{repo}/blobs/uploads/", method="POST")
    with urllib.request.urlopen(req) as r:
        loc = r.headers["Location"]
    return f"{loc}{'&' if '?' in loc else '?'}digest={digest}"


def curl_limit(src: str, imgs: list[Image], targets: list[RegistryServer]) -> float:
    """max(GET every blob of every image, PUT every blob to every target), one ``curl --parallel`` each."""
    get = [CURL, "-sf", "-Z", "--parallel-max", "300"]
    for img in imgs:
        for b in img.blobs:
            get += ["-o", "/dev/null", f"http://{src}/v2/{img.repo}/blobs/{b.digest}"]
    put = [CURL, "-sf", "-Z", "--parallel-max", "300", "-X", "PUT", "-H", "Content-Type: application/octet-stream"]
    for t in targets:
        for img in imgs:
            for b in img.blobs:
                put += ["-o", "/dev/null", "-T", str(b.path), _upload_url(t.host, img.repo, b.digest)]
    times = []
    for cmd in (get, put):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    return max(times)


def _measure(
    bench: Bench, points: tuple[int, ...], tools: dict[str, Callable[[int], Run]], n_targets: Callable[[int], int]
) -> dict[str, dict[int, float]]:
    """Median seconds per tool and point; fresh targets for every run, tools interleaved."""
    seconds: dict[str, dict[int, list[float]]] = {tool: {p: [] for p in points} for tool in tools}
    for p in points:
        for _ in range(bench.rounds):
            for tool, make in tools.items():
                targets = bench.registries(n_targets(p))
                try:
                    seconds[tool][p].append(make(p)(targets))
                except RuntimeError as exc:  # a failed run is reported and left out of the median, not hidden
                    print(f"  {p}: {tool} FAILED: {str(exc)[:300]}", flush=True)
                    FAILURES.append(f"{tool} at {p}: {str(exc)[:200]}")
                finally:
                    bench.drop(targets)
            print(f"  {p}: " + ", ".join(f"{t} {_median(s[p]):.2f}s" for t, s in seconds.items()), flush=True)
    return {tool: {p: _median(v) for p, v in by.items()} for tool, by in seconds.items()}


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def scale_targets(bench: Bench, quick: bool) -> dict[str, dict[int, float]]:
    src = bench.registries(1)[0]
    img = build_image(bench.workdir / "img-scale-t", src, "bench/scale-t", [(2 if quick else 8) * MiB] * 3)
    service = ServiceRunner(bench.workdir)
    points = TARGET_COUNTS[:3] if quick else TARGET_COUNTS
    tools: dict[str, Callable[[int], Run]] = {
        "limit (curl)": lambda _p: lambda t: bench.limit(src.host, img, t)[0],
        "regcast CLI": lambda _p: lambda t: bench.regcast_cli(src.host, img, t)[0],
        "regcast service": lambda _p: lambda t: service.copy(src.host, img, t)[0],
    }
    if (skopeo := bench.skopeo_path) is not None:
        tools["skopeo (parallel)"] = lambda _p: (
            lambda t: _parallel([_skopeo_cmd(skopeo, src.host, img.repo, x.host) for x in t])
        )
    try:
        return _measure(bench, points, tools, lambda p: p)
    finally:
        service.stop()
        bench.drop([src])


def scale_jobs(bench: Bench, quick: bool) -> dict[str, dict[int, float]]:
    points = JOB_COUNTS[:3] if quick else JOB_COUNTS
    src = bench.registries(1)[0]
    imgs = [
        build_image(bench.workdir / f"img-scale-j{i}", src, f"bench/scale-j{i}", [MiB, 256 * 1024])
        for i in range(max(points))
    ]
    service = ServiceRunner(bench.workdir)

    def by_service(n: int) -> Run:
        def run(targets: list[RegistryServer]) -> float:
            t = time.perf_counter()
            ids = [service.post(src.host, img.repo, targets) for img in imgs[:n]]
            for i in ids:
                service.wait(i)
            return time.perf_counter() - t

        return run

    def by_cli(n: int) -> Run:
        return lambda t: _parallel(
            [[REGCAST, "copy", f"{src.host}/{i.repo}:v1", *[f"{x.host}/{i.repo}:v1" for x in t]] for i in imgs[:n]]
        )

    tools: dict[str, Callable[[int], Run]] = {
        "limit (curl)": lambda n: lambda t: curl_limit(src.host, imgs[:n], t),
        "regcast service": by_service,
        "regcast CLI": by_cli,
    }
    if (skopeo := bench.skopeo_path) is not None:
        tools["skopeo (parallel)"] = lambda n: (
            lambda t: _parallel([_skopeo_cmd(skopeo, src.host, i.repo, x.host) for i in imgs[:n] for x in t])
        )
    try:
        return _measure(bench, points, tools, lambda _p: 2)
    finally:
        service.stop()
        bench.drop([src])


def _table(title: str, axis: str, data: dict[str, dict[int, float]]) -> str:
    points = sorted({p for by in data.values() for p in by})
    limit = data.get("limit (curl)", {})
    lines = [f"\n### {title}", "", "| tool | " + " | ".join(f"{axis} {p}" for p in points) + " |"]
    lines.append("| --- |" + " --- |" * len(points))
    for tool, by in data.items():
        cells = []
        for p in points:
            ratio = f" ({by[p] / limit[p]:.2f}x)" if limit.get(p) and tool != "limit (curl)" else ""
            cells.append(f"{by[p]:.2f}{ratio}")
        lines.append(f"| {tool} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def scenario_scaling(bench: Bench, out: list[str], quick: bool) -> None:
    from benchmarks.plots import draw

    loads = [os.getloadavg()[0]]
    print("scale: targets", flush=True)
    targets = scale_targets(bench, quick)
    loads.append(os.getloadavg()[0])
    print("scale: concurrent jobs", flush=True)
    jobs = scale_jobs(bench, quick)
    loads.append(os.getloadavg()[0])
    PLOTS.mkdir(exist_ok=True)
    size = "3 x 2 MiB" if quick else "3 x 8 MiB"
    load = f"load average {min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} cores"
    doc = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "rounds": bench.rounds,
        "quick": quick,
        "load": load,
        "skopeo": bool(bench.skopeo_path),
        "targets_image": f"{size} layers",
        "jobs_image": "1 MiB + 256 KiB layers each",
        "targets": {tool: {str(p): s for p, s in by.items()} for tool, by in targets.items()},
        "jobs": {tool: {str(p): s for p, s in by.items()} for tool, by in jobs.items()},
    }
    (PLOTS / "scaling.json").write_text(json.dumps(doc, indent=1) + "\n")
    text = "\n".join(
        [
            f"\n{doc['date']}, rounds={bench.rounds}, {load}",
            _table(f"scale: seconds against targets ({size} layers; x limit in brackets)", "targets", targets),
            _table("scale: seconds against concurrent jobs (1 MiB + 256 KiB each, 2 targets)", "jobs", jobs),
            "" if bench.skopeo_path else "\n(skopeo not installed or left out: no skopeo rows)",
            "".join(f"\nfailed run (left out of the median): {f}" for f in FAILURES),
            "\n" + draw(PLOTS),
        ]
    )
    print(text, flush=True)
    out.append(text)
