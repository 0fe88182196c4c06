"""Scenario r: an image with 3 referrers to 3 targets, against the same copy with ``--no-referrers``.

The referrers are what a signed image carries on a registry without the referrers API: a cosign
``.sig`` tag, an SBOM and a signature of the SBOM listed in tag-schema indexes. The difference
between the two rows is what referrers cost: discovery at the source, their small blobs, their
manifests and the targets' index merges. The image's own blobs are read once either way.
"""

from __future__ import annotations

from tests.support import images
from tests.support.registry import RegistryServer

from benchmarks.runner import REGCAST, Bench, MiB, Result, build_image, cpu_seconds, report


def _attach(bench: Bench, src_host: str, img: images.Image) -> None:
    reg = RegistryServer("src", bench.workdir, port=int(src_host.rsplit(":", 1)[1]))
    http = reg.http()
    try:
        images.cosign_signature(img).push(http, "bench/r", images.cosign_tag(img.digest))
        sbom = images.referrer(img, images.SPDX, size=64 * 1024)
        images.attach(http, "bench/r", img.digest, [sbom])
        images.attach(http, "bench/r", sbom.digest, [images.referrer(sbom, images.SIGSTORE_BUNDLE)])
    finally:
        http.close()


def scenario_referrers(bench: Bench, out: list[str], quick: bool) -> None:
    src = bench.registries(1)[0]
    built = build_image(bench.workdir / "img-r", src, "bench/r", [(1 if quick else 8) * MiB] * 4)
    subject = images.Image(images.Manifest(built.manifest, images.OCI_MANIFEST))
    _attach(bench, src.host, subject)
    src_ref = f"{src.host}/bench/r:v1"
    runs = {"regcast --no-referrers": ["--no-referrers"], "regcast (3 referrers)": []}
    results = {k: Result() for k in runs}
    try:
        for _ in range(bench.rounds):
            for name, flags in runs.items():  # interleaved, fresh targets each time
                targets = bench.registries(3)
                before = sum(cpu_seconds(r.proc.pid) for r in [src, *targets] if r.proc)
                Bench.last_cpu = 0.0
                try:
                    cmd = [REGCAST, "copy", *flags, src_ref, *[f"{t.host}/bench/r:v1" for t in targets]]
                    secs, rss = bench.run_timed(cmd)
                    reg_cpu = sum(cpu_seconds(r.proc.pid) for r in [src, *targets] if r.proc) - before
                finally:
                    bench.drop(targets)
                results[name].seconds.append(secs)
                results[name].rss_kib.append(rss)
                results[name].tool_cpu.append(Bench.last_cpu)
                results[name].registry_cpu.append(reg_cpu)
    finally:
        bench.drop([src])
    report(out, f"r: {built.total / MiB:.0f} MiB image with 3 referrers (tag schema + cosign), 3 targets", results)
