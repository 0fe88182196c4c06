"""Scenario x (issue 19): two fast targets alone, then beside a target behind a 5 MB/s upload link.

Rows (CLI rows are the wall time of ``regcast copy`` with its peak RSS, start-up included):
- fast alone: the copy to the two fast targets only;
- fast in sync, slow beside: with the slow target too, the moment both fast targets hold the tag
  (polled HEADs); slow done (CLI): the end of that copy; the same with ``--spool``;
- slow done (service): the slow target's own ``finished_at`` minus the job's ``running_at``, from
  the job status of a running ``regcast serve`` (no process start-up, the fair figure);
- limit: the slow link measured, curl PUTting every blob at once through the same throttling proxy;
  slow link bytes / rate: the nominal figure.
Goals: fast targets in sync within 1.3x their time alone; the slow one within 1.1x of its link;
peak RSS as without the slow target.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import time
import urllib.request

from tests.support.proxy import TcpProxy
from tests.support.registry import RegistryServer

from benchmarks.runner import REGCAST, Bench, Image, MiB, Result, ServiceRunner, build_image, curl_put, report, vm_hwm

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


def _copy(src_ref: str, dests: list[str], fast_hosts: list[str], *flags: str) -> tuple[float, float, int]:
    """(seconds until every fast host has the tag, seconds until the copy ended, peak RSS KiB)."""
    t = time.perf_counter()
    cmd = [REGCAST, "copy", *flags, src_ref, *dests]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    fast_at, peak = 0.0, 0
    while proc.poll() is None:
        peak = max(peak, vm_hwm(proc.pid))
        if not fast_at and all(_tagged(h) for h in fast_hosts):
            fast_at = time.perf_counter() - t
        time.sleep(0.02)
    end = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"regcast failed: {proc.stderr.read().decode()[-500:] if proc.stderr else ''}")
    return fast_at or end, end, peak


def _link_limit(img: Image, host: str) -> float:
    """Seconds to PUT every blob at once through the slow link with curl: what the link really carries."""
    puts = []
    for b in img.blobs:
        req = urllib.request.Request(f"http://{host}/v2/bench/limit/blobs/uploads/", method="POST")
        with urllib.request.urlopen(req) as r:
            loc = r.headers["Location"]
        if loc.startswith("/"):
            loc = f"http://{host}{loc}"
        puts.append(curl_put(b.path, f"{loc}{'&' if '?' in loc else '?'}digest={b.digest}"))
    return Bench._all_at_once(puts)


def _service_slow(service: ServiceRunner, src: RegistryServer, fast: list[str], slow: str) -> float:
    """The slow target's own ``finished_at`` minus the job's ``running_at`` (server clock)."""
    body = {
        "source": {"endpoint": f"http://{src.host}/v2", "image": "bench/s", "ref": "v1"},
        "targets": [{"endpoint": f"http://{h}/v2"} for h in [*fast, slow]],
    }
    req = urllib.request.Request(f"{service.base}/api/distribute/image", data=json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(req) as r:
        job = json.load(r)["id"]
    service.wait(job)
    with urllib.request.urlopen(f"{service.base}/api/distribute/image/{job}") as r:
        status = json.load(r)
    start = dt.datetime.fromisoformat(status["running_at"])
    return (dt.datetime.fromisoformat(status["targets"][-1]["finished_at"]) - start).total_seconds()


def scenario_detach(bench: Bench, out: list[str], quick: bool) -> None:
    src = bench.registries(1)[0]
    img = build_image(bench.workdir / "img-s", src, "bench/s", [(4 if quick else 16) * MiB] * 4)
    src_ref = f"{src.host}/bench/s:v1"
    rows = (
        "fast alone",
        "fast in sync, slow beside",
        "slow done (CLI)",
        "slow done (CLI, --spool)",
        "slow done (service)",
        "limit",
        "slow link bytes / rate",
    )
    results = {k: Result() for k in rows}
    service = ServiceRunner(bench.workdir)

    def with_slow(record: str) -> None:
        fast, slow = bench.registries(2), bench.registries(1)[0]
        link = TcpProxy(slow.port, upload_rate=RATE).start()
        try:
            hosts = [r.host for r in fast]
            slow_host = f"127.0.0.1:{link.port}"
            if record == "limit":
                results["limit"].seconds.append(_link_limit(img, slow_host))
            elif record == "service":
                results["slow done (service)"].seconds.append(_service_slow(service, src, hosts, slow_host))
            else:
                flags = ["--spool"] if record == "spool" else []
                dests = [f"{h}/bench/s:v1" for h in hosts] + [f"{slow_host}/bench/s:v1"]
                fast_at, end, rss = _copy(src_ref, dests, hosts, *flags)
                row = results["slow done (CLI, --spool)" if flags else "slow done (CLI)"]
                row.seconds.append(end)
                row.rss_kib.append(rss)
                if not flags:
                    results["fast in sync, slow beside"].seconds.append(fast_at)
        finally:
            link.stop()
            bench.drop([*fast, slow])

    try:
        for _ in range(bench.rounds):
            fast = bench.registries(2)
            try:
                hosts = [r.host for r in fast]
                _fast_at, end, rss = _copy(src_ref, [f"{h}/bench/s:v1" for h in hosts], hosts)
                results["fast alone"].seconds.append(end)
                results["fast alone"].rss_kib.append(rss)
            finally:
                bench.drop(fast)
            for record in ("cli", "spool", "service", "limit"):
                with_slow(record)
            results["slow link bytes / rate"].seconds.append(img.total / RATE)
    finally:
        service.stop()
        bench.drop([src])
    report(out, f"x: {img.total / MiB:.0f} MiB, 2 fast targets and one behind a {RATE / 1e6:.0f} MB/s link", results)
