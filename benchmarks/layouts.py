"""Scenario l: image layouts. One large layer exported to an oci-archive, imported back into a
registry, and fanned out to 3 registries and an archive at once (the source read once).

Peak RSS is the point: a layout is streamed both ways in chunks, so memory stays flat whatever
the layer size (1 GiB here, 64 MiB with --quick).
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.runner import REGCAST, Bench, MiB, Result, build_image, report


def scenario_layouts(bench: Bench, out: list[str], quick: bool) -> None:
    size = (64 if quick else 1024) * MiB
    src = bench.registries(1)[0]
    built = build_image(bench.workdir / "img-l", src, "bench/l", [size])
    src_ref = f"{src.host}/bench/l:v1"
    results = {
        k: Result()
        for k in ("export: registry -> oci-archive", "import: oci-archive -> registry", "3 registries + 1 oci-archive")
    }
    try:
        for i in range(bench.rounds):
            archive = Path(bench.workdir) / f"l-{i}.tar"
            secs, rss = bench.run_timed([REGCAST, "copy", src_ref, f"oci-archive:{archive}"])
            results["export: registry -> oci-archive"].seconds.append(secs)
            results["export: registry -> oci-archive"].rss_kib.append(rss)
            (target,) = bench.registries(1)
            try:
                secs, rss = bench.run_timed([REGCAST, "copy", f"oci-archive:{archive}", f"{target.host}/bench/l"])
            finally:
                bench.drop([target])
                archive.unlink(missing_ok=True)
            results["import: oci-archive -> registry"].seconds.append(secs)
            results["import: oci-archive -> registry"].rss_kib.append(rss)
            targets = bench.registries(3)
            try:
                cmd = [REGCAST, "copy", src_ref, *[f"{t.host}/bench/l:v1" for t in targets], f"oci-archive:{archive}"]
                secs, rss = bench.run_timed(cmd)
            finally:
                bench.drop(targets)
                archive.unlink(missing_ok=True)
            results["3 registries + 1 oci-archive"].seconds.append(secs)
            results["3 registries + 1 oci-archive"].rss_kib.append(rss)
    finally:
        bench.drop([src])
    report(out, f"l: one {built.total / MiB:.0f} MiB layer through an oci-archive", results)
