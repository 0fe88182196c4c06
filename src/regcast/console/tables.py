"""The console tables print to: whole names in a CI log, a terminal's own width elsewhere."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

LOG_WIDTH = 4096  # the table's width cap when stdout is no terminal: a row as long as its names


def table_console() -> Console:
    """stdout for a table: a terminal's width (or ``COLUMNS``); otherwise (a CI log, a file) every name
    whole, as wide as the rows need: rich's 80 columns cut ``registry/team/app:1.4.2`` to ``registry/t…``."""
    from rich.console import Console

    console = Console(soft_wrap=True)
    if console.is_terminal or os.environ.get("COLUMNS"):
        return console
    return Console(soft_wrap=True, width=LOG_WIDTH)
