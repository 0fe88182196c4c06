"""Progress of targets: rich bars on a terminal, one plain line per target every N seconds otherwise.

CI logs are not terminals: redrawn bars there are either invisible or thousands of lines, so
``Lines`` prints a short, greppable status line per target at a fixed interval instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Protocol, TextIO

from regcast.registry.redact import printable
from regcast.transfer.progress import TargetStatus

if TYPE_CHECKING:  # rich is imported only to draw bars on a terminal (#17: `regcast copy` in CI starts quicker)
    from rich.console import Console
    from rich.progress import TaskID


class LineSink(Protocol):
    """What ``Lines`` prints to: a rich ``Console``, or a ``PlainConsole``."""

    @property
    def is_terminal(self) -> bool: ...

    def print(
        self, *objects: Any, markup: bool | None = None, highlight: bool | None = None, soft_wrap: bool | None = None
    ) -> None: ...


class PlainConsole:
    """stderr when it is not a terminal: whole lines, control characters escaped, rich not imported."""

    is_terminal = False

    def __init__(self, file: TextIO | None = None) -> None:
        self.file = file

    def print(self, *objects: Any, **_: Any) -> None:
        out = self.file or sys.stderr
        out.write(printable(" ".join(str(o) for o in objects)) + "\n")
        out.flush()


def stderr_console() -> Console | PlainConsole:
    """rich's console where bars can be drawn (a terminal, or FORCE_COLOR/TTY_COMPATIBLE set), else a plain one."""
    if not sys.stderr.isatty() and not os.environ.get("FORCE_COLOR") and not os.environ.get("TTY_COMPATIBLE"):
        return PlainConsole()
    from rich.console import Console

    return Console(stderr=True)


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
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
        )
        self.tasks: dict[str, TaskID] = {k: self.progress.add_task(k, total=None) for k in keys}

    def update(self, key: str, state: str, done: int, total: int, detached: str | None = None) -> None:
        if key not in self.tasks:
            self.tasks[key] = self.progress.add_task(key, total=None)
        label = key if state == "RUNNING" else f"{key} [{state.lower()}]"
        if detached and state == "RUNNING":  # its own rate is the bar's; why it goes alone, once
            label = f"{key} [detached: {detached}]"
        self.progress.update(self.tasks[key], total=total or None, completed=done, description=label)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        with self.progress:
            yield


class Lines:
    """``progress <target> <STATE> <done>/<total> (<pct>%)`` per target, every ``interval`` seconds;
    a detached target adds `` [detached at <rate>/s: <why>]`` (its own rate since it started)."""

    def __init__(self, console: LineSink, keys: list[str], interval: float) -> None:
        self.console = console
        self.interval = interval
        self.state: dict[str, tuple[str, int, int]] = {k: ("PENDING", 0, 0) for k in keys}
        self.detached: dict[str, str] = {}
        self.started: dict[str, float] = {}
        self.ended: dict[str, float] = {}

    def update(self, key: str, state: str, done: int, total: int, detached: str | None = None) -> None:
        now = time.monotonic()
        if state == "RUNNING":
            self.started.setdefault(key, now)
        elif state in ("FINISHED", "FAILED", "SKIPPED"):
            self.ended.setdefault(key, now)
        self.state[key] = (state, done, total)
        if detached:
            self.detached[key] = detached

    def print_lines(self) -> None:
        for key, (state, done, total) in self.state.items():
            pct = f" ({100 * done // total}%)" if total else ""
            line = f"progress {key} {state} {human(done)}/{human(total)}{pct}"
            if key in self.detached:
                seconds = self.ended.get(key, time.monotonic()) - self.started.get(key, time.monotonic())
                rate = f" at {human(int(done / seconds))}/s" if seconds > 0 and done else ""
                line += f" [detached{rate}: {self.detached[key]}]"
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


def display_for(console: Console | PlainConsole, keys: list[str], interval: float) -> Bars | Lines:
    if isinstance(console, PlainConsole) or not console.is_terminal:
        return Lines(console, keys, interval)
    return Bars(console, keys)


class StatusListener:
    """The copy engine's ``Listener`` feeding a display."""

    def __init__(self, display: Bars | Lines) -> None:
        self.display = display

    def changed(self, status: TargetStatus) -> None:
        self.display.update(
            status.key, status.state.value, status.bytes_done, status.bytes_total, status.detached_reason
        )
