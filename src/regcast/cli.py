"""The ``regcast`` command line: ``copy``, ``serve``, ``worker``, ``jobs``."""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

import click
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

from regcast._exceptions import NotFound, RegcastError
from regcast.config import Settings, load_settings
from regcast.registry.auth import Credentials
from regcast.registry.client import RegistryClient, describe
from regcast.registry.dockerconfig import credentials_for
from regcast.registry.manifest import Platform
from regcast.registry.reference import Reference, endpoint_for_registry, parse_reference
from regcast.transfer.engine import CopyEngine, CopyResult, Target
from regcast.transfer.progress import TargetState, TargetStatus

EXIT_FAILED = 1
EXIT_SKIPPED = 3


class _Bars:
    """A rich progress bar per target, fed by the engine's listener calls."""

    def __init__(self, console: Console, keys: list[str]) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=not console.is_terminal,
        )
        self.tasks: dict[str, TaskID] = {k: self.progress.add_task(k, total=None) for k in keys}

    def changed(self, status: TargetStatus) -> None:
        label = status.key if status.state is TargetState.RUNNING else f"{status.key} [{status.state.value.lower()}]"
        self.progress.update(
            self.tasks[status.key], total=status.bytes_total or None, completed=status.bytes_done, description=label
        )


def _creds(flag: str | None, registry: str) -> Credentials | None:
    if flag:
        try:
            return Credentials.parse(flag)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
    return credentials_for(registry)


def _client(
    ref: Reference, creds: Credentials | None, verify: bool, settings: Settings, *, read_only: bool = False
) -> RegistryClient:
    return RegistryClient(
        endpoint_for_registry(ref.registry, tls_verify=verify),
        credentials=creds,
        options=settings.client_options(verify_tls=verify),
        read_only=read_only,
    )


async def _copy(
    src: Reference, dsts: list[Reference], settings: Settings, opts: dict[str, Any], console: Console
) -> CopyResult:
    source = _client(src, _creds(opts["src_creds"], src.registry), opts["src_tls_verify"], settings, read_only=True)
    clients: list[RegistryClient] = [source]
    try:
        targets = []
        for dst in dsts:
            client = _client(dst, _creds(opts["dest_creds"], dst.registry), opts["dest_tls_verify"], settings)
            clients.append(client)
            targets.append(Target(str(dst), client, dst.repository, dst.ref, overwrite=opts["overwrite"]))
        engine = CopyEngine(settings.transfer_options())
        graph = await engine.plan(source, src.repository, src.ref, opts["platforms"])
        bars = _Bars(console, [t.key for t in targets])
        with bars.progress:
            return await engine.copy(source, src.repository, src.ref, targets, listener=bars, graph=graph)
    finally:
        await asyncio.gather(*(c.close() for c in clients))


def _target_ref(dst: Reference, src: Reference) -> Reference:
    if dst.tag or dst.digest:
        return dst
    if src.tag:
        return Reference(dst.registry, dst.repository, tag=src.tag)
    return Reference(dst.registry, dst.repository, digest=src.digest)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-vv for HTTP requests).")
@click.version_option(package_name="regcast")
def main(verbose: int) -> None:
    """Copy one container image from one registry to many, over the registry HTTP API."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@main.command()
@click.argument("src")
@click.argument("dst", nargs=-1, required=True)
@click.option("--src-creds", metavar="USER:PASS", help="Credentials for the source (default: Docker config).")
@click.option("--dest-creds", metavar="USER:PASS", help="Credentials for every target (default: Docker config).")
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
def copy(src: str, dst: tuple[str, ...], **opts: Any) -> None:
    """Copy SRC to every DST now; exit 0 only if every target holds the image.

    Exit status: 0 all targets hold the image, 1 a target failed, 3 a target was skipped
    because its tag exists with another digest and --no-overwrite was given.
    """
    console = Console(stderr=True)
    try:
        platforms = [Platform.parse(p) for p in opts.pop("platforms")]
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--platform") from None
    try:
        settings = load_settings(ca_bundle=opts.pop("ca_bundle"), blobs_in_flight=opts.pop("blobs_in_flight"))
        src_ref = parse_reference(src)
        dst_refs = [_target_ref(parse_reference(d, default_tag=None), src_ref) for d in dst]
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
    status = 0
    for t in result.targets:
        if t.state is TargetState.FINISHED:
            how = (
                t.notes[0]
                if t.notes
                else (f"{t.blobs_uploaded} blobs uploaded, {t.blobs_mounted} mounted, {t.blobs_present} present")
            )
            click.echo(f"ok {t.key} {result.source_digest} ({how})")
        elif t.state is TargetState.SKIPPED:
            click.echo(f"skipped {t.key}: {t.notes[0] if t.notes else 'tag exists'}", err=True)
            status = status or EXIT_SKIPPED
        else:
            click.echo(f"error: {t.key}: {t.error}", err=True)
            status = EXIT_FAILED
    sys.exit(status)
