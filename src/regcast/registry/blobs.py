"""Blobs on one registry: existence, a download that resumes, and uploads (monolithic or chunked).

Download: a broken stream is continued with ``Range: bytes=<received>-``; a registry that ignores
Range answers 200 and the bytes already passed on are skipped, so the caller sees one unbroken
stream (and keeps its running digest). Upload strategies: ``monolithic`` (POST, then one PUT with
the body) and ``chunked`` (POST, PATCHes of at most ``chunk_cap`` bytes, then an empty PUT);
the newest ``Location`` is always used, relative or absolute, its query kept.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import TYPE_CHECKING
from urllib.parse import urljoin

from regcast._exceptions import (
    ContentError,
    Failure,
    ProtocolViolation,
    RegcastError,
    RegistryError,
    RegistryUnreachable,
    TokenRejected,
    UploadLost,
)
from regcast.registry._transport import read_capped, translate_errors
from regcast.registry.auth import scope
from regcast.registry.client import Body, RegistryClient, with_query
from regcast.registry.digest import validate_digest
from regcast.registry.guards import check_followed_url
from regcast.registry.redact import redact_url
from regcast.registry.reference import validate_repository
from regcast.registry.tls import aiohttp

if TYPE_CHECKING:
    from aiohttp.client_proto import ResponseHandler

log = logging.getLogger("regcast.registry")
# Success answers to an upload PATCH or PUT. The spec says 202 and 201, ECR answers a PATCH 201, pulp 204;
# any 2xx is the registry saying it took the bytes (a missing blob still fails the manifest push after it).
UPLOAD_OK = (200, 201, 202, 204)
CANCEL_BUDGET = 5.0  # seconds for dropping one unfinished upload session (best effort)
# Refusals of an upload that a new session may pass (UploadLost): the session is gone, or the bytes that
# arrived do not hash (regcast sends only bytes it verified, so they changed on the way)
UPLOAD_LOST = frozenset({"BLOB_UPLOAD_UNKNOWN", "BLOB_UPLOAD_INVALID", "DIGEST_INVALID"})


async def blob_exists(client: RegistryClient, repository: str, digest: str) -> bool:
    """Is the blob in ``repository``? 401/403 count as "no" (Artifactory answers 403 for a missing blob,
    and push-only credentials cannot read): the upload that follows succeeds or fails clearly. The same
    HEAD already under way for another job of this pool entry is joined (``coalesce.py``)."""
    validate_repository(repository)
    url = await client.url(f"{repository}/blobs/{validate_digest(digest)}")
    return await client.reads.read(("HEAD", url), lambda: _blob_exists(client, repository, digest, url))


async def _blob_exists(client: RegistryClient, repository: str, digest: str, url: str) -> bool:
    resp = await client.send("HEAD", url, scopes=(scope(repository, "pull"),), follow_redirects=True)
    try:
        if resp.status == 200:
            return True
        if resp.status in (401, 403, 404):
            return False
        raise await client.refusal(resp, f"checking blob {digest}")
    finally:
        resp.release()


async def holds_no_tags(client: RegistryClient, repository: str) -> bool:
    """Does ``repository`` answer with no tag at all (404 NAME_UNKNOWN, or an empty list)? Then it was
    never pushed to, so blob HEADs there are skipped (issue 17). Any doubt (an error, 401/403, a body
    that is not a tag list) answers False: the HEADs are asked as before. A repository this pool
    entry saw holding a tag (listed, or a tag pushed) minutes ago answers False without asking: it
    only means the HEADs are asked (``memo.py``)."""
    validate_repository(repository)
    if client.memo.holds_tags(repository):
        return False
    try:
        url = with_query(await client.url(f"{repository}/tags/list"), n="1")
    except RegcastError:  # whatever it is, the manifest HEAD beside it reports it
        return False
    return await client.reads.read(("GET", url), lambda: _holds_no_tags(client, repository, url))


async def _holds_no_tags(client: RegistryClient, repository: str, url: str) -> bool:
    try:
        resp = await client.send(
            "GET", url, scopes=(scope(repository, "pull"),), headers={"Accept": "application/json"}
        )
    except RegcastError:  # whatever it is, the manifest HEAD beside it reports it
        return False
    try:
        if resp.status == 404:  # the registry says the repository is unknown; a bare 404 proves nothing
            return (await client.refusal(resp, "listing tags")).code == "NAME_UNKNOWN"
        if resp.status != 200:
            return False
        with translate_errors(client.name, "GET", url):
            raw = await read_capped(resp, 64 * 1024)
    except RegcastError:
        return False
    finally:
        resp.release()
    try:
        doc = json.loads(raw)
    except ValueError:
        return False
    if isinstance(doc, dict) and doc.get("tags"):
        client.memo.note_tags(repository)
        return False
    return isinstance(doc, dict)


async def read_blob(
    client: RegistryClient, repository: str, digest: str, size: int, start: int = 0, read_size: int | None = None
) -> AsyncGenerator[bytes, None]:
    """Every byte of a blob from ``start`` on, resuming a broken download where it stopped (bounded
    by the retry policy). A registry that ignores ``Range`` sends it all; the prefix is skipped.
    ``read_size`` (default the chunk size) is both the chunk yielded and the response's buffer:
    a read fed to slow targets only keeps that little in memory while they catch up."""
    validate_repository(repository)
    url = await client.url(f"{repository}/blobs/{validate_digest(digest)}")
    retry = client.options.retry
    received = resumed_at = start
    while True:
        headers = {"Range": f"bytes={received}-"} if received else None
        resp = await client.send(  # streamed: a limit between reads (progress), never a total limit
            "GET",
            url,
            scopes=(scope(repository, "pull"),),
            headers=headers,
            follow_redirects=True,
            streaming=True,
            read_bufsize=read_size,
            # a resume after bytes of this read went on: the uploads they feed may hold the registry's slots
            # while they wait for the rest (one registry as source and target), so it must not wait for a slot
            limited=received == start,
        )
        try:
            skip = _skip_for(resp, received, client.name, digest)
            if skip is None:
                raise await client.refusal(resp, f"getting blob {digest}")
            total = _announced_total(resp)
            if total is not None and total != size:  # reading again cannot change it: the manifest is wrong
                raise ContentError(f"blob {digest} is {total} bytes, not the {size} its manifest says; not committed")
            try:
                async for chunk in _body(resp, client, url, read_size or client.options.chunk_size):
                    if skip:
                        if len(chunk) <= skip:
                            skip -= len(chunk)
                            continue
                        chunk, skip = chunk[skip:], 0
                    received += len(chunk)
                    yield chunk
                return
            except RegistryUnreachable as exc:
                if received >= size:
                    raise
                if received > resumed_at:  # bytes came since the last break: a stall now is a new one
                    retry = retry.progressed()
                resumed_at = received
                retry = retry.increment("GET", exc)
                client.note_retry(f"{exc} after {received} bytes; resuming in {retry.wait:.1f}s")
        finally:
            resp.release()
        await asyncio.sleep(retry.wait)


def _skip_for(resp: aiohttp.ClientResponse, received: int, registry: str, digest: str) -> int | None:
    """How many leading bytes of this answer were already passed on; None if the answer is an error."""
    if resp.status == 200:
        if received:
            log.info(
                "registry %s ignored Range for %s: restarting the download, skipping %d bytes",
                registry,
                digest,
                received,
            )
        return received
    if resp.status == 206 and received:
        content_range = resp.headers.get("Content-Range", "")
        if not content_range.startswith(f"bytes {received}-"):
            raise ProtocolViolation(
                f"registry {registry}: resumed {digest} at the wrong offset ({content_range!r})", registry=registry
            )
        return 0
    return None


def _announced_total(resp: aiohttp.ClientResponse) -> int | None:
    """The blob's whole length as this answer gives it; None when not given, or given of encoded bytes."""
    if resp.headers.get("Content-Encoding", "identity").strip().lower() != "identity":
        return None
    if resp.status == 206:
        total = resp.headers.get("Content-Range", "").rpartition("/")[2].strip()
        return int(total) if total.isdigit() else None
    return resp.content_length


