"""The ``regcast`` command line (the group); one module per command family, remote ones in ``console/remote.py``.

Start-up (#17): `--help`/`--version` import click and little else: every module here imports only click at
module level, each command imports what it uses (pydantic, aiohttp, rich, SQLAlchemy, FastAPI...) inside its
body, and a command's module is imported when the command is named (``regcast copy`` loads no other
command's module; ``--help`` lists them all). tests/unit/test_startup.py guards this.
"""

from __future__ import annotations

import click

from regcast import __version__
from regcast.cli._common import Invocation

__all__ = ["main"]

COMMANDS = {  # name -> module:attribute
    "copy": "regcast.cli.copy:copy",
    "serve": "regcast.cli.service:serve",
    "worker": "regcast.cli.service:worker",
    "jobs": "regcast.cli.jobs:jobs",
    "sync": "regcast.cli.sync:sync",
    "submit": "regcast.console.remote:submit",
    "status": "regcast.console.remote:status",
    "cancel": "regcast.console.remote:cancel",
}


class _Commands(click.Group):
    """A group whose commands (``COMMANDS``) are imported when named, as click's docs show for lazy loading."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *self.commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            module, attribute = COMMANDS[cmd_name].split(":")
            # __import__, not importlib.import_module: -X importtime reports it (tests/unit/test_startup.py)
            command = getattr(__import__(module, fromlist=[attribute]), attribute)
            assert isinstance(command, click.Command)
            self.add_command(command, cmd_name)
        return self.commands.get(cmd_name)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-vv for HTTP requests).")
@click.version_option(__version__)
@click.pass_context
def main(ctx: click.Context, verbose: int) -> None:
    """Copy one container image from one registry to many, over the registry HTTP API."""
    ctx.obj = Invocation(verbose)
