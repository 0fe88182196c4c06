"""Progress of targets: rich bars on a terminal, one plain line per target every N seconds otherwise.

CI logs are not terminals: redrawn bars there are either invisible or thousands of lines, so
``Lines`` prints a short, greppable status line per target at a fixed interval instead.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from regcast.transfer.progress import TargetStatus


def human(n: int) -> str:
    value, unit = float(n), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            break
        value /= 1024
    return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"


class Bars:
    """A rich progress bar per target."""

    def __init__(self, console: Console, keys: list[str]) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
        )
        self.tasks: dict[str, TaskID] = {k: self.progress.add_task(k, total=None) for k in keys}

    def update(self, key: str, state: str, done: int, total: int) -> None:
        if key not in self.tasks:
            self.tasks[key] = self.progress.add_task(key, total=None)
        label = key if state == "RUNNING" else f"{key} [{state.lower()}]"
        self.progress.update(self.tasks[key], total=total or None, completed=done, description=label)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        with self.progress:
            yield


class Lines:
    """``progress <target> <STATE> <done>/<total> (<pct>%)`` per target, every ``interval`` seconds."""

    def __init__(self, console: Console, keys: list[str], interval: float) -> None:
        self.console = console
        self.interval = interval
        self.state: dict[str, tuple[str, int, int]] = {k: ("PENDING", 0, 0) for k in keys}

    def update(self, key: str, state: str, done: int, total: int) -> None:
        self.state[key] = (state, done, total)

    def print_lines(self) -> None:
        for key, (state, done, total) in self.state.items():
            pct = f" ({100 * done // total}%)" if total else ""
            line = f"progress {key} {state} {human(done)}/{human(total)}{pct}"
            self.console.print(line, markup=False, highlight=False, soft_wrap=True)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        async def tick() -> None:
            while True:
                await asyncio.sleep(self.interval)
                self.print_lines()

        task = asyncio.create_task(tick())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self.print_lines()  # where every target ended, even for a copy shorter than one interval


def display_for(console: Console, keys: list[str], interval: float) -> Bars | Lines:
    return Bars(console, keys) if console.is_terminal else Lines(console, keys, interval)


class StatusListener:
    """The copy engine's ``Listener`` feeding a display."""

    def __init__(self, display: Bars | Lines) -> None:
        self.display = display

    def changed(self, status: TargetStatus) -> None:
        self.display.update(status.key, status.state.value, status.bytes_done, status.bytes_total)