async def _body(resp: aiohttp.ClientResponse, client: RegistryClient, url: str, size: int) -> AsyncIterator[bytes]:
    """The body in chunks of ``size``; a source dripping under ``min_throughput`` bytes/s over a window
    is cut (``RegistryUnreachable``: resumed with Range like any broken stream)."""
    floor, window = client.options.min_throughput, client.options.throughput_window
    loop = asyncio.get_running_loop()
    started, moved = loop.time(), 0
    while True:
        with translate_errors(client.name, "GET", url):
            chunk = await resp.content.read(size)
        if not chunk:
            return
        moved += len(chunk)
        elapsed = loop.time() - started
        if floor and elapsed >= window:
            if moved < floor * elapsed:
                raise RegistryUnreachable(
                    f"registry {client.name}: GET {redact_url(url)}: {moved} bytes in {elapsed:.0f}s, "
                    f"under the {floor} bytes/s minimum (REGCAST_MIN_THROUGHPUT)",
                    registry=client.name,
                    failure=Failure.TIMEOUT,
                )
            started, moved = loop.time(), 0
        held = _hold_socket(resp)
        try:
            yield chunk
        finally:
            if held is not None:
                held.resume_reading()


def _hold_socket(resp: aiohttp.ClientResponse) -> ResponseHandler | None:
    """Stop reading the socket while the caller holds a chunk (it resumes when the next is asked for).

    Otherwise aiohttp reads ahead up to 2x ``read_bufsize`` per response while the caller is away,
    e.g. while a fan-out waits on a slow target's full channel: that is memory per blob in flight
    that a slow target costs and a fast one does not (issue 19). Held, the bytes wait in the
    kernel's socket buffer and the sender is paced by TCP. Returns the protocol to resume, or
    None when there is nothing to hold: the body is all in, the connection failed or is gone
    (aiohttp's parser refuses a pause then).
    """
    content, conn = resp.content, resp.connection
    if conn is None or conn.protocol is None or content.is_eof() or content.exception() is not None:
        return None
    protocol = conn.protocol
    try:
        protocol.pause_reading()
    except (AssertionError, AttributeError):  # between messages: no payload parser to pause
        return None
    return protocol


