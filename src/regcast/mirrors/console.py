"""``regcast sync FILE``: progress bars (overall bytes, one bar per image) and the pass's table."""

from __future__ import annotations

import json
import os

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn, TransferSpeedColumn
from rich.table import Table

from regcast.config import Settings
from regcast.console.progress import Lines as ProgressLines
from regcast.console.tables import table_console
from regcast.mirrors.document import load_document
from regcast.mirrors.plan import ImagePlan, MirrorPlan
from regcast.mirrors.sync import PassReport, run_pass
from regcast.transfer.progress import TargetStatus

EXIT_OK, EXIT_FAILED, EXIT_SKIPPED = 0, 1, 3


class Bars:
    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=console,
            disable=not console.is_terminal,
        )
        self.overall: TaskID | None = None
        self.images: dict[tuple[str, str], TaskID] = {}
        self.moved: dict[tuple[str, str, str], int] = {}

    def planned(self, plans: list[MirrorPlan]) -> None:
        total = sum(img.bytes for p in plans for img in p.images)
        self.overall = self.progress.add_task("overall", total=total or None)

    def image_started(self, image: ImagePlan) -> None:
        key = (image.mirror, image.tag)
        self.images[key] = self.progress.add_task(f"{image.source}:{image.tag}", total=image.bytes or None)

    def changed(self, image: ImagePlan, status: TargetStatus) -> None:
        self.moved[(image.mirror, image.tag, status.key)] = status.bytes_uploaded + status.bytes_mounted
        done = sum(v for (m, t, _), v in self.moved.items() if (m, t) == (image.mirror, image.tag))
        self.progress.update(self.images[(image.mirror, image.tag)], completed=done)
        if self.overall is not None:
            self.progress.update(self.overall, completed=sum(self.moved.values()))

    def image_done(self, image: ImagePlan) -> None:
        self.progress.remove_task(self.images.pop((image.mirror, image.tag)))


class Lines:
    """Not a terminal (CI logs): one line per image and target every REGCAST_PROGRESS_INTERVAL seconds."""

    def __init__(self, console: Console, interval: float) -> None:
        self.lines = ProgressLines(console, [], interval)

    def planned(self, plans: list[MirrorPlan]) -> None:
        return None

    def image_started(self, image: ImagePlan) -> None:
        return None

    def changed(self, image: ImagePlan, status: TargetStatus) -> None:
        key = f"{image.source}:{image.tag} -> {status.key}"
        self.lines.update(key, status.state.value, status.bytes_done, status.bytes_total)

    def image_done(self, image: ImagePlan) -> None:
        return None


def print_report(report: PassReport, console: Console) -> None:
    table = Table(title="plan" if report.dry_run else "pass")
    for col in ("mirror", "image", "target", "action" if report.dry_run else "result", "bytes"):
        table.add_column(col)
    for p in report.plans:
        if p.error:
            table.add_row(p.name, str(p.source), "", f"error: {p.error}", "")
        for img in p.images:
            for t in img.targets:
                out = report.outcome(img, str(t.target))
                if report.dry_run or out is None:
                    what, size = t.action.value + (f" ({t.reason})" if t.reason else ""), t.bytes
                else:
                    what, size = out.state + (f": {out.error}" if out.error else ""), out.moved
                table.add_row(p.name, f"{img.source}:{img.tag}", str(t.target), what, str(size))
    console.print(table)
    s = report.summary()
    line = f"{s['images']} image(s): {s['copy']} to copy, {s['up_to_date']} up to date, {s['skip']} skipped"
    if report.dry_run:
        console.print(f"{line}, {s['failed']} failed; {s['bytes']} bytes to move")
    else:
        console.print(f"{line}; {s.get('copied', 0)} copied, {s['failed']} failed; {s.get('moved', 0)} bytes moved")


async def sync_file(text: str, settings: Settings, *, dry_run: bool, as_json: bool) -> int:
    """Load, run and report one pass; the exit status (0 only if every image is in every target)."""
    out = table_console()
    err = Console(stderr=True)
    doc = load_document(text, os.environ)
    if as_json or err.is_terminal:
        bars = Bars(err)
        with bars.progress:
            report = await run_pass(doc, settings, dry_run=dry_run, listener=None if as_json else bars)
    else:
        lines = Lines(err, settings.progress_interval)
        async with lines.lines.running():
            report = await run_pass(doc, settings, dry_run=dry_run, listener=lines)
    if as_json:
        print(json.dumps(report.public(), indent=2))
    else:
        print_report(report, out)
    if report.ok:
        return EXIT_OK
    if dry_run:  # as the pass would end if every copy went well: skips alone are 3, anything to copy 1
        counts = report.summary()
        return EXIT_FAILED if counts["failed"] or counts["copy"] or not counts["skip"] else EXIT_SKIPPED
    failed = report.summary()["failed"]
    return EXIT_FAILED if failed or not report.skipped else EXIT_SKIPPED
