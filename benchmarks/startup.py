"""Scenario s: start-up (#17). Median wall time and CPU of short commands, interleaved, against the floor.

The floor is an interpreter doing nothing (``python -c pass``); skopeo's own start-up (``skopeo
--version``) is the bar when installed. regcast's bytecode is compiled first: pip compiles it when it
installs the wheel (the image too), but this checkout is an editable install and the machine sets
PYTHONDONTWRITEBYTECODE, so without that step every run would compile regcast's sources again
(~350 M instructions, ~16% of a no-op copy) and measure something no user runs. The no-op copy
re-syncs a small image to 3 registries that already hold it: what remains is start-up plus a few
round trips. Which modules load is asserted in ``tests/unit/test_startup.py``; seconds are only
measured here.
"""

from __future__ import annotations

import compileall
import statistics
import sys
from pathlib import Path

import regcast
from benchmarks.runner import REGCAST, Bench, build_image


def scenario_startup(bench: Bench, out: list[str], quick: bool) -> None:
    src = bench.registries(1)[0]
    targets = bench.registries(3)
    img = build_image(bench.workdir / "img-s", src, "bench/s", [64 * 1024, 4096])
    copy = [REGCAST, "copy", f"{src.host}/{img.repo}:v1", *[f"{t.host}/{img.repo}:v1" for t in targets]]
    compileall.compile_dir(Path(regcast.__file__).parent, quiet=1)  # as an installed wheel is
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "regcast --help": [REGCAST, "--help"],
        "regcast copy --help": [REGCAST, "copy", "--help"],
        "regcast --version": [REGCAST, "--version"],
        "regcast copy, no-op re-sync, 3 targets": copy,
    }
    if bench.skopeo_path:
        commands["skopeo --version"] = [bench.skopeo_path, "--version"]
    wall: dict[str, list[float]] = {k: [] for k in commands}
    cpu: dict[str, list[float]] = {k: [] for k in commands}
    try:
        bench.run_timed(copy)  # the first copy fills the targets; the timed ones find them up to date
        for _ in range(bench.rounds * (2 if quick else 5)):  # short commands: more rounds, still seconds
            for name, cmd in commands.items():  # interleaved, so a burst of load hits every command alike
                before = Bench.last_cpu
                seconds, _rss = bench.run_timed(cmd)
                wall[name].append(seconds)
                cpu[name].append(Bench.last_cpu - before)
    finally:
        bench.drop([src, *targets])
    floor = statistics.median(wall["python -c pass"])
    lines = [
        "\n### s: start-up (medians; goals: --help and COMMAND --help <= 0.1 s, no-op copy <= 0.2 s)",
        "",
        "| command | median s | CPU s | x python -c pass |",
        "| --- | --- | --- | --- |",
    ]
    for name in commands:
        median = statistics.median(wall[name])
        lines.append(f"| {name} | {median:.3f} | {statistics.median(cpu[name]):.3f} | {median / floor:.1f} |")
    if not bench.skopeo_path:
        lines.append("\n(skopeo not installed or left out: no skopeo --version row)")
    text = "\n".join(lines)
    print(text, flush=True)
    out.append(text)