async def start_upload(
    client: RegistryClient, repository: str, *, mount: str | None = None, mount_from: str | None = None
) -> str | None:
    """Open an upload session; its absolute Location, or None when the mount worked (201)."""
    validate_repository(repository)
    url = await client.url(f"{repository}/blobs/uploads/")
    scopes: tuple[str, ...] = (scope(repository, "pull,push"),)
    if mount and mount_from:
        url = with_query(url, mount=validate_digest(mount), **{"from": validate_repository(mount_from)})
        scopes += (scope(mount_from, "pull"),)
    resp = await client.send("POST", url, scopes=scopes, headers={"Content-Length": "0"}, data=b"")
    try:
        if mount and resp.status == 201 and "/blobs/uploads/" not in resp.headers.get("Location", ""):
            return None  # mounted: Location points at the blob itself
        if resp.status not in (200, 201, 202) or not resp.headers.get("Location"):
            raise await client.refusal(resp, "starting a blob upload")
        client.uploads.note_min_length(resp.headers.get("OCI-Chunk-Min-Length"))
        return _location(resp, url, client)
    finally:
        resp.release()


def _location(resp: aiohttp.ClientResponse, current: str, client: RegistryClient) -> str:
    location = resp.headers.get("Location")
    registry = client.name
    if not location:
        raise ProtocolViolation(f"registry {registry}: upload answer without Location", registry=registry)
    return check_followed_url(
        urljoin(current, location),
        came_from=current,
        registry=registry,
        what="upload Location",
        policy=client.options.policy,
    )


