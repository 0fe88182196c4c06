"""Benchmarks (not part of ``make test``): real registries on loopback, interleaved rounds, medians.

Tools per scenario: regcast CLI, regcast service, skopeo ``copy --all`` per target (sequential
and parallel, when installed), and the limit: curl GETs every blob once and PUTs every blob to
every target, all at once; ideal pipelining costs max(get, put).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.proxy import TcpProxy
from tests.support.registry import RegistryServer, free_port

MiB = 1024 * 1024
REGCAST = shutil.which("regcast", path=str(Path(sys.executable).parent)) or "regcast"
SKOPEO = shutil.which("skopeo")
CURL = shutil.which("curl") or "curl"


@dataclass
class Blob:
    path: Path
    digest: str
    size: int
    media_type: str


@dataclass
class Image:
    repo: str
    blobs: list[Blob]
    manifest: bytes

    @property
    def total(self) -> int:
        return sum(b.size for b in self.blobs)


@dataclass
class Result:
    seconds: list[float] = field(default_factory=list)
    rss_kib: list[int] = field(default_factory=list)
    tool_cpu: list[float] = field(default_factory=list)
    registry_cpu: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def make_blob(directory: Path, size: int, media_type: str) -> Blob:
    h = hashlib.sha256()
    path = directory / f"blob-{len(list(directory.iterdir()))}"
    with path.open("wb") as f:
        left = size
        while left:
            piece = os.urandom(min(left, 16 * MiB))
            h.update(piece)
            f.write(piece)
            left -= len(piece)
    return Blob(path, "sha256:" + h.hexdigest(), size, media_type)


def curl_put(path: Path, url: str) -> list[str]:
    return [
        CURL,
        "-sf",
        "-o",
        "/dev/null",
        "-X",
        "PUT",
        "-H",
        "Content-Type: application/octet-stream",
        "-T",
        str(path),
        url,
    ]


def put_blob(base: str, repo: str, blob: Blob) -> None:
    req = urllib.request.Request(f"{base}/v2/{repo}/blobs/uploads/", method="POST")
    with urllib.request.urlopen(req) as r:
        loc = r.headers["Location"]
    url = f"{loc}{'&' if '?' in loc else '?'}digest={blob.digest}"
    subprocess.run(curl_put(blob.path, url), check=True)


def build_image(directory: Path, src: RegistryServer, repo: str, layer_sizes: list[int]) -> Image:
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "config.json"
    config.write_bytes(json.dumps({"architecture": "amd64", "os": "linux", "n": repo}).encode())
    cfg = Blob(
        config,
        "sha256:" + hashlib.sha256(config.read_bytes()).hexdigest(),
        config.stat().st_size,
        "application/vnd.oci.image.config.v1+json",
    )
    layers = [make_blob(directory, s, "application/vnd.oci.image.layer.v1.tar+gzip") for s in layer_sizes]
    doc = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": cfg.media_type, "digest": cfg.digest, "size": cfg.size},
        "layers": [{"mediaType": b.media_type, "digest": b.digest, "size": b.size} for b in layers],
    }
    raw = json.dumps(doc).encode()
    base = f"http://{src.host}"
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda b: put_blob(base, repo, b), [cfg, *layers]))
    req = urllib.request.Request(
        f"{base}/v2/{repo}/manifests/v1", data=raw, method="PUT", headers={"Content-Type": doc["mediaType"]}
    )
    urllib.request.urlopen(req).close()
    return Image(repo, [cfg, *layers], raw)


def vm_hwm(pid: int) -> int:
    """Peak resident set size of a running process, in KiB (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """utime + stime of a running process (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def limit_commands(src: str, img: Image, targets: list[RegistryServer]) -> tuple[list[list[str]], list[list[str]]]:
    """The limit's curl commands: GET every blob once, PUT every blob to every target. The PUTs' upload
    sessions are opened here (POST), so whoever times the commands leaves the POSTs out."""
    gets = [[CURL, "-sf", "-o", "/dev/null", f"http://{src}/v2/{img.repo}/blobs/{b.digest}"] for b in img.blobs]
    puts = []
    for t in targets:
        for b in img.blobs:
            req = urllib.request.Request(f"http://{t.host}/v2/{img.repo}/blobs/uploads/", method="POST")
            with urllib.request.urlopen(req) as r:
                loc = r.headers["Location"]
            puts.append(curl_put(b.path, f"{loc}{'&' if '?' in loc else '?'}digest={b.digest}"))
    return gets, puts


class Bench:
    last_cpu = 0.0  # CPU seconds of the tool's processes in the last run

    def __init__(self, workdir: Path, rounds: int, skopeo: str | None = SKOPEO) -> None:
        self.workdir = workdir
        self.rounds = rounds
        self.skopeo_path = skopeo  # None: not installed, or left out (--no-skopeo); every scenario asks here
        self.n = 0
        self.last_limit_parts = (0.0, 0.0)

    def registries(self, count: int) -> list[RegistryServer]:
        regs = []
        for _ in range(count):
            self.n += 1
            regs.append(RegistryServer(f"t{self.n}", self.workdir / f"reg-{self.n}").start())
        return regs

    @staticmethod
    def drop(regs: list[RegistryServer]) -> None:
        for r in regs:
            r.stop()
            shutil.rmtree(r.directory, ignore_errors=True)

    # -- tools -------------------------------------------------------------------------------------
    @staticmethod
    def run_timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, int]:
        """Wall seconds and peak RSS (KiB) of one command; its CPU seconds go to ``Bench.last_cpu``.

        Peak RSS is sampled from the child's own /proc VmHWM: ``ru_maxrss`` from wait4 would carry
        the forking benchmark process's high-water mark over fork+exec. CPU comes from wait4.
        """
        t = time.perf_counter()
        proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, **(env or {})}
        )
        peak = 0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            peak = max(peak, vm_hwm(proc.pid))
            time.sleep(0.01)
        elapsed = time.perf_counter() - t
        proc.returncode = os.waitstatus_to_exitcode(status)
        Bench.last_cpu += usage.ru_utime + usage.ru_stime
        if proc.returncode != 0:
            raise RuntimeError(f"{cmd[0]} failed: {proc.stderr.read().decode()[-500:] if proc.stderr else ''}")
        return elapsed, peak

    def regcast_cli(self, src: str, img: Image, targets: list[RegistryServer]) -> tuple[float, int]:
        return self.run_timed([REGCAST, "copy", f"{src}/{img.repo}:v1", *[f"{t.host}/{img.repo}:v1" for t in targets]])

    def skopeo(self, src: str, img: Image, targets: list[RegistryServer], parallel: bool) -> tuple[float, int]:
        assert self.skopeo_path
        cmds = [
            [
                self.skopeo_path,
                "copy",
                "--all",
                "--src-tls-verify=false",
                "--dest-tls-verify=false",
                f"docker://{src}/{img.repo}:v1",
                f"docker://{t.host}/{img.repo}:v1",
            ]
            for t in targets
        ]
        t0 = time.perf_counter()
        if parallel:
            with ThreadPoolExecutor(len(cmds)) as pool:
                rss = max(pool.map(lambda c: self.run_timed(c)[1], cmds))
        else:
            rss = max(self.run_timed(c)[1] for c in cmds)
        return time.perf_counter() - t0, rss

    def limit(self, src: str, img: Image, targets: list[RegistryServer]) -> tuple[float, int]:
        """max(GET every blob once, PUT every blob to every target), each all at once with curl."""
        gets, puts = limit_commands(src, img, targets)
        get, put = self._all_at_once(gets), self._all_at_once(puts)
        self.last_limit_parts = (get, put)
        return max(get, put), 0

    @staticmethod
    def _all_at_once(cmds: list[list[str]]) -> float:
        t = time.perf_counter()
        procs = [subprocess.Popen(c) for c in cmds]
        for p in procs:
            if p.wait() != 0:
                raise RuntimeError(f"curl failed: {p.args}")
        return time.perf_counter() - t


class ServiceRunner:
    """One ``regcast serve`` per scenario; jobs posted and polled over HTTP."""

    def __init__(
        self,
        workdir: Path,
        env: dict[str, str] | None = None,
        prefix: list[str] | None = None,
        directory: Path | None = None,
    ) -> None:
        """``env`` overrides the bench's service settings; ``prefix`` wraps the command (a profiler);
        ``directory`` (its database) is kept from an earlier service, else a new one is made."""
        self.port = free_port()
        self.dir = directory or workdir / f"service-{self.port}"
        self.dir.mkdir(parents=True, exist_ok=True)
        settings = {"REGCAST_POLL_INTERVAL": "0.05", "REGCAST_JOBS_IN_FLIGHT": "20", **(env or {})}
        self.log = self.dir / f"serve-{self.port}.log"  # what went wrong, when a job fails
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [*(prefix or []), REGCAST, "serve", "--port", str(self.port)],
                cwd=self.dir,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **settings},
            )
        self.base = f"http://127.0.0.1:{self.port}"
        for _ in range(1200):  # 60 s: a loaded 2-core machine starts Python slowly
            try:
                urllib.request.urlopen(self.base + "/readyz").close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("service did not start")

    def post(self, src: str, repo: str, targets: list[RegistryServer], overwrite: bool = False) -> str:
        body = {
            "source": {"endpoint": f"http://{src}/v2", "image": repo, "ref": "v1"},
            "targets": [{"endpoint": f"http://{t.host}/v2", "overwrite": overwrite} for t in targets],
        }
        req = urllib.request.Request(self.base + "/api/distribute/image", data=json.dumps(body).encode(), method="POST")
        with urllib.request.urlopen(req) as r:
            return str(json.load(r)["id"])

    def wait(self, job_id: str) -> None:
        while True:
            with urllib.request.urlopen(f"{self.base}/api/distribute/image/{job_id}") as r:
                body = json.load(r)
            state = body["value"]
            if state == "FINISHED":
                return
            if state in ("FAILED", "CANCELLED"):
                why = [body.get("error")] + [t.get("error") for t in body.get("targets", [])]
                raise RuntimeError(f"job {job_id} {state}: {'; '.join(str(w) for w in why if w)} (log: {self.log})")
            time.sleep(0.02)

    def copy(self, src: str, img: Image, targets: list[RegistryServer]) -> tuple[float, int]:
        t = time.perf_counter()
        self.wait(self.post(src, img.repo, targets))
        return time.perf_counter() - t, self.peak_rss()

    def peak_rss(self) -> int:
        return vm_hwm(self.proc.pid)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def scenario_copy(
    bench: Bench, name: str, layer_sizes: list[int], n_targets: int, wan: bool, tools: list[str], out: list[str]
) -> None:
    src = bench.registries(1)[0]
    img = build_image(bench.workdir / f"img-{name}", src, f"bench/{name}", layer_sizes)
    proxy = TcpProxy(src.port, rate=40e6, connect_delay=0.02).start() if wan else None
    src_host = f"127.0.0.1:{proxy.port}" if proxy else src.host
    service = ServiceRunner(bench.workdir) if "service" in tools else None
    runs: dict[str, Callable[[list[RegistryServer]], tuple[float, int]]] = {
        "limit": lambda t: bench.limit(src_host, img, t),
        "regcast": lambda t: bench.regcast_cli(src_host, img, t),
    }
    if service:
        runs["service"] = lambda t: service.copy(src_host, img, t)
    if bench.skopeo_path and "skopeo" in tools:
        runs["skopeo-seq"] = lambda t: bench.skopeo(src_host, img, t, parallel=False)
        runs["skopeo-par"] = lambda t: bench.skopeo(src_host, img, t, parallel=True)
    results = {k: Result() for k in runs}
    try:
        for _ in range(bench.rounds):
            for tool, fn in runs.items():  # interleaved: every tool once per round
                targets = bench.registries(n_targets)
                regs = [src, *targets]
                reg_before = sum(cpu_seconds(r.proc.pid) for r in regs if r.proc)
                svc_before = cpu_seconds(service.proc.pid) if service and tool == "service" else 0.0
                Bench.last_cpu = 0.0
                try:
                    secs, rss = fn(targets)
                    reg_cpu = sum(cpu_seconds(r.proc.pid) for r in regs if r.proc) - reg_before
                    if service and tool == "service":
                        Bench.last_cpu = cpu_seconds(service.proc.pid) - svc_before
                finally:
                    bench.drop(targets)
                results[tool].seconds.append(secs)
                results[tool].rss_kib.append(rss)
                results[tool].tool_cpu.append(Bench.last_cpu)
                results[tool].registry_cpu.append(reg_cpu)
                if tool == "limit":
                    get, put = bench.last_limit_parts
                    results.setdefault("limit: GET part", Result()).seconds.append(get)
                    results.setdefault("limit: PUT part", Result()).seconds.append(put)
    finally:
        if service:
            service.stop()
        if proxy:
            proxy.stop()
        bench.drop([src])
    report(
        out,
        f"{name}: {len(layer_sizes)} layer(s), {img.total / MiB:.0f} MiB, {n_targets} target(s)"
        + (", WAN source (40 MB/s, 20 ms/connection)" if wan else ""),
        results,
    )


def scenario_noop(bench: Bench, out: list[str]) -> None:
    src = bench.registries(1)[0]
    img = build_image(bench.workdir / "img-noop", src, "bench/noop", [MiB] * 4)
    targets = bench.registries(3)
    service = ServiceRunner(bench.workdir)
    results = {"regcast": Result(), "service": Result()}
    if bench.skopeo_path:
        results["skopeo-seq"] = Result()
    try:
        bench.regcast_cli(src.host, img, targets)
        for _ in range(bench.rounds):
            s, rss = bench.regcast_cli(src.host, img, targets)
            results["regcast"].seconds.append(s)
            results["regcast"].rss_kib.append(rss)
            s, rss = service.copy(src.host, img, targets)
            results["service"].seconds.append(s)
            results["service"].rss_kib.append(rss)
            if bench.skopeo_path:
                s, rss = bench.skopeo(src.host, img, targets, parallel=False)
                results["skopeo-seq"].seconds.append(s)
                results["skopeo-seq"].rss_kib.append(rss)
    finally:
        service.stop()
        bench.drop([src, *targets])
    report(out, "d: no-op re-sync, 3 targets already up to date", results)


def scenario_jobs(bench: Bench, out: list[str], jobs: int = 20) -> None:
    src = bench.registries(1)[0]
    imgs = [
        build_image(bench.workdir / f"img-job{i}", src, f"bench/job{i}", [256 * 1024, 64 * 1024]) for i in range(jobs)
    ]
    service = ServiceRunner(bench.workdir)
    one, many = Result(), Result()
    try:
        for _ in range(bench.rounds):
            targets = bench.registries(2)
            s, rss = service.copy(src.host, imgs[0], targets)
            one.seconds.append(s)
            one.rss_kib.append(rss)
            bench.drop(targets)
            targets = bench.registries(2)
            t = time.perf_counter()
            ids = [service.post(src.host, img.repo, targets) for img in imgs]
            for i in ids:
                service.wait(i)
            many.seconds.append(time.perf_counter() - t)
            many.rss_kib.append(service.peak_rss())
            bench.drop(targets)
    finally:
        service.stop()
        bench.drop([src])
    report(
        out,
        f"f: {jobs} concurrent service jobs (small images, 2 targets each)",
        {"service, one job": one, f"service, {jobs} jobs": many},
    )


def scenario_same_image_jobs(bench: Bench, out: list[str], jobs: int = 20, n_targets: int = 3) -> None:
    """fs (issue 17): ``jobs`` service jobs of ONE image to the SAME targets at once, against one such job.

    Shared in the process: one source read and one upload per blob and target (counted in
    tests/integration/test_shared_flights.py); the other jobs wait, then HEAD. Overwrite on, so a job
    that finds the tag already pushed by another is FINISHED.
    """
    src = bench.registries(1)[0]
    img = build_image(bench.workdir / "img-fs", src, "bench/fs", [256 * 1024] * 8 + [32 * 1024] * 8)
    service = ServiceRunner(bench.workdir)
    one, many = Result(), Result()
    try:
        warm = bench.registries(n_targets)
        service.copy(src.host, img, warm)  # warm-up: imports, first connections
        bench.drop(warm)
        for _ in range(bench.rounds):
            for result, count in ((one, 1), (many, jobs)):
                targets = bench.registries(n_targets)
                regs = [src, *targets]
                reg_before = sum(cpu_seconds(r.proc.pid) for r in regs if r.proc)
                svc_before = cpu_seconds(service.proc.pid)
                t = time.perf_counter()
                ids = [service.post(src.host, img.repo, targets, overwrite=True) for _ in range(count)]
                for i in ids:
                    service.wait(i)
                result.seconds.append(time.perf_counter() - t)
                result.rss_kib.append(service.peak_rss())
                result.tool_cpu.append(cpu_seconds(service.proc.pid) - svc_before)
                result.registry_cpu.append(sum(cpu_seconds(r.proc.pid) for r in regs if r.proc) - reg_before)
                bench.drop(targets)
    finally:
        service.stop()
        bench.drop([src])
    report(
        out,
        f"fs: {jobs} concurrent service jobs, one image ({len(img.blobs)} blobs, {img.total / MiB:.1f} MiB), "
        f"the same {n_targets} targets",
        {"service, one job": one, f"service, {jobs} jobs": many},
    )


def report(out: list[str], title: str, results: dict[str, Result]) -> None:
    limit = results.get("limit")
    skopeo = results.get("skopeo-seq")
    lines = [
        f"\n### {title}",
        "",
        "| tool | median s | x limit | x skopeo (sequential) | peak RSS MiB | tool CPU s | registries CPU s |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for tool, r in results.items():
        xl = f"{r.median / limit.median:.2f}" if limit and not tool.startswith("limit") else ""
        xs = f"{r.median / skopeo.median:.2f}" if skopeo and tool != "skopeo-seq" else ""
        rss = f"{max(r.rss_kib) / 1024:.0f}" if any(r.rss_kib) else ""
        tcpu = f"{statistics.median(r.tool_cpu):.2f}" if any(r.tool_cpu) else ""
        rcpu = f"{statistics.median(r.registry_cpu):.2f}" if any(r.registry_cpu) else ""
        lines.append(f"| {tool} | {r.median:.2f} | {xl} | {xs} | {rss} | {tcpu} | {rcpu} |")
    text = "\n".join(lines)
    print(text, flush=True)
    out.append(text)


def _feature_scenarios(bench: Bench, out: list[str], chosen: set[str], quick: bool) -> None:
    """Scenarios of one feature each, in their own modules: m (mirror sets), r (referrers), p (push events),
    l (image layouts), s (start-up), x (a slow target beside fast ones, issue 19), fd (detaches with no
    slow target, per grace), scale (time against
    targets and concurrent jobs, with PNG plots), j (service CPU per job), rss (service memory)."""
    if "m" in chosen:
        from benchmarks.mirrors import scenario_mirrors

        scenario_mirrors(bench, out, 10 if quick else 50, report, Result)
    if "r" in chosen:
        from benchmarks.referrers import scenario_referrers

        scenario_referrers(bench, out, quick)
    if "p" in chosen:
        from benchmarks.push_events import scenario_push

        scenario_push(bench, out, bench.rounds)
    if "l" in chosen:
        from benchmarks.layouts import scenario_layouts

        scenario_layouts(bench, out, quick)
    if "s" in chosen:
        from benchmarks.startup import scenario_startup

        scenario_startup(bench, out, quick)
    if chosen & {"x", "fd"}:
        _detach_scenarios(bench, out, chosen, quick)
    if "scale" in chosen:
        from benchmarks.scaling import scenario_scaling

        scenario_scaling(bench, out, quick)
    if "j" in chosen:
        from benchmarks.service_cost import scenario_job_cpu

        scenario_job_cpu(bench, out, quick)
    if "rss" in chosen:
        from benchmarks.service_cost import scenario_rss

        scenario_rss(bench, out, quick)


def _detach_scenarios(bench: Bench, out: list[str], chosen: set[str], quick: bool) -> None:
    """x: a slow target beside fast ones; fd: detaches with no slow target, per grace (issue 19)."""
    from benchmarks.detach import scenario_detach
    from benchmarks.false_detach import scenario_false_detach

    if "fd" in chosen:
        scenario_false_detach(bench, out, quick)
    if "x" in chosen:
        scenario_detach(bench, out, quick)


def skopeo_note(skopeo: str | None, left_out: bool) -> str:
    """The header's word on skopeo: its path only when the run compares with it."""
    if left_out:
        return "; skopeo left out (--no-skopeo)"
    return f"; skopeo: {skopeo}" if skopeo else "; skopeo not installed"


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--scenarios",
        default="a,a6,b,c,d,e,f,fs,m,r,p,l,s,x,scale,j,rss",
        help="comma-separated: a a6 b c d e f fs m r p l s x fd scale j rss (fd is not in the default run)",
    )
    ap.add_argument("--quick", action="store_true", help="smaller images (a smoke run, not a measurement)")
    ap.add_argument("--out", help="append the tables to this Markdown file")
    ap.add_argument("--no-skopeo", action="store_true", help="leave skopeo out even when installed")
    ap.add_argument("--small-kib", type=int, default=100, help="layer size of scenario c in KiB (issue 17 quotes 32)")
    args = ap.parse_args()
    chosen = set(args.scenarios.split(","))
    big = 8 * MiB if args.quick else 64 * MiB
    out: list[str] = [
        f"## {dt.date.today().isoformat()}, {os.cpu_count()} cores, rounds={args.rounds}"
        + (" (quick)" if args.quick else "")
    ]
    skopeo = None if args.no_skopeo else SKOPEO
    print(out[0] + skopeo_note(skopeo, args.no_skopeo), flush=True)
    with tempfile.TemporaryDirectory(prefix="regcast-bench-") as tmp:
        bench = Bench(Path(tmp), args.rounds, skopeo)
        all_tools = ["service", "skopeo"]
        if "a" in chosen:
            scenario_copy(bench, "a", [big] * 4, 3, True, all_tools, out)
        if "a6" in chosen:
            scenario_copy(bench, "a6", [big] * 4, 6, True, all_tools, out)
        if "b" in chosen:
            scenario_copy(bench, "b", [big] * 4, 3, False, all_tools, out)
        if "c" in chosen:
            scenario_copy(bench, "c", [args.small_kib * 1024] * 60, 3, False, all_tools, out)
        if "d" in chosen:
            scenario_noop(bench, out)
        if "e" in chosen:
            scenario_copy(bench, "e", [(64 if args.quick else 1024) * MiB], 1, False, [], out)
        if "f" in chosen:
            scenario_jobs(bench, out)
        if "fs" in chosen:
            scenario_same_image_jobs(bench, out)
        _feature_scenarios(bench, out, chosen, args.quick)
    if args.out:
        with open(args.out, "a") as f:
            f.write("\n".join(out) + "\n")
