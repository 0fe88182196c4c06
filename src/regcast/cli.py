"""The ``regcast`` command line: ``copy``, ``serve``, ``worker``, ``jobs``; remote ``submit``/``status``/``cancel``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from regcast.console import remote

# Start-up (#17): `--help`/`--version` import click and little else; each command imports what it uses
# (pydantic, aiohttp, rich, SQLAlchemy, FastAPI...) inside its body. tests/unit/test_startup.py guards this.
if TYPE_CHECKING:
    from typing import TypeAlias

    from rich.console import Console

    from regcast.config import Settings
    from regcast.console.progress import PlainConsole
    from regcast.layouts import LayoutRef
    from regcast.registry.auth import Credentials
    from regcast.registry.client import RegistryClient
    from regcast.registry.reference import Reference
    from regcast.transfer.engine import CopyResult
    from regcast.transfer.repository import Repository

    Where: TypeAlias = Reference | LayoutRef  # a registry reference, or an image layout (oci:DIR, oci-archive:FILE)

EXIT_FAILED = 1
EXIT_SKIPPED = 3


def _client(
    ref: Reference, creds: Credentials | None, verify: bool, settings: Settings, *, read_only: bool = False
) -> RegistryClient:
    from regcast.registry.client import RegistryClient
    from regcast.registry.reference import endpoint_for_registry

    endpoint = endpoint_for_registry(ref.registry, tls_verify=verify)
    return RegistryClient(
        endpoint,
        credentials=creds,
        options=settings.client_options(verify_tls=verify, host=endpoint.host),
        read_only=read_only,
    )


def _parse_where(text: str, default_tag: str | None = "latest") -> Where:
    from regcast.layouts import is_layout_reference, parse_layout_reference
    from regcast.registry.reference import parse_reference

    if is_layout_reference(text):
        return parse_layout_reference(text)
    return parse_reference(text, default_tag=default_tag)


async def _open_source(src: Where, settings: Settings, opts: dict[str, Any]) -> tuple[Repository, str]:
    from regcast.layouts import LayoutRef, LayoutRepository
    from regcast.transfer.remote import RegistryRepository

    if isinstance(src, LayoutRef):
        layout = LayoutRepository(src)
        return layout, await layout.default_ref()
    creds = opts["src_creds"].for_registry(src.registry)
    client = _client(src, creds, opts["src_tls_verify"], settings, read_only=True)
    return RegistryRepository(client, src.repository), src.ref


def _open_target(dst: Where, src_ref: str, settings: Settings, opts: dict[str, Any]) -> tuple[str, Repository, str]:
    """(key, repository, ref) of one DST; without a tag or digest it keeps the source's."""
    from regcast.layouts import LayoutRef, LayoutRepository
    from regcast.registry.reference import Reference
    from regcast.transfer.remote import RegistryRepository

    if isinstance(dst, LayoutRef):
        if dst.tag is None and ":" in src_ref:
            raise click.UsageError(f"{dst}: name a tag ({dst}:TAG) when the source is a digest")
        dst = dst if dst.tag else dst.with_tag(src_ref)
        return str(dst), LayoutRepository(dst, writable=True), str(dst.tag)
    if not (dst.tag or dst.digest):
        tag, digest = (None, src_ref) if ":" in src_ref else (src_ref, None)
        dst = Reference(dst.registry, dst.repository, tag=tag, digest=digest)
    client = _client(dst, opts["dest_creds"].for_registry(dst.registry), opts["dest_tls_verify"], settings)
    return str(dst), RegistryRepository(client, dst.repository), dst.ref


async def _copy(
    src: Where, dsts: list[Where], settings: Settings, opts: dict[str, Any], console: Console | PlainConsole
) -> CopyResult:
    import asyncio

    from regcast.console.progress import StatusListener, display_for
    from regcast.transfer.engine import CopyEngine, Target
    from regcast.transfer.referrers import ReferrerOptions

    opened: list[Repository] = []
    try:
        source, src_ref = await _open_source(src, settings, opts)
        opened.append(source)
        targets = []
        for dst in dsts:
            key, repo, ref = _open_target(dst, src_ref, settings, opts)
            opened.append(repo)
            targets.append(Target(key, repo, ref, overwrite=opts["overwrite"]))
        engine = CopyEngine(settings.transfer_options())
        referrers = ReferrerOptions(opts["referrers"], frozenset(opts["referrer_types"]))
        display = display_for(console, [t.key for t in targets], settings.progress_interval)
        async with display.running():  # copy() HEADs first and reads the source's manifests only if it must
            listener = StatusListener(display)
            return await engine.copy(
                source,
                src_ref,
                targets,
                platforms=opts["platforms"],
                listener=listener,
                referrers=referrers,
                spool=opts["spool"],
            )
    finally:
        await asyncio.gather(*(r.close() for r in opened))


