"""The ``regcast`` command line (the group); one module per command family, remote ones in ``console/remote.py``.

Start-up (#17): `--help`/`--version` import click and little else: every module here imports only click at
module level, each command imports what it uses (pydantic, aiohttp, rich, SQLAlchemy, FastAPI...) inside its
body. tests/unit/test_startup.py guards this.
"""

from __future__ import annotations

import click

from regcast.cli import copy, jobs, service, sync
from regcast.cli._common import Invocation
from regcast.console import remote

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-vv for HTTP requests).")
@click.version_option(package_name="regcast")
@click.pass_context
def main(ctx: click.Context, verbose: int) -> None:
    """Copy one container image from one registry to many, over the registry HTTP API."""
    ctx.obj = Invocation(verbose)


main.add_command(copy.copy)
main.add_command(service.serve)
main.add_command(service.worker)
main.add_command(jobs.jobs)
main.add_command(sync.sync)
main.add_command(remote.submit)
main.add_command(remote.status)
main.add_command(remote.cancel)
