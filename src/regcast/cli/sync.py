"""``regcast sync FILE``: one pass of a mirror-set document in this process."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from regcast.cli._common import EXIT_FAILED, invocation


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Print the plan (image x target: up to date / copy / skip, bytes).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output on stdout.")
@click.option("--ca-bundle", type=click.Path(exists=True, dir_okay=False), help="Extra CA certificates (PEM).")
def sync(file: Path, dry_run: bool, as_json: bool, ca_bundle: str | None) -> None:
    """One pass of a mirror-set document now; exit 0 only if every selected image is in every target.

    Exit status: 0 in sync, 1 an image or target failed, 3 a target was skipped (tag differs and
    overwrite is off). With --dry-run nothing is written and no blob is read, and the status says
    whether every image is there already: 0 yes, 3 only skips would be left, 1 something is to copy
    or failed (a check for CI: "is the mirror in sync?").
    """
    import asyncio

    from regcast._exceptions import RegcastError
    from regcast.mirrors.console import sync_file
    from regcast.mirrors.document import DocumentError

    try:
        try:
            text = file.read_bytes().decode()
        except UnicodeDecodeError as exc:  # bad input like any other (exit 2), not a failed pass
            raise DocumentError([f"document: not UTF-8 text (byte {exc.start})"]) from None
        settings = invocation().settings(ca_bundle=ca_bundle)
        invocation().reports_failures()  # each failed copy is in the table
        status = asyncio.run(sync_file(text, settings, dry_run=dry_run, as_json=as_json))
    except DocumentError as exc:  # bad input, as a bad flag: exit 2, every problem with its line
        click.echo(f"error: {file}: {exc}", err=True)
        sys.exit(2)
    except (RegcastError, ValueError) as exc:
        click.echo(f"error: {file}: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    sys.exit(status)
