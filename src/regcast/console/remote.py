"""Commands that talk to a running ``regcast serve``: ``submit``, ``status``, ``cancel`` (and ``jobs --server``).

The server is ``--server URL`` or ``REGCAST_SERVER``; the bearer token is ``REGCAST_API_TOKEN``
(never a flag: flags end up in shell history and process lists). Errors are one line; exit 1.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, NoReturn

import click

from regcast.cli._common import platform_list


def image_ref(image: str, ref: str) -> str:
    """``app:1.0``, or ``app@sha256:...`` for a digest (as docker writes it, not ``app:sha256:...``)."""
    return f"{image}@{ref}" if ":" in ref else f"{image}:{ref}"


if TYPE_CHECKING:  # imported where used: `regcast --help` loads this module and must stay quick (#17)
    import httpx

    from regcast.console.creds import CredsSource
    from regcast.registry.reference import Reference

FINAL = ("FINISHED", "FAILED", "CANCELLED")
EXIT_FAILED = 1

server_option = click.option(
    "--server",
    envvar="REGCAST_SERVER",
    metavar="URL",
    help="A regcast service, e.g. http://127.0.0.1:5001 (env REGCAST_SERVER); token from REGCAST_API_TOKEN.",
)


def fail(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(EXIT_FAILED)


class Remote:
    """The service's REST API, synchronously (httpx)."""

    def __init__(self, server: str, token: str | None, basic: tuple[str, str] | None = None) -> None:
        import httpx

        from regcast import USER_AGENT
        from regcast.registry.redact import redact_url

        headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.server = server.rstrip("/")
        self.shown = redact_url(self.server)  # what errors say: a query's secret-looking values hidden
        self.http: httpx.Client = httpx.Client(base_url=self.server, headers=headers, timeout=60.0, auth=basic)

    def call(self, method: str, path: str, body: Any = None, ok: tuple[int, ...] = (200,)) -> dict[str, Any]:
        import httpx

        try:
            resp = self.http.request(method, path, json=body)
        except httpx.HTTPError as exc:
            fail(f"regcast service {self.shown} unreachable ({type(exc).__name__})")
        try:
            data = resp.json()
        except ValueError:
            data = None
        if resp.status_code not in ok:
            msg = data.get("msg") if isinstance(data, dict) else None
            fail(f"{method} {path}: HTTP {resp.status_code}{f': {msg}' if msg else ''}")
        if not isinstance(data, dict):
            fail(f"{method} {path}: the answer is not a JSON object")
        return data


def remote_from(server: str | None) -> Remote:
    import os

    from regcast.cli._common import invocation

    invocation().log()  # no Settings of their own, but -v and REGCAST_LOG_FORMAT apply (httpx's lines)
    if not server:
        fail("no server: pass --server URL or set REGCAST_SERVER")
    token = os.environ.get("REGCAST_API_TOKEN") or None
    server, basic = _without_userinfo(server)
    if basic is not None and token is not None:
        fail("--server URL: user:password@ (Basic, a proxy's) and REGCAST_API_TOKEN (Bearer) both asked for")
    return Remote(server, token, basic)


def _without_userinfo(server: str) -> tuple[str, tuple[str, str] | None]:
    """``https://user:password@host``: the URL without them, and them for Basic auth (a service behind a
    proxy asking for Basic). Never kept in the URL: errors echo it and httpx's -v lines print it whole."""
    from urllib.parse import unquote, urlsplit, urlunsplit

    _scheme, sep, rest = server.partition("://")
    if "@" not in (rest if sep else server):
        return server, None
    if not sep:  # a URL without its scheme would go out as plain HTTP, the password with it
        fail("--server URL: with user:password@, write the scheme too (https://...)")
    parts = urlsplit(server)
    if not parts.username or "@" in parts.path + parts.query + parts.fragment:
        # an unencoded / ? # in the password split the URL there: said without echoing any of it
        fail("--server URL: user:password@ needs a user, and / ? # @ in them percent-encoded (%2F %3F %23 %40)")
    host = parts.netloc.rpartition("@")[2]
    basic = (unquote(parts.username), unquote(parts.password or ""))
    return urlunsplit(parts._replace(netloc=host)), basic


def endpoint_of(ref: Reference) -> str:
    """A reference's registry as the API's endpoint: plain HTTP for loopback hosts, as docker does."""
    from regcast.registry.reference import is_loopback

    return f"{'http' if is_loopback(ref.registry) else 'https'}://{ref.registry}/v2"


def _basic(given: CredsSource) -> dict[str, Any] | None:
    creds = given.explicit()
    return {"basicauth": {"user": creds.username, "password": creds.password}} if creds else None


