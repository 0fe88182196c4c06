"""Scenario m (mirror sets): N tags x 3 targets by one ``regcast sync`` pass vs one ``regcast copy``
per tag; a no-change second pass (HEADs only; target under 2 s on loopback); a 200-tag selection."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from tests.support import images

from regcast.mirrors.document import TagRules
from regcast.mirrors.select import TagSelector
from regcast.mirrors.tags import list_tags
from regcast.registry.client import RegistryClient
from regcast.registry.reference import endpoint_for_registry

REGCAST_ENV = {"REGCAST_REQUEST_RETRIES": "3"}


def _push(src: Any, repo: str, tags: int) -> list[str]:
    http = src.http()
    base = images.layer_bytes(256 * 1024)  # a base layer shared by every tag, as release tags share
    names = [f"1.{i // 10}.{i % 10}" for i in range(tags)]
    for name in names:
        images.image([base, images.layer_bytes(64 * 1024)]).push(http, repo, name)
    http.close()
    return names


def _doc(path: Path, src: Any, repo: str, targets: list[Any]) -> Path:
    path.write_text(
        json.dumps(
            {
                "version": 1,
                "mirrors": [{"name": "bench", "source": f"{src.host}/{repo}", "targets": [t.host for t in targets]}],
            }
        )
    )
    return path


async def _select(host: str, repo: str) -> tuple[float, int]:
    selector = TagSelector.from_rules(TagRules(semver=">=1.5", latest=20, deny=["-rc"]))
    async with RegistryClient(endpoint_for_registry(host), read_only=True) as client:
        await client.ping()
        t = time.perf_counter()
        chosen = selector.select(await list_tags(client, repo))
        return time.perf_counter() - t, len(chosen)


def scenario_mirrors(bench: Any, out: list[str], tags: int, report: Any, result: Any) -> None:
    from benchmarks.runner import REGCAST

    src = bench.registries(1)[0]
    repo = "bench/mirror"
    names = _push(src, repo, tags)
    results = {"sync, first pass": result(), f"copy x{tags}, one per tag": result(), "sync, no change": result()}
    try:
        for r in range(bench.rounds):
            targets = bench.registries(3)
            doc = _doc(bench.workdir / f"mirrors-{r}.json", src, repo, targets)
            s, rss = bench.run_timed([REGCAST, "sync", str(doc)], REGCAST_ENV)
            results["sync, first pass"].seconds.append(s)
            results["sync, first pass"].rss_kib.append(rss)
            s, rss = bench.run_timed([REGCAST, "sync", str(doc)], REGCAST_ENV)
            results["sync, no change"].seconds.append(s)
            results["sync, no change"].rss_kib.append(rss)
            bench.drop(targets)
            targets = bench.registries(3)
            t = time.perf_counter()
            for name in names:
                bench.run_timed(
                    [REGCAST, "copy", f"{src.host}/{repo}:{name}", *(f"{x.host}/{repo}" for x in targets)], REGCAST_ENV
                )
            results[f"copy x{tags}, one per tag"].seconds.append(time.perf_counter() - t)
            bench.drop(targets)
    finally:
        bench.drop([src])
    report(out, f"m: mirror set, {tags} tags x 3 targets", results)

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