async def _upload_request(
    client: RegistryClient,
    method: str,
    url: str,
    repository: str,
    headers: dict[str, str],
    body: Body,
    ok: tuple[int, ...],
    what: str,
) -> str:
    resp = await client.send(method, url, scopes=(scope(repository, "pull,push"),), headers=headers, data=body)
    try:
        if resp.status == 401 and not isinstance(body, bytes | None):
            raise TokenRejected(
                f"registry {client.name}: {what}: token rejected mid-upload (401: each try asks for a new one)",
                registry=client.name,
                status=401,
                method=method,
                url=redact_url(url),
            )
        if resp.status not in ok:
            refused = await client.refusal(resp, what)
            if refused.code in UPLOAD_LOST:
                raise UploadLost(
                    str(refused),
                    registry=refused.registry,
                    status=refused.status,
                    code=refused.code,
                    method=refused.method,
                    url=refused.url,
                )
            raise refused
        return _location(resp, url, client) if resp.headers.get("Location") else url
    finally:
        resp.release()


async def put_monolithic(
    client: RegistryClient, location: str, repository: str, digest: str, size: int, body: Body
) -> None:
    """``PUT <location>&digest=`` with the whole body, streamed."""
    url = with_query(location, digest=validate_digest(digest))
    headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
    await _upload_request(client, "PUT", url, repository, headers, body, UPLOAD_OK, f"uploading blob {digest}")


async def patch_chunk(
    client: RegistryClient, location: str, repository: str, offset: int, size: int, body: Body
) -> str:
    """One PATCH of ``size`` bytes at ``offset``; returns the newest Location (``UPLOAD_OK``)."""
    headers = {
        "Content-Type": "application/octet-stream",
        "Content-Length": str(size),
        "Content-Range": f"{offset}-{offset + size - 1}",
    }
    return await _upload_request(
        client, "PATCH", location, repository, headers, body, UPLOAD_OK, f"uploading a chunk at {offset}"
    )


async def put_final(client: RegistryClient, location: str, repository: str, digest: str) -> None:
    """The closing ``PUT <location>&digest=`` of a chunked upload (no body)."""
    url = with_query(location, digest=validate_digest(digest))
    await _upload_request(
        client, "PUT", url, repository, {"Content-Length": "0"}, b"", UPLOAD_OK, f"committing blob {digest}"
    )


async def cancel_upload(client: RegistryClient, location: str, repository: str) -> None:
    """Best effort: drop an unfinished upload session, within ``CANCEL_BUDGET`` seconds in all.

    Right after a request was cut mid-body the registry may still be handling it and answer
    404/400 to the DELETE; a few short retries let that settle. A registry that does not answer
    is not waited for (it expires stale sessions itself): a job cancelled or stopped on SIGTERM
    waits for these DELETEs, and a hung target held it for the request timeout and its retries.
    """
    try:
        await asyncio.wait_for(_cancel_upload(client, location, repository), CANCEL_BUDGET)
    except TimeoutError:
        log.debug("cancelling upload at %s: no answer within %gs", client.name, CANCEL_BUDGET)


async def _cancel_upload(client: RegistryClient, location: str, repository: str) -> None:
    for delay in (0.0, 0.2, 0.5):
        if delay:
            await asyncio.sleep(delay)
        try:
            resp = await client.send("DELETE", location, scopes=(scope(repository, "pull,push"),))
        except RegistryError as exc:
            log.debug("cancelling upload at %s failed: %s", client.name, exc)
            return
        status = resp.status
        resp.release()
        log.debug("cancel upload at %s: %s", client.name, status)
        if status < 300 or status not in (400, 404, 409):
            return
