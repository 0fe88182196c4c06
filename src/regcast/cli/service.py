"""``regcast serve`` (API, workers, dashboard) and ``regcast worker`` (workers only, health port)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from regcast.cli._common import EXIT_FAILED, db_option, invocation

if TYPE_CHECKING:
    from regcast.config import Settings


def _service_parts(settings: Settings) -> tuple[Any, Any]:
    from regcast.jobs.secrets import SecretBox
    from regcast.jobs.store import JobStore

    box = SecretBox.from_settings(
        settings.encryption_key(), settings.database_dir, shared_database=settings.shared_database
    )
    return JobStore(settings.database_url, timeout=settings.db_timeout), box


@click.command()
@click.option("--host", help="Address to listen on (default 127.0.0.1; env REGCAST_HOST).")
@click.option("--port", type=int, help="Port (default 5001; env REGCAST_PORT).")
@click.option(
    "--allow-unauthenticated",
    is_flag=True,
    default=None,
    help="Listen beyond loopback without REGCAST_API_TOKENS (not recommended).",
)
@click.option(
    "--workers/--no-workers",
    "run_workers",
    default=True,
    show_default=True,
    help="Run workers in this process; --no-workers for API-only replicas (run `regcast worker` elsewhere).",
)
@db_option
def serve(
    host: str | None, port: int | None, allow_unauthenticated: bool | None, run_workers: bool, database_url: str | None
) -> None:
    """The job service: REST API, workers and docs (/docs) in one process.

    With REGCAST_API_TOKENS (or REGCAST_API_TOKENS_FILE) every route but /healthz and /readyz
    needs a bearer token; without, regcast listens on loopback only unless --allow-unauthenticated.
    """
    from regcast._exceptions import RegcastError
    from regcast.api.app import Service, create_app
    from regcast.api.listen import listen
    from regcast.api.listen import serve as run_server
    from regcast.registry.reference import is_loopback

    try:
        settings = invocation().settings(
            host=host, port=port, database_url=database_url, allow_unauthenticated=allow_unauthenticated
        )
        tokens = settings.tokens()
        store, box = _service_parts(settings)
    except (RegcastError, ValueError) as exc:
        raise click.UsageError(str(exc)) from None
    if not tokens and not is_loopback(settings.host) and not settings.allow_unauthenticated:
        raise click.UsageError(
            f"refusing to serve on {settings.host} without authentication: set REGCAST_API_TOKENS "
            "(or REGCAST_API_TOKENS_FILE), listen on 127.0.0.1, or pass --allow-unauthenticated"
        )
    _service_logging()
    if tokens:
        _say(settings, f"API authentication on ({len(tokens)} token(s)); /healthz and /readyz stay open")
    else:
        _say(
            settings,
            "API authentication OFF: anyone who can reach this address can start copies"
            + ("" if is_loopback(settings.host) else " (--allow-unauthenticated)"),
        )
    try:
        sock = listen(settings.host, settings.port)
    except OSError as exc:  # a busy port: say so and stop now, nothing started yet
        click.echo(f"error: cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}", err=True)
        sys.exit(EXIT_FAILED)
    _usable_database(settings, store)
    app = create_app(Service(settings, store, box, run_workers=run_workers))
    _say(settings, f"regcast serving on http://{settings.host}:{settings.port} (database: {store.label})")
    run_server(
        app,
        sock,
        log_level="info",
        log_config=None,  # the one logging set-up (ops/logs.py) formats uvicorn's lines too
        access_log=False,
        timeout_graceful_shutdown=30,
    )


def _say(settings: Settings, message: str) -> None:
    """A service's own notice: a plain line, or a log record when logs are JSON (one object per line)."""
    if settings.log_format == "json":
        import logging

        logging.getLogger("regcast.cli").info("%s", message)
    else:
        click.echo(message, err=True)


def _service_logging() -> None:
    """Services log each job's lifecycle (INFO) unless -v asked for more."""
    import logging

    logger = logging.getLogger("regcast")
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)


def _usable_database(settings: Settings, store: Any) -> None:
    """Before anything starts: a database no waiting can make usable is one line and exit 1.

    That is a schema a newer regcast wrote, and an SQLite file that cannot be opened, written or
    migrated (a read-only file, mount or folder, a missing folder): SQLite is a local file, not a server that
    may come up later. A server database that does not answer yet is waited for, in the background.
    """
    from regcast._exceptions import JobError, SchemaUnknown
    from regcast.jobs.store import failure_reason

    try:
        if store.postgres:
            store.check_schema(timeout=min(settings.db_timeout, 5.0))
        else:
            store.migrate()
            store.check_writable()
    except SchemaUnknown as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    except JobError as exc:
        if not store.postgres:
            click.echo(f"error: cannot use database {store.label}: {failure_reason(exc)}", err=True)
            sys.exit(EXIT_FAILED)


