"""Scenario m (mirror sets): N tags x 3 targets (issue 17: 50 tags, a no-change pass in <= 2 s, HEADs only).

Timed: the first ``regcast sync`` pass; a no-change pass by the CLI (process wall and CPU) and by the
service (a manual run of the stored mirror over the API, from the POST to the run FINISHED, and the
service's CPU for it); ``regcast copy`` once per tag as the old way. Counted: one more no-change pass
of each kind through counting proxies in front of the source and every target (the timed passes go
direct, so the proxies' own cost stays out of the figures): requests by method and kind.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

from tests.support import images
from tests.support.faults import FaultProxy
from tests.support.service import Service

from regcast.mirrors.document import TagRules
from regcast.mirrors.select import TagSelector
from regcast.mirrors.tags import list_tags
from regcast.registry.client import RegistryClient
from regcast.registry.reference import endpoint_for_registry

REGCAST_ENV = {"REGCAST_REQUEST_RETRIES": "3"}
SECRET_KEY = "bench-mirrors-" + "k" * 24


def _push(src: Any, repo: str, tags: int) -> list[str]:
    http = src.http()
    base = images.layer_bytes(256 * 1024)  # a base layer shared by every tag, as release tags share
    names = [f"1.{i // 10}.{i % 10}" for i in range(tags)]
    for name in names:
        images.image([base, images.layer_bytes(64 * 1024)]).push(http, repo, name)
    http.close()
    return names


def _mirror_doc(name: str, src: str, repo: str, targets: list[str]) -> dict[str, Any]:
    return {"version": 1, "mirrors": [{"name": name, "source": f"{src}/{repo}", "targets": targets}]}


def _write(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(json.dumps(doc))
    return path


def _kind(method: str, path: str) -> str:
    for pattern, kind in (
        (r"/manifests/", "manifest"),
        (r"/blobs/uploads", "upload"),
        (r"/blobs/", "blob"),
        (r"/tags/list", "tag list"),
        (r"/referrers/", "referrers"),
        (r"^/v2/?$", "ping"),
    ):
        if re.search(pattern, path):
            return f"{method} {kind}"
    return f"{method} other"


def _counts(proxies: list[FaultProxy]) -> str:
    c: Counter[str] = Counter(_kind(m, p.split("?")[0]) for px in proxies for m, p, _h in px.seen)
    return ", ".join(f"{k} {v}" for k, v in sorted(c.items()))


def _run_and_wait(svc: Service, name: str) -> tuple[float, dict[str, Any]]:
    t = time.perf_counter()
    r = svc.http.post(f"/api/mirrors/{name}/run")
    assert r.status_code == 202, r.text
    run_id = r.json()["id"]
    while True:
        for run in svc.http.get(f"/api/mirrors/{name}/runs").json()["runs"]:
            if run["id"] == run_id and run["state"] in ("FINISHED", "FAILED"):
                if run["state"] != "FINISHED":
                    raise RuntimeError(f"mirror run failed: {run}")
                return time.perf_counter() - t, run
        time.sleep(0.01)


def _cpu(regs: list[Any]) -> float:
    from benchmarks.runner import cpu_seconds

    return sum(cpu_seconds(r.proc.pid) for r in regs if r.proc)


def _span(run: dict[str, Any]) -> float:
    start, end = (dt.datetime.fromisoformat(run[k]) for k in ("started_at", "finished_at"))
    return (end - start).total_seconds()


async def _select(host: str, repo: str) -> tuple[float, int]:
    selector = TagSelector.from_rules(TagRules(semver=">=1.5", latest=20, deny=["-rc"]))
    async with RegistryClient(endpoint_for_registry(host), read_only=True) as client:
        await client.ping()
        t = time.perf_counter()
        chosen = selector.select(await list_tags(client, repo))
        return time.perf_counter() - t, len(chosen)


def _no_change(bench: Any, out: list[str], tags: int, report: Any, result: Any, per_tag_copies: bool = True) -> None:
    from benchmarks.runner import REGCAST, cpu_seconds

    src = bench.registries(1)[0]
    repo = "bench/mirror"
    names = _push(src, repo, tags)
    targets = bench.registries(3)
    svc = Service(bench.workdir / "mirrors-svc", {"REGCAST_SECRET_KEY": SECRET_KEY}).start()
    proxies = [FaultProxy(r.port).start() for r in (src, *targets)]
    hosts = [f"127.0.0.1:{p.port}" for p in proxies]
    first, cli, service, own = result(), result(), result(), result()
    lines: list[str] = []
    try:
        doc = _mirror_doc("bench", src.host, repo, [t.host for t in targets])
        path = _write(bench.workdir / "mirrors.json", doc)
        s, rss = bench.run_timed([REGCAST, "sync", str(path)], REGCAST_ENV)
        first.seconds.append(s)
        first.rss_kib.append(rss)
        assert svc.http.post("/api/mirrors", json=doc).status_code == 201
        _run_and_wait(svc, "bench")  # warm: the service's first run imports the planner
        regs = [src, *targets]
        for _ in range(bench.rounds):
            cpu0, r0 = bench.last_cpu, _cpu(regs)
            s, rss = bench.run_timed([REGCAST, "sync", str(path)], REGCAST_ENV)
            cli.seconds.append(s)
            cli.rss_kib.append(rss)
            cli.tool_cpu.append(bench.last_cpu - cpu0)
            cli.registry_cpu.append(_cpu(regs) - r0)
            assert svc.proc
            c0, r0 = cpu_seconds(svc.proc.pid), _cpu(regs)
            s, run = _run_and_wait(svc, "bench")
            service.seconds.append(s)
            service.tool_cpu.append(cpu_seconds(svc.proc.pid) - c0)
            service.registry_cpu.append(_cpu(regs) - r0)
            own.seconds.append(_span(run))
            if run["up_to_date"] != tags:
                raise RuntimeError(f"not a no-change run: {run}")
        counted = _mirror_doc("counted", hosts[0], repo, hosts[1:])
        bench.run_timed([REGCAST, "sync", str(_write(bench.workdir / "counted.json", counted))], REGCAST_ENV)
        lines.append(f"no-change CLI pass, requests at the source: {_counts(proxies[:1])}")
        lines.append(f"no-change CLI pass, requests at the 3 targets: {_counts(proxies[1:])}")
        for p in proxies:
            p.seen.clear()
        assert svc.http.post("/api/mirrors", json=counted).status_code == 201
        _run_and_wait(svc, "counted")
        lines.append(f"no-change service run, requests at the source: {_counts(proxies[:1])}")
        lines.append(f"no-change service run, requests at the 3 targets: {_counts(proxies[1:])}")
    finally:
        for p in proxies:
            p.stop()
        svc.stop()
        bench.drop(targets)
    per_tag = result()  # stays empty (no row) without per_tag_copies
    targets = bench.registries(3)
    try:
        t = time.perf_counter()
        for name in names if per_tag_copies else []:
            bench.run_timed(
                [REGCAST, "copy", f"{src.host}/{repo}:{name}", *(f"{x.host}/{repo}" for x in targets)], REGCAST_ENV
            )
        if per_tag_copies:
            per_tag.seconds.append(time.perf_counter() - t)
    finally:
        bench.drop([*targets, src])
    rows = {"sync, first pass": first, f"copy x{tags}, one per tag (once)": per_tag}
    rows.update({"sync (CLI), no change": cli, "service mirror run, no change (POST run -> FINISHED)": service})
    rows["service mirror run, no change (its started_at -> finished_at)"] = own
    report(out, f"m: mirror set, {tags} tags x 3 targets", {k: v for k, v in rows.items() if v.seconds})
    text = "\n".join(["", *(f"- {x}" for x in lines)])
    print(text, flush=True)
    out.append(text)
    out.append(f"\nno-change medians: CLI {statistics.median(cli.seconds):.2f} s, service {service.median:.2f} s")


def scenario_mirrors(bench: Any, out: list[str], tags: int, report: Any, result: Any) -> None:
    _no_change(bench, out, tags, report, result)
    many = bench.registries(1)[0]
    try:
        http = many.http()
        img = images.image([images.layer_bytes(1024)])
        img.push(http, "bench/many", "1.0.0")
        for i in range(200):  # 200 tags of one image: only the tag list and the selection are measured
            http.push_manifest("bench/many", f"1.{i // 10}.{i % 10}", img.root.raw, img.root.media_type)
        http.close()
        seconds, chosen = asyncio.run(_select(many.host, "bench/many"))
    finally:
        bench.drop([many])
    line = f"\nm: listing and selecting 200 tags (semver >=1.5, latest 20, deny -rc): {seconds:.3f} s, {chosen} chosen"
    print(line, flush=True)
    out.append(line)