def _job_options(opts: dict[str, Any]) -> dict[str, Any]:
    """The request's optional keys, each sent only when asked: the service's defaults stay the service's."""
    extra: dict[str, Any] = {}
    if opts["platforms"]:
        extra["platforms"] = list(opts["platforms"])
    if opts["notify_url"]:
        extra["notify"] = {"url": opts["notify_url"]}
    if not opts["referrers"]:
        extra["referrers"] = False
    if opts["referrer_types"]:
        extra["referrer_types"] = list(opts["referrer_types"])
    if opts["spool"] is not None:
        extra["spool"] = opts["spool"]
    return extra


def _references(src: str, dst: tuple[str, ...]) -> tuple[Reference, list[Reference]]:
    """SRC and DSTs as registry references, or a usage error (a layout, a malformed reference)."""
    from regcast._exceptions import InvalidInput
    from regcast.layouts import is_layout_reference
    from regcast.registry.reference import parse_reference, pinned_mismatch

    for ref in (src, *dst):
        if is_layout_reference(ref):  # else read as docker.io/library/oci:...: a job pushing to Docker Hub
            raise click.UsageError(
                f"{ref}: a service job copies between registries; an image layout is copied with regcast copy"
            )
    try:
        src_ref = parse_reference(src)
        dst_refs = [parse_reference(d, default_tag=None) for d in dst]
    except (ValueError, InvalidInput) as exc:
        raise click.UsageError(str(exc)) from None
    for d in dst_refs:
        if why := pinned_mismatch(src_ref.digest, d):
            raise click.UsageError(why)
    return src_ref, dst_refs


@click.command()
@click.argument("src")
@click.argument("dst", nargs=-1, required=True)
@server_option
@click.option("--src-creds", metavar="USER:PASS", help="Credentials the service uses for the source.")
@click.option("--src-creds-file", metavar="FILE", help="Source USER:PASS from FILE's first line (- for stdin).")
@click.option("--dest-creds", metavar="USER:PASS", help="Credentials the service uses for every target.")
@click.option("--dest-creds-file", metavar="FILE", help="Targets' USER:PASS from FILE's first line (- for stdin).")
@click.option("--src-tls-verify/--no-src-tls-verify", default=True, show_default=True)
@click.option("--dest-tls-verify/--no-dest-tls-verify", default=True, show_default=True)
@click.option("--overwrite/--no-overwrite", default=True, show_default=True, help="As for `regcast copy`.")
@click.option("--platform", "platforms", multiple=True, callback=platform_list, metavar="OS/ARCH[/VARIANT]")
@click.option("--notify-url", metavar="URL", help="POST the job's summary here when it ends.")
@click.option("--referrers/--no-referrers", default=True, show_default=True, help="As for `regcast copy`.")
@click.option(
    "--referrer-type", "referrer_types", multiple=True, metavar="ARTIFACT_TYPE", help="As for `regcast copy`."
)
@click.option("--spool/--no-spool", default=None, help="As for `regcast copy` [default: the service's].")
@click.option("--wait", is_flag=True, help="Show progress until the job ends; exit 0 only if it FINISHED.")
def submit(src: str, dst: tuple[str, ...], server: str | None, wait: bool, **opts: Any) -> None:
    """Queue a copy of SRC to every DST on a regcast service; print the job id."""
    from regcast.console.creds import CredsSource, check_stdin_once

    src_ref, dst_refs = _references(src, dst)
    remote = remote_from(server)
    opts["src_creds"] = CredsSource("src", opts["src_creds"], opts.pop("src_creds_file"))
    opts["dest_creds"] = CredsSource("dest", opts["dest_creds"], opts.pop("dest_creds_file"))
    check_stdin_once(opts["src_creds"], opts["dest_creds"])
    source: dict[str, Any] = {
        "endpoint": endpoint_of(src_ref),
        "image": src_ref.repository,
        "ref": src_ref.ref,
        "verify_tls": opts["src_tls_verify"],
    }
    if auth := _basic(opts["src_creds"]):
        source["auth"] = auth
    targets = []
    for d in dst_refs:
        target: dict[str, Any] = {
            "endpoint": endpoint_of(d),
            "image": d.repository,
            "overwrite": opts["overwrite"],
            "verify_tls": opts["dest_tls_verify"],
        }
        if d.tag or d.digest:  # name:tag@digest goes to its tag (the digest checked above)
            target["ref"] = d.tag or d.ref
        elif src_ref.tag and src_ref.digest:  # as copy: SRC name:tag@digest is read by digest, lands at its tag
            target["ref"] = src_ref.tag
        if auth := _basic(opts["dest_creds"]):
            target["auth"] = auth
        targets.append(target)
    body: dict[str, Any] = {"source": source, "targets": targets}
    body.update(_job_options(opts))
    job_id = str(remote.call("POST", "/api/distribute/image", body, ok=(201,))["id"])
    click.echo(job_id)
    if wait:
        sys.exit(_watch(remote, job_id))