class Invocation:
    """``ctx.obj`` of every command: ``-v`` now, the command's Settings when it first asks for them.

    The group callback runs before a command parses its options, so ``regcast COMMAND --help`` would pay
    for pydantic if the callback built Settings (#17); a command builds them once, with its flags, here.
    """

    def __init__(self, verbose: int) -> None:
        self.verbose = verbose
        self._settings: Settings | None = None

    def settings(self, **flags: Any) -> Settings:
        """Settings from ``REGCAST_*`` and ``flags`` (not None: flags win), built once; logging in their format."""
        if self._settings is None:
            from regcast.config import load_settings

            self._log("text")  # a warning while reading the environment goes through the usual handler
            self._settings = load_settings(**flags)
            self._log(self._settings.log_format)
        return self._settings

    def log(self) -> None:
        """Logging only (commands with no Settings of their own): the format of REGCAST_LOG_FORMAT if valid."""
        try:
            self.settings()
        except Exception:  # a bad setting is reported by a command that reads it
            self._log("text")

    def _log(self, fmt: str) -> None:
        import logging

        from regcast.ops.logs import setup_logging

        setup_logging(fmt, logging.WARNING - 10 * min(self.verbose, 2))


def invocation() -> Invocation:
    """The running command's ``Invocation`` (made by the group callback)."""
    found = click.get_current_context().find_object(Invocation)
    return found if found is not None else Invocation(0)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-vv for HTTP requests).")
@click.version_option(package_name="regcast")
@click.pass_context
def main(ctx: click.Context, verbose: int) -> None:
    """Copy one container image from one registry to many, over the registry HTTP API."""
    ctx.obj = Invocation(verbose)


@main.command()
@click.argument("src")
@click.argument("dst", nargs=-1, required=True)
@click.option(
    "--src-creds", metavar="USER:PASS", help="Source credentials (visible in ps: prefer the file or REGCAST_SRC_CREDS)."
)
@click.option("--src-creds-file", metavar="FILE", help="Source USER:PASS from the first line of FILE (- for stdin).")
@click.option("--dest-creds", metavar="USER:PASS", help="Credentials for every target (or REGCAST_DEST_CREDS).")
@click.option("--dest-creds-file", metavar="FILE", help="Targets' USER:PASS from the first line of FILE (- for stdin).")
@click.option("--src-tls-verify/--no-src-tls-verify", default=True, show_default=True)
@click.option("--dest-tls-verify/--no-dest-tls-verify", default=True, show_default=True)
@click.option(
    "--overwrite/--no-overwrite",
    default=True,
    show_default=True,
    help="Replace a tag that exists at a target with another digest.",
)
@click.option(
    "--platform",
    "platforms",
    multiple=True,
    metavar="OS/ARCH[/VARIANT]",
    help="Copy only these platforms of an index (repeatable; default: all).",
)
@click.option("--ca-bundle", type=click.Path(exists=True, dir_okay=False), help="Extra CA certificates (PEM).")
@click.option("--blobs-in-flight", type=int, help="Blobs copied at the same time.")
@click.option(
    "--referrers/--no-referrers",
    default=True,
    show_default=True,
    help="Bring what refers to the image (signatures, attestations, SBOMs).",
)
@click.option(
    "--referrer-type",
    "referrer_types",
    multiple=True,
    metavar="ARTIFACT_TYPE",
    help="Bring only referrers of this artifact type (repeatable; default: all).",
)
@click.option(
    "--spool/--no-spool",
    default=None,
    help="A target detached for lagging finishes from an on-disk copy of the blob, not a second source "
    "read [default: on when REGCAST_SPOOL_DIR or --spool-dir is set].",
)
@click.option("--spool-dir", metavar="DIR", help="Where spool files go (or REGCAST_SPOOL_DIR; default: the temp dir).")
def copy(src: str, dst: tuple[str, ...], **opts: Any) -> None:
    """Copy SRC to every DST now; exit 0 only if every target holds the image.

    Exit status: 0 all targets hold the image, 1 a target failed, 3 a target was skipped
    because its tag exists with another digest and --no-overwrite was given.
    """
    import asyncio

    from regcast._exceptions import NotFound, OutboundRefused, RegcastError
    from regcast.console.creds import CredsSource, check_stdin_once
    from regcast.console.progress import stderr_console
    from regcast.registry.client import describe
    from regcast.registry.manifest import Platform
    from regcast.registry.reference import Reference, endpoint_for_registry

    console = stderr_console()  # rich only on a terminal
    opts["src_creds"] = CredsSource("src", opts["src_creds"], opts.pop("src_creds_file"))
    opts["dest_creds"] = CredsSource("dest", opts["dest_creds"], opts.pop("dest_creds_file"))
    check_stdin_once(opts["src_creds"], opts["dest_creds"])
    try:
        platforms = [Platform.parse(p) for p in opts.pop("platforms")]
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--platform") from None
    try:
        settings = invocation().settings(
            ca_bundle=opts.pop("ca_bundle"),
            blobs_in_flight=opts.pop("blobs_in_flight"),
            spool_dir=opts.pop("spool_dir"),
        )
        src_ref = _parse_where(src)
        dst_refs = [_parse_where(d, default_tag=None) for d in dst]
        policy = settings.outbound_policy()
        for ref in [src_ref, *dst_refs]:
            why = policy.problem(endpoint_for_registry(ref.registry).base) if isinstance(ref, Reference) else None
            if why:
                raise OutboundRefused(f"registry {why}")
    except (RegcastError, ValueError) as exc:
        raise click.UsageError(str(exc)) from None
    opts["platforms"] = platforms or None
    try:
        result = asyncio.run(_copy(src_ref, dst_refs, settings, opts, console))
    except NotFound as exc:
        click.echo(f"error: source image {src_ref} not found ({exc})", err=True)
        sys.exit(EXIT_FAILED)
    except RegcastError as exc:
        click.echo(f"error: {describe(exc)}", err=True)
        sys.exit(EXIT_FAILED)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except click.ClickException:
        raise
    except Exception as exc:  # a bug: still one line for the user, the traceback only with -v
        import logging

        logging.getLogger("regcast").debug("internal error", exc_info=True)
        click.echo(f"error: internal error ({type(exc).__name__}: {exc}); run with -v for details", err=True)
        sys.exit(EXIT_FAILED)
    status = _report(result, referrers=opts["referrers"])
    sys.exit(status)


