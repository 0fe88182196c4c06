"""The scaling figure's PNGs from ``plots/scaling.json`` (``python -m benchmarks.plots`` redraws them).

matplotlib comes with the ``bench`` extra (``make bench`` installs it); the Agg backend draws
without a display.
"""

from __future__ import annotations

import json
from pathlib import Path

STYLE = {  # one look per tool in every figure
    "limit (curl)": ("black", "--", "o"),
    "regcast CLI": ("tab:blue", "-", "s"),
    "regcast service": ("tab:green", "-", "^"),
    "skopeo (parallel)": ("tab:red", "-", "D"),
}
FIGURES = {  # key in scaling.json: file, x axis, title
    "targets": ("scaling-targets.png", "number of targets", "one image to N targets"),
    "jobs": ("scaling-jobs.png", "concurrent jobs", "N jobs at once, one image each, 2 targets"),
}


def draw(directory: Path) -> str:
    """Write one PNG per figure; Markdown links to them (relative to benchmarks/)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    doc = json.loads((directory / "scaling.json").read_text())
    links = []
    for key, (name, xlabel, title) in FIGURES.items():
        fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
        points: list[int] = []
        for tool, by in doc[key].items():
            xs = sorted(int(p) for p in by)
            points = sorted({*points, *xs})
            colour, line, marker = STYLE.get(tool, ("tab:gray", "-", "x"))
            ax.plot(xs, [by[str(x)] for x in xs], color=colour, linestyle=line, marker=marker, label=tool)
        ax.set_xticks(points)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("seconds (median)")
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        image = doc.get(f"{key}_image", "")
        quick = " (quick)" if doc["quick"] else ""
        ax.set_title(
            f"{title} ({image})\n{doc['date']}, rounds={doc['rounds']}{quick}, {doc.get('load', '')}", fontsize=10
        )
        ax.legend()
        fig.tight_layout()
        fig.savefig(directory / name)
        plt.close(fig)
        links.append(f"![{title}](plots/{name})")
    return "\n\n".join(links)


if __name__ == "__main__":
    print(draw(Path(__file__).parent / "plots"))
