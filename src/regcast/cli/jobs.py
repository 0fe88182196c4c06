"""``regcast jobs [ID]``: jobs from the database (or from a service with --server)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from regcast.cli._common import EXIT_FAILED, db_option, invocation
from regcast.console import remote

if TYPE_CHECKING:
    from regcast.config import Settings


@click.command()
@click.argument("job_id", required=False)
@click.option("--state", type=click.Choice(["QUEUED", "RUNNING", "FINISHED", "FAILED", "CANCELLED"]))
@click.option("--limit", type=int, default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the status bodies the API answers, as JSON.")
@remote.server_option
@db_option
def jobs(
    job_id: str | None, state: str | None, limit: int, as_json: bool, server: str | None, database_url: str | None
) -> None:
    """List jobs (newest first), or show one: from a service (--server / REGCAST_SERVER) or the database."""
    from rich.table import Table

    from regcast._exceptions import RegcastError
    from regcast.api.status import in_sync, iso, shown_state
    from regcast.console.tables import table_console

    if server:
        remote.remote_jobs(server, job_id, state, limit, as_json)
        return
    try:  # a bad setting is a usage error, as for the other commands, not a traceback
        settings = invocation().settings(database_url=database_url)
    except (RegcastError, ValueError) as exc:
        raise click.UsageError(str(exc)) from None
    store = _open_store(settings)
    console = table_console()
    if as_json:
        _jobs_json(store, job_id, state, limit)
        return
    if job_id:
        job = store.get(job_id)
        if job is None:
            click.echo(f"error: job {job_id} not found", err=True)
            sys.exit(EXIT_FAILED)
        src = job.request["source"]
        console.print(f"[bold]{job.id}[/]  {job.state}  in sync {in_sync(job)}  attempts {job.attempts}")
        console.print(
            f"source  {src['endpoint']} {remote.image_ref(src['image'], src['ref'])}  {job.source_digest or ''}"
        )
        console.print(f"started {iso(job.started_at)}  finished {iso(job.finished_at) or '-'}")
        if job.error:
            console.print(f"error   {job.error}", markup=False)
        table = Table("#", "endpoint", "image", "state", "bytes", "attempts", "error")
        for t in job.targets:
            table.add_row(
                str(t.idx),
                t.endpoint,
                remote.image_ref(t.repository, t.ref),
                shown_state(t) + (f" ({t.reason})" if t.state == "SKIPPED" and t.reason else ""),
                f"{t.bytes_done}/{t.bytes_total}",
                str(t.attempts),
                t.error or "",
            )
        console.print(table)
        return
    page, total = store.list_jobs(state, limit, 0)
    table = Table(title=f"{len(page)} of {total} job(s)")
    table.add_column("id", no_wrap=True, min_width=36)
    for name in ("state", "started", "source", "targets done"):
        table.add_column(name)
    for j in page:
        src = j.request["source"]
        done = sum(t.state in ("FINISHED", "SKIPPED") for t in j.targets)
        table.add_row(
            j.id,
            j.state,
            iso(j.started_at) or "",
            f"{src['endpoint']} {remote.image_ref(src['image'], src['ref'])}",
            f"{done}/{len(j.targets)}",
        )
    console.print(table)


def _open_store(settings: Settings) -> Any:
    """The job store of an existing database, migrated; or one error line and exit 1."""
    missing = _missing_database(settings)
    if missing:  # never create an empty one (nor a key file) where there was none
        click.echo(
            f"error: no job database at {missing}; run in the folder `regcast serve` ran in, "
            "or set --database-url / REGCAST_DATABASE_URL",
            err=True,
        )
        sys.exit(EXIT_FAILED)
    from regcast._exceptions import JobError, SchemaUnknown
    from regcast.jobs.store import JobStore, failure_reason, head_revision

    store = JobStore(settings.database_url, timeout=settings.db_timeout)  # reads only: no key needed
    try:
        if not store.postgres:
            store.migrate()  # this host's own file
        elif (older := store.check_schema()) is not None:
            # a shared database: a read command does not move the schema under the replicas using it
            click.echo(
                f"error: database {store.label} has schema revision {older}, older than this regcast's "
                f"({head_revision()}): `regcast serve` or `regcast worker` of this version migrates it when it starts",
                err=True,
            )
            sys.exit(EXIT_FAILED)
    except SchemaUnknown as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    except JobError as exc:
        click.echo(f"error: database {store.label} unavailable: {failure_reason(exc)}", err=True)
        sys.exit(EXIT_FAILED)
    except Exception as exc:
        click.echo(f"error: database {store.label} unavailable ({type(exc).__name__})", err=True)
        sys.exit(EXIT_FAILED)
    return store


def _missing_database(settings: Settings) -> Path | None:
    """The SQLite file ``settings`` names, if it does not exist (a server database is never missing here)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(settings.database_url)
    except ArgumentError as exc:  # its text never holds the URL (nor a password in it)
        raise click.UsageError(f"--database-url / REGCAST_DATABASE_URL: {exc}") from None
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    path = Path(url.database).resolve()
    return None if path.exists() else path


def _jobs_json(store: Any, job_id: str | None, state: str | None, limit: int) -> None:
    """``regcast jobs --json``: the bodies the API would answer, read from the database."""
    import json

    from regcast.api.status import job_status

    if job_id:
        one = store.get(job_id)
        if one is None:
            click.echo(f"error: job {job_id} not found", err=True)
            sys.exit(EXIT_FAILED)
        click.echo(json.dumps(job_status(one), indent=2))
        return
    found, count = store.list_jobs(state, limit, 0)
    click.echo(
        json.dumps({"jobs": [job_status(j) for j in found], "total": count, "limit": limit, "offset": 0}, indent=2)
    )
