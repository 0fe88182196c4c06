"""Manifest requests of one registry client: GET (capped, verified), HEAD, PUT, DELETE.

Functions of a ``RegistryClient`` (as ``blobs.py``); the client's methods of the same names call
them. Bytes are kept exactly as the registry stored them (``manifest.py`` parses only to find
descriptors); large manifests are hashed and parsed in a thread so one job never stalls the others.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from regcast._exceptions import ContentError, DigestMismatch, ManifestTooLarge, NotFound, RegcastError
from regcast.registry import mediatypes as mt
from regcast.registry import request
from regcast.registry._transport import read_capped, translate_errors
from regcast.registry.auth import scope
from regcast.registry.digest import announced_digest, digest_of, validate_digest
from regcast.registry.manifest import MAX_MANIFEST_BYTES, Manifest, parse_manifest
from regcast.registry.reference import validate_ref, validate_repository
from regcast.registry.tls import aiohttp

if TYPE_CHECKING:
    from regcast.registry.client import RegistryClient

log = logging.getLogger("regcast.registry")
PARSE_ON_LOOP_MAX = 256 * 1024  # larger manifests are hashed and parsed in a thread
NO_HEAD = frozenset({405, 501})  # a manifest HEAD the registry does not route


async def manifest_url(client: RegistryClient, repository: str, ref: str) -> str:
    validate_repository(repository)
    validate_ref(ref)
    return await client.url(f"{repository}/manifests/{ref}")


async def _manifest_request(
    client: RegistryClient, method: str, repository: str, ref: str, if_none_match: str | None = None
) -> tuple[str, aiohttp.ClientResponse]:
    url = await manifest_url(client, repository, ref)
    headers = {"Accept": mt.ACCEPT_MANIFESTS}
    if if_none_match is not None:
        headers["If-None-Match"] = f'"{if_none_match}"'
    resp = await client.send(method, url, scopes=(scope(repository, "pull"),), headers=headers, follow_redirects=True)
    return url, resp


async def get_manifest(client: RegistryClient, repository: str, ref: str) -> Manifest:
    """The manifest bytes exactly as stored, verified against the digest asked for or announced.

    By digest: from this pool entry's memo when an earlier job read it (``memo.py``). The same GET
    already under way for another job of this pool entry is joined (``coalesce.py``)."""
    if ":" in ref:
        kept = client.memo.manifest(repository, validate_digest(ref))
        if kept is not None:
            return kept
    url = await manifest_url(client, repository, ref)
    return await client.reads.read(
        ("GET", url), lambda: request.reading(client, "GET", url, lambda: _get_manifest(client, repository, ref))
    )


async def _get_manifest(
    client: RegistryClient, repository: str, ref: str, conditional: bool = True, again: bool = False
) -> Manifest:
    """One GET; by tag with ``If-None-Match`` when the memo holds what the tag held last (a 304: that).

    By tag, bytes that do not hash to the announced ``Docker-Content-Digest`` are asked for by their own
    digest: served so, they are what the registry holds under a wrong header (seen in the wild; crane
    ignores the header by tag). Otherwise the tag is read once more (``again``) and checked against the
    header again: a read corrupted on its way is replaced, or fails."""
    held = client.memo.tagged(repository, ref) if conditional and ":" not in ref else None
    url, resp = await _manifest_request(client, "GET", repository, ref, held.digest if held else None)
    try:
        if resp.status == 304 and held is not None:
            announced = announced_digest(resp.headers.get("Docker-Content-Digest"))
            if announced is None or announced == held.digest:
                client.memo.keep(repository, held, ref)  # the registry answered for it just now
                return held
            resp.release()
            return await _get_manifest(client, repository, ref, conditional=False)
        if resp.status != 200:
            raise await client.refusal(resp, f"getting manifest {repository}:{ref}")
        length = resp.content_length
        if length is not None and length > MAX_MANIFEST_BYTES:
            raise ManifestTooLarge(
                f"registry {client.name}: manifest {repository}:{ref} is {length} bytes, "
                f"over the {MAX_MANIFEST_BYTES} byte limit"
            )
        with translate_errors(client.name, "GET", url, body=True):
            raw = await read_capped(resp, MAX_MANIFEST_BYTES)
        if len(raw) > MAX_MANIFEST_BYTES:
            raise ManifestTooLarge(
                f"registry {client.name}: manifest {repository}:{ref} is over the {MAX_MANIFEST_BYTES} byte limit"
            )
        by_tag = ":" not in ref
        expected = announced_digest(resp.headers.get("Docker-Content-Digest")) if by_tag else ref
        ctype = resp.headers.get("Content-Type", "")
        mismatch = ""  # by tag: the announced digest these bytes do not hash to
        try:
            manifest = await _parsed(raw, ctype, expected)
        except DigestMismatch as exc:
            if not by_tag or again or expected is None:
                raise _named(exc, client, repository, ref) from None
            mismatch = expected
        except ContentError as exc:
            raise _named(exc, client, repository, ref) from None
    finally:
        resp.release()
    if mismatch:  # asked for again outside the try above: an error of that read is named once
        return await _announced_otherwise(client, repository, ref, raw, mismatch)
    # its digest is the hash of these bytes (verified above when asked or announced): safe to keep by it
    client.memo.keep(repository, manifest, None if ":" in ref else ref)
    return manifest


async def _announced_otherwise(
    client: RegistryClient, repository: str, ref: str, raw: bytes, announced: str
) -> Manifest:
    """Bytes read by tag that do not hash to the ``announced`` digest: what the registry holds by their own
    digest (a wrong header), else the tag read once more."""
    held = await _held_as(client, repository, digest_of(raw, announced.split(":", 1)[0]))
    if held is not None:
        log.warning(
            "registry %s: manifest %s:%s is announced as %s, but the registry holds its bytes as %s",
            client.name,
            repository,
            ref,
            announced,
            held.digest,
        )
        return held
    return await _get_manifest(client, repository, ref, conditional=False, again=True)


def _named(exc: ContentError, client: RegistryClient, repository: str, ref: str) -> ContentError:
    """``exc`` naming the registry and manifest, as every error does."""
    return type(exc)(f"registry {client.name}: manifest {repository}:{ref}: {exc}")


async def get_manifest_bytes(client: RegistryClient, repository: str, ref: str) -> bytes:
    """The bytes served for ``ref`` now, capped but not checked against any header, memo or cache: what a
    tag holds after a PUT answered with a digest other than the bytes sent (``stored_as_sent``)."""
    url = await manifest_url(client, repository, ref)

    async def once() -> bytes:
        _url, resp = await _manifest_request(client, "GET", repository, ref)
        try:
            if resp.status != 200:
                raise await client.refusal(resp, f"getting manifest {repository}:{ref}")
            with translate_errors(client.name, "GET", url, body=True):
                raw = await read_capped(resp, MAX_MANIFEST_BYTES)
            if len(raw) > MAX_MANIFEST_BYTES:
                raise ManifestTooLarge(
                    f"registry {client.name}: manifest {repository}:{ref} is over the {MAX_MANIFEST_BYTES} byte limit"
                )
            return raw
        finally:
            resp.release()

    return await request.reading(client, "GET", url, once)


async def _held_as(client: RegistryClient, repository: str, digest: str) -> Manifest | None:
    """The manifest the registry serves by ``digest`` (verified), or None when it serves none so."""
    try:
        return await _get_manifest(client, repository, digest)
    except RegcastError:
        return None


async def _parsed(raw: bytes, content_type: str, expected: str | None) -> Manifest:
    if len(raw) > PARSE_ON_LOOP_MAX:  # hashing and parsing megabytes would stall every other job
        return await asyncio.to_thread(parse_manifest, raw, content_type, expected)
    return parse_manifest(raw, content_type, expected)


async def head_manifest(client: RegistryClient, repository: str, ref: str) -> str | None:
    """The digest the registry holds for ``ref``, or None when it has none (a HEAD under way is joined)."""
    url = await manifest_url(client, repository, ref)
    return await client.reads.read(("HEAD", url), lambda: _head_manifest(client, repository, ref))


async def _head_manifest(client: RegistryClient, repository: str, ref: str) -> str | None:
    _url, resp = await _manifest_request(client, "HEAD", repository, ref)
    try:
        if resp.status == 404:
            return None
        if resp.status in NO_HEAD:
            digest = None  # a registry (or gateway) that takes no HEAD: asked with GET below
        elif resp.status != 200:
            raise await client.refusal(resp, f"checking manifest {repository}:{ref}")
        else:
            digest = announced_digest(resp.headers.get("Docker-Content-Digest"))
    finally:
        resp.release()
    if digest:
        return digest
    try:  # older registries: no HEAD, or no (or a malformed) digest header on it: hash the bytes
        return (await client.get_manifest(repository, ref)).digest
    except NotFound:
        return None


async def put_manifest(client: RegistryClient, repository: str, ref: str, raw: bytes, media_type: str) -> str | None:
    """Push manifest bytes unchanged; returns the digest the registry announced, if any."""
    url = await manifest_url(client, repository, ref)
    resp = await client.send(
        "PUT",
        url,
        scopes=(scope(repository, "pull,push"),),
        headers={"Content-Type": media_type},
        data=raw,
    )
    try:
        if resp.status not in (200, 201, 202):
            raise await client.refusal(resp, f"pushing manifest {repository}:{ref}")
        if ":" not in ref:
            client.memo.note_tags(repository)  # it holds a tag now: the next job HEADs its blobs at once
        return announced_digest(resp.headers.get("Docker-Content-Digest"))
    finally:
        resp.release()


async def delete_manifest(client: RegistryClient, repository: str, ref: str) -> bool:
    """Delete a tag (OCI) or a manifest by digest; False when the registry had none.

    A registry that cannot delete tags (distribution 2.8 answers 400/405 ``UNSUPPORTED``)
    raises ``RegistryResponseError``; the caller decides whether a digest delete is right.
    """
    url = await manifest_url(client, repository, ref)
    client.memo.forget(repository, ref)
    resp = await client.send("DELETE", url, scopes=(scope(repository, "delete"),))
    try:
        if resp.status == 404:
            return False
        if resp.status not in (200, 202, 204):
            raise await client.refusal(resp, f"deleting manifest {repository}:{ref}")
        return True
    finally:
        resp.release()