def _report(result: CopyResult, *, referrers: bool = False) -> int:
    """One line per target; the exit status (0 all hold the image, 3 one skipped, 1 one failed)."""
    from regcast.transfer.engine import SKIP_UP_TO_DATE
    from regcast.transfer.progress import TargetState

    status = 0
    for line in dict.fromkeys(line for t in result.targets for line in t.referrers_left_out):  # once each
        click.echo(f"warning: {line}", err=True)
    for t in result.targets:
        if t.state is TargetState.FINISHED:
            how = (
                t.notes[0]
                if t.notes
                else (f"{t.blobs_uploaded} blobs uploaded, {t.blobs_mounted} mounted, {t.blobs_present} present")
            )
            if referrers:
                left = f" ({len(t.referrers_left_out)} left out)" if t.referrers_left_out else ""
                how += f", {t.referrers} referrers{left}"
            click.echo(f"ok {t.key} {result.source_digest} ({how})")
        elif t.state is TargetState.SKIPPED:
            click.echo(f"skipped {t.key} ({t.reason}): {t.notes[0] if t.notes else 'tag exists'}", err=True)
            if t.reason != SKIP_UP_TO_DATE:  # the target does not hold the image
                status = status or EXIT_SKIPPED
        else:
            click.echo(f"error: {t.key}: {t.error}", err=True)
            status = EXIT_FAILED
    return status


def _service_parts(settings: Settings) -> tuple[Any, Any]:
    from regcast.jobs.secrets import SecretBox
    from regcast.jobs.store import JobStore

    box = SecretBox.from_settings(
        settings.encryption_key(), settings.database_dir, shared_database=settings.shared_database
    )
    return JobStore(settings.database_url, timeout=settings.db_timeout), box


_db_option = click.option(
    "--database-url", help="Job database (default: sqlite:///regcast.db; env REGCAST_DATABASE_URL)."
)


@main.command()
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
@_db_option
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
    app = create_app(Service(settings, store, box, run_workers=run_workers))
    _say(settings, f"regcast serving on http://{settings.host}:{settings.port} (database: {_db_label(settings)})")
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
    from regcast.jobs.store import JobStore

    store = JobStore(settings.database_url, timeout=settings.db_timeout)  # reads only: no key needed
    try:
        store.migrate()
    except Exception as exc:
        click.echo(f"error: database unavailable ({type(exc).__name__})", err=True)
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


def _service_logging() -> None:
    """Services log each job's lifecycle (INFO) unless -v asked for more."""
    import logging

    logger = logging.getLogger("regcast")
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)


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


def _db_label(settings: Settings) -> str:
    from sqlalchemy.engine import make_url

    return make_url(settings.database_url).render_as_string(hide_password=True)