@click.command()
@click.argument("job_id")
@server_option
@click.option("--watch", is_flag=True, help="Show progress bars until the job ends.")
@click.option("--json", "as_json", is_flag=True, help="Print the status body as JSON.")
def status(job_id: str, server: str | None, watch: bool, as_json: bool) -> None:
    """A job's status on a regcast service (exit 0 only if it FINISHED, once it ended)."""
    import json

    remote = remote_from(server)
    if watch:
        sys.exit(_watch(remote, job_id))
    st = remote.call("GET", f"/api/distribute/image/{job_id}")
    if as_json:
        click.echo(json.dumps(st, indent=2))
    else:
        _print_status(st)
    sys.exit(0 if st["value"] in ("FINISHED", "QUEUED", "RUNNING") else EXIT_FAILED)


@click.command()
@click.argument("job_id")
@server_option
def cancel(job_id: str, server: str | None) -> None:
    """Cancel a job on a regcast service."""
    st = remote_from(server).call("DELETE", f"/api/distribute/image/{job_id}", ok=(200, 202))
    click.echo(f"{job_id} {'CANCELLED' if st['value'] == 'CANCELLED' else 'cancel requested'}")


def remote_jobs(server: str, job_id: str | None, state: str | None, limit: int, as_json: bool) -> None:
    """``regcast jobs --server``: the service's list, or one job's status body."""
    import json

    if job_id:
        click.echo(json.dumps(remote_from(server).call("GET", f"/api/distribute/image/{job_id}"), indent=2))
        return
    params = f"?limit={limit}" + (f"&state={state}" if state else "")
    page = remote_from(server).call("GET", f"/api/distribute/image{params}")
    if as_json:
        click.echo(json.dumps(page, indent=2))
        return
    for j in page["jobs"]:
        src = j["source"]
        done = sum(t["state"] in ("FINISHED", "SKIPPED") for t in j["targets"])
        click.echo(f"{j['id']}  {j['value']:<9}  {image_ref(src['image'], src['ref'])}  {done}/{len(j['targets'])}")


def _print_status(st: dict[str, Any]) -> None:
    src = st["source"]
    click.echo(f"{st['id']}  {st['value']}")
    click.echo(f"source  {src['endpoint']} {image_ref(src['image'], src['ref'])}  {st.get('source_digest') or ''}")
    if st.get("error"):
        click.echo(f"error   {st['error']}")
    for t in st["targets"]:
        line = (
            f"  {t['state']:<9} {t['endpoint']} {image_ref(t['image'], t['ref'])}  {t['bytes_done']}/{t['bytes_total']}"
        )
        click.echo(line + (f"  {t['error']}" if t.get("error") else ""))


def _watch(remote: Remote, job_id: str, every: float = 1.0) -> int:
    """Poll the job and show its targets as `regcast copy` does, until it ends; the exit status."""
    import asyncio
    import time

    from regcast.console.progress import display_for, stderr_console

    console = stderr_console()
    st = remote.call("GET", f"/api/distribute/image/{job_id}")
    keys = [f"{t['endpoint']} {image_ref(t['image'], t['ref'])}" for t in st["targets"]]
    from regcast.config import load_settings

    display = display_for(console, keys, load_settings().progress_interval)

    async def follow() -> dict[str, Any]:
        current = st
        async with display.running():
            while True:
                for key, t in zip(keys, current["targets"], strict=False):
                    display.update(
                        key, t["state"], t["bytes_done"], t["bytes_total"], (t.get("detached") or {}).get("reason")
                    )
                if current["value"] in FINAL:
                    return current
                await asyncio.sleep(every)
                current = await asyncio.to_thread(remote.call, "GET", f"/api/distribute/image/{job_id}")

    started = time.monotonic()
    final = asyncio.run(follow())
    for t in final["targets"]:
        if t["state"] in ("FINISHED", "SKIPPED"):
            click.echo(f"{t['state'].lower()} {t['endpoint']} {image_ref(t['image'], t['ref'])}")
        else:
            click.echo(
                f"error: {t['endpoint']} {image_ref(t['image'], t['ref'])}: {t.get('error') or t['state']}", err=True
            )
    click.echo(f"{job_id} {final['value']} after {time.monotonic() - started:.0f}s", err=True)
    return 0 if final["value"] == "FINISHED" else EXIT_FAILED
