"""``regcast copy SRC DST...``: one copy now, in the foreground, with progress."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from regcast.cli._common import EXIT_FAILED, EXIT_SKIPPED, invocation, platform_list

# Start-up (#17): module level imports click only; the command imports what it uses in its body.
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
    from regcast.layouts import LayoutRef
    from regcast.transfer.remote import RegistryRepository

    if isinstance(src, LayoutRef):
        from regcast.layouts import LayoutRepository

        layout = LayoutRepository(src)
        return layout, await layout.default_ref()
    creds = opts["src_creds"].for_registry(src.registry)
    client = _client(src, creds, opts["src_tls_verify"], settings, read_only=True)
    return RegistryRepository(client, src.repository), src.ref


def _kept_ref(src: Where, src_ref: str) -> str:
    """What a DST without tag or digest keeps: the source's tag, even when the source also named a
    digest (``app:1.0@sha256:...`` is read by digest and lands as ``:1.0``); else the digest."""
    from regcast.registry.reference import Reference

    return src.tag if isinstance(src, Reference) and src.tag and src.digest else src_ref


def _open_target(dst: Where, kept: str, settings: Settings, opts: dict[str, Any]) -> tuple[str, Repository, str]:
    """(key, repository, ref) of one DST; without a tag or digest it keeps the source's (``_kept_ref``).
    A DST naming a tag and a digest is pushed to its tag (the digest is what the source must hold)."""
    from regcast.layouts import LayoutRef
    from regcast.registry.reference import Reference

    if isinstance(dst, LayoutRef):
        from regcast.layouts import LayoutRepository

        if dst.digest:
            raise click.UsageError(f"{dst}: a layout target is {dst.where} or {dst.where}:TAG (@DIGEST reads one)")
        if dst.tag is None and ":" in kept:  # a digest: listed in index.json without a name, as skopeo does
            return f"{dst}@{kept}", LayoutRepository(dst, writable=True, unnamed_root=kept), kept
        dst = dst if dst.tag else dst.with_tag(kept)
        return str(dst), LayoutRepository(dst, writable=True), str(dst.tag)
    if not (dst.tag or dst.digest):
        tag, digest = (None, kept) if ":" in kept else (kept, None)
        dst = Reference(dst.registry, dst.repository, tag=tag, digest=digest)
    elif dst.tag and dst.digest:
        return str(dst), _target_repo(dst, settings, opts), dst.tag
    return str(dst), _target_repo(dst, settings, opts), dst.ref


def _target_repo(dst: Reference, settings: Settings, opts: dict[str, Any]) -> Repository:
    from regcast.transfer.remote import RegistryRepository

    client = _client(dst, opts["dest_creds"].for_registry(dst.registry), opts["dest_tls_verify"], settings)
    return RegistryRepository(client, dst.repository)


async def _copy(
    src: Where, dsts: list[Where], settings: Settings, opts: dict[str, Any], console: Console | PlainConsole
) -> CopyResult:
    import asyncio
    import gc

    from regcast.console.progress import StatusListener, display_for
    from regcast.transfer.engine import CopyEngine, Target
    from regcast.transfer.referrers import ReferrerOptions

    opened: list[Repository] = []
    try:
        source, src_ref = await _open_source(src, settings, opts)
        opened.append(source)
        targets = []
        for dst in dsts:
            key, repo, ref = _open_target(dst, _kept_ref(src, src_ref), settings, opts)
            opened.append(repo)
            targets.append(Target(key, repo, ref, overwrite=opts["overwrite"]))
        engine = CopyEngine(settings.transfer_options())
        referrers = ReferrerOptions(opts["referrers"], frozenset(opts["referrer_types"]))
        display = display_for(console, [t.key for t in targets], settings.progress_interval)
        # What start-up made lives as long as the process: frozen, the collector's passes during the copy walk
        # only what the copy makes (unfrozen, the first passes walked the whole start-up heap: ~15 ms). The
        # copy itself makes and drops objects: the collector back on (see ``copy``).
        gc.freeze()
        gc.enable()
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


@click.command()
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
    callback=platform_list,
    metavar="OS/ARCH[/VARIANT]",
    help="Copy only these platforms of an index (repeatable or comma-separated; default: all).",
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
    import atexit
    import gc

    # Start-up (#17): until the copy starts (``_copy``), what is made (modules, settings, clients) lives as
    # long as the process; the collector's passes over it are wasted work (~20 M instructions). At exit,
    # frozen, the heap is not walked once more by the interpreter's last collection (~50 M).
    gc.disable()
    atexit.register(gc.freeze)
    try:
        _run(src, dst, opts)
    finally:
        gc.enable()


def _run(src: str, dst: tuple[str, ...], opts: dict[str, Any]) -> None:
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
        _check_pinned(src_ref, dst_refs)
        policy = settings.outbound_policy()
        for ref in [src_ref, *dst_refs]:
            why = policy.problem(endpoint_for_registry(ref.registry).base) if isinstance(ref, Reference) else None
            if why:
                raise OutboundRefused(f"registry {why}")
    except (RegcastError, ValueError) as exc:
        raise click.UsageError(str(exc)) from None
    opts["platforms"] = platforms or None
    invocation().reports_failures()  # each failed target is its one ``error:`` line (_report)
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
    status = _report(result, referrers=opts["referrers"], kept=src_ref.digest)
    sys.exit(status)


def _check_pinned(src: Where, dsts: list[Where]) -> None:
    """A DST naming a tag and a digest: the digest must be the one the SRC names (it is pushed to its tag)."""
    from regcast.registry.reference import Reference, pinned_mismatch

    named = src.digest if isinstance(src, Reference) else None
    for d in dsts:
        why = pinned_mismatch(named, d) if isinstance(d, Reference) else None
        if why:
            raise click.UsageError(why)


def _report(result: CopyResult, *, referrers: bool = False, kept: str | None = None) -> int:
    """One line per target; the exit status (0 all hold the image, 3 one skipped, 1 one failed).

    A DST that kept the source's digest (``kept``) holds what was copied by its own digest: under a platform
    filter another one, which its line names (``DST@<kept>`` would name a manifest it does not hold)."""
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
            key = t.key
            if kept and kept != result.source_digest and key.endswith(f"@{kept}"):
                key = key[: -len(kept)] + result.source_digest
            click.echo(f"ok {key} {result.source_digest} ({how})")
        elif t.state is TargetState.SKIPPED:
            click.echo(f"skipped {t.key} ({t.reason}): {t.notes[0] if t.notes else 'tag exists'}", err=True)
            if t.reason != SKIP_UP_TO_DATE:  # the target does not hold the image
                status = status or EXIT_SKIPPED
        else:
            click.echo(f"error: {t.key}: {t.error}", err=True)
            status = EXIT_FAILED
    return status