@main.command()
@click.option(
    "--health-port", type=int, help="Port of /healthz and /readyz (default 5002, 0: off; env REGCAST_HEALTH_PORT)."
)
@_db_option
def worker(health_port: int | None, database_url: str | None) -> None:
    """Workers only, no REST API (scaled deployments sharing one PostgreSQL).

    Serves /healthz, /readyz (Kubernetes probes) and /metrics on REGCAST_HOST:REGCAST_HEALTH_PORT.
    """
    import asyncio
    import socket

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
        except OSError as exc:
            raise click.UsageError(
                f"cannot listen on {settings.host}:{settings.health_port} for /healthz and /readyz: {exc.strerror} "
                "(set REGCAST_HEALTH_PORT, or 0 for none)"
            ) from None
    _service_logging()
    asyncio.run(_run_worker(settings, store, box, health))


async def _run_worker(settings: Settings, store: Any, box: Any, health: Any) -> None:
    """The worker loop, the mirror scheduler and the small health app, until SIGTERM/SIGINT."""
    import asyncio
    import contextlib
    import signal
    from collections.abc import Iterator

    import uvicorn

    from regcast._exceptions import JobStoreUnavailable
    from regcast.api.probe import Probe, create_health_app
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
        server = _NoSignalServer(uvicorn.Config(app, log_level="warning"))
        serving = asyncio.create_task(server.serve(sockets=[health]), name="health")
    delay = 1.0
    while not w.stopping.is_set():
        try:
            await asyncio.to_thread(store.migrate)
            migrated = True
            break
        except JobStoreUnavailable as exc:  # database not up yet: wait, as serve does
            _say(settings, f"{exc}; retrying in {delay:.0f}s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(w.stopping.wait(), delay)
            delay = min(delay * 2, 30)
    if migrated:
        mirrors = MirrorService(settings, store, box, owner=w.id)
        mirrors.wake = w.wake
        mirrors.limits = w.runner.engine.limits
        mirrors.on_run_ended = events.notifier.run_ended
        run_task = asyncio.create_task(w.run(), name="worker")
        await asyncio.gather(run_task, mirrors.run_scheduler(w.stopping))
    if server is not None:
        server.should_exit = True
        await serving
    await asyncio.to_thread(store.close)


@main.command()
@click.argument("job_id", required=False)
@click.option("--state", type=click.Choice(["QUEUED", "RUNNING", "FINISHED", "FAILED", "CANCELLED"]))
@click.option("--limit", type=int, default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the status bodies the API answers, as JSON.")
@remote.server_option
@_db_option
def jobs(
    job_id: str | None, state: str | None, limit: int, as_json: bool, server: str | None, database_url: str | None
) -> None:
    """List jobs (newest first), or show one: from a service (--server / REGCAST_SERVER) or the database."""
    from rich.console import Console
    from rich.table import Table

    from regcast._exceptions import RegcastError
    from regcast.api.status import in_sync, iso, shown_state

    if server:
        remote.remote_jobs(server, job_id, state, limit, as_json)
        return
    try:  # a bad setting is a usage error, as for the other commands, not a traceback
        settings = invocation().settings(database_url=database_url)
    except (RegcastError, ValueError) as exc:
        raise click.UsageError(str(exc)) from None
    store = _open_store(settings)
    console = Console()
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
        console.print(f"source  {src['endpoint']} {src['image']}:{src['ref']}  {job.source_digest or ''}")
        console.print(f"started {iso(job.started_at)}  finished {iso(job.finished_at) or '-'}")
        if job.error:
            console.print(f"error   {job.error}", markup=False)
        table = Table("#", "endpoint", "image", "state", "bytes", "attempts", "error")
        for t in job.targets:
            table.add_row(
                str(t.idx),
                t.endpoint,
                f"{t.repository}:{t.ref}",
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
            f"{src['endpoint']} {src['image']}:{src['ref']}",
            f"{done}/{len(j.targets)}",
        )
    console.print(table)


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Print the plan (image x target: up to date / copy / skip, bytes).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output on stdout.")
@click.option("--ca-bundle", type=click.Path(exists=True, dir_okay=False), help="Extra CA certificates (PEM).")
def sync(file: Path, dry_run: bool, as_json: bool, ca_bundle: str | None) -> None:
    """One pass of a mirror-set document now; exit 0 only if every selected image is in every target.

    Exit status: 0 in sync, 1 an image or target failed, 3 a target was skipped (tag differs and
    overwrite is off). With --dry-run nothing is written and no blob is read.
    """
    import asyncio

    from regcast._exceptions import RegcastError
    from regcast.mirrors.console import sync_file
    from regcast.mirrors.document import DocumentError

    try:
        settings = invocation().settings(ca_bundle=ca_bundle)
        status = asyncio.run(sync_file(file.read_text(), settings, dry_run=dry_run, as_json=as_json))
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


main.add_command(remote.submit)
main.add_command(remote.status)
main.add_command(remote.cancel)