@click.command()
@click.option(
    "--health-port", type=int, help="Port of /healthz and /readyz (default 5002, 0: off; env REGCAST_HEALTH_PORT)."
)
@db_option
def worker(health_port: int | None, database_url: str | None) -> None:
    """Workers only, no REST API (scaled deployments sharing one PostgreSQL).

    Serves /healthz, /readyz (Kubernetes probes) and /metrics on REGCAST_HOST:REGCAST_HEALTH_PORT.
    """
    import asyncio
    import os
    import socket

    import uvloop  # the services' loop, as `serve`'s (api/listen.py, docs/decisions.md)

    from regcast._exceptions import RegcastError

    try:
        settings = invocation().settings(database_url=database_url, health_port=health_port)
        store, box = _service_parts(settings)
    except (RegcastError, ValueError) as exc:
        raise click.UsageError(str(exc)) from None
    health = None
    if settings.health_port:
        try:
            health = socket.create_server((settings.host, settings.health_port))
        except OSError as exc:  # a busy port: one line and exit 1, as serve's (not a usage error)
            why = os.strerror(exc.errno) if exc.errno else str(exc)
            click.echo(
                f"error: cannot listen on {settings.host}:{settings.health_port} for /healthz and /readyz: {why} "
                "(set REGCAST_HEALTH_PORT, or 0 for none)",
                err=True,
            )
            sys.exit(EXIT_FAILED)
    _usable_database(settings, store)
    _service_logging()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_run_worker(settings, store, box, health))


async def _run_worker(settings: Settings, store: Any, box: Any, health: Any) -> None:
    """The worker loop, the mirror scheduler and the small health app, until SIGTERM/SIGINT."""
    import asyncio
    import contextlib
    import signal
    from collections.abc import Iterator

    import uvicorn

    from regcast._exceptions import JobStoreUnavailable
    from regcast.api.listen import HTTP
    from regcast.api.probe import Probe, create_health_app
    from regcast.jobs.store import failure_reason
    from regcast.jobs.worker import Worker
    from regcast.mirrors.service import MirrorService
    from regcast.ops.events import JobEvents

    class _NoSignalServer(uvicorn.Server):
        """The worker owns SIGTERM/SIGINT (jobs go back to the queue first); uvicorn must not take them."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    # notifications, per-target log lines and retention run here too; /metrics is on the health port
    events = JobEvents(store, settings, box)
    w = Worker(store, settings, box, events=events)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, w.stop)
    server: uvicorn.Server | None = None
    run_task: asyncio.Task[None] | None = None
    migrated = False

    def alive() -> str | None:
        return "worker loop stopped" if run_task is not None and run_task.done() else None

    def problem() -> str | None:
        return w.unready() if migrated else "database unavailable"

    if health is not None:
        app = create_health_app(
            Probe(store, alive, problem),
            metrics=lambda: events.metrics.render(store if migrated else None),
            tokens=settings.tokens(),
            metrics_public=settings.metrics_public,
        )
        server = _NoSignalServer(uvicorn.Config(app, log_level="warning", http=HTTP))
        serving = asyncio.create_task(server.serve(sockets=[health]), name="health")
    delay = 1.0
    while not w.stopping.is_set():
        try:
            await asyncio.to_thread(store.migrate)
            migrated = True
            break
        except JobStoreUnavailable as exc:  # database not up yet: wait, as serve does
            _say(settings, f"database {store.label} unavailable: {failure_reason(exc)}; retrying in {delay:.0f}s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(w.stopping.wait(), delay)
            delay = min(delay * 2, 30)
    if migrated:
        mirrors = MirrorService(settings, store, box, owner=w.id)
        mirrors.wake = w.wake
        mirrors.limits = w.runner.engine.limits
        mirrors.connections = w.runner.pool
        mirrors.on_run_ended = events.notifier.run_ended
        run_task = asyncio.create_task(w.run(), name="worker")
        await asyncio.gather(run_task, mirrors.run_scheduler(w.stopping))
    if server is not None:
        server.should_exit = True
        await serving
    await asyncio.to_thread(store.close)
