"""Referrers at ONE registry: the OCI 1.1 referrers API, the referrers tag schema, cosign's tags.

I/O only, through ``RegistryClient.send`` (auth, retries, redirects and error translation stay
there). The copy logic that uses these lives in ``transfer/referrers.py``.

- API: ``GET /v2/<name>/referrers/<digest>[?artifactType=]``, an OCI index of descriptors, paged
  through ``Link: <next>; rel="next"``. A 404 means the registry has no such API (remembered a while
  per pool entry: ``memo.py``).
- Tag schema (the fallback): the index at tag ``<alg>-<hex>`` (alg truncated to 32, hex to 64).
- cosign: tags ``sha256-<hex>.sig|.att|.sbom`` next to the image.
- ``tag_names``: the repository's tags in one answer, so discovery asks only for the referrer tags
  that exist (one GET instead of the tag-schema GET and three cosign HEADs per subject).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

from regcast._exceptions import ContentError, ManifestTooLarge, RegcastError, UnsupportedManifest
from regcast.registry import mediatypes as mt
from regcast.registry._transport import read_capped, translate_errors
from regcast.registry.auth import scope
from regcast.registry.client import RegistryClient, next_link, with_query
from regcast.registry.digest import announced_digest, validate_digest
from regcast.registry.guards import check_followed_url
from regcast.registry.manifest import MAX_MANIFEST_BYTES, Manifest, manifest_json, parse_manifest
from regcast.registry.reference import validate_ref, validate_repository
from regcast.registry.request import reading

COSIGN_SUFFIXES = ("sig", "att", "sbom")
MAX_PAGES = 100  # a registry that keeps answering "next" is not followed forever
# tag_names: one page; a repository with more tags is asked tag by tag, as before. Not the mirror tag
# walk's page size (mirrors/tags.py), so the two listings stay apart at a proxy and in InFlight keys.
TAG_LIST_PAGE = 512
MAX_TAG_LIST_BYTES = 256 * 1024
# The spec's "no referrers API" is a 404; registries that do not route the path at all answer these too.
NO_API = frozenset({400, 404, 405, 501})
# Of those, the answers that say "this registry has no such route", remembered for the pool entry
# (``memo.py``); a 400 may be about this one request (a filter it refuses): it is not.
NO_ROUTE = frozenset({404, 405, 501})


def fallback_tag(digest: str) -> str:
    """The referrers tag schema's tag for ``digest``: ``<alg>-<hex>``, truncated as the spec says."""
    alg, hexpart = validate_digest(digest).split(":", 1)
    return f"{alg[:32]}-{hexpart[:64]}"


_REFERRER_TAG = re.compile(r"^(?:sha256-[0-9a-f]{64}(?:\.(?:sig|att|sbom))?|sha512-[0-9a-f]{64})\Z")


def is_referrer_tag(tag: str) -> bool:
    """Is ``tag`` one a referrer lives under (the tag schema's ``<alg>-<hex>``, cosign's ``.sig|.att|.sbom``)?"""
    return bool(_REFERRER_TAG.match(tag))


def cosign_tags(digest: str) -> list[str]:
    """cosign's tags for the signature, attestation and SBOM of ``digest`` (sha256 only, as cosign)."""
    alg, hexpart = validate_digest(digest).split(":", 1)
    if alg != "sha256":
        return []
    return [f"sha256-{hexpart}.{suffix}" for suffix in COSIGN_SUFFIXES]


@dataclass
class Listing:
    """Referrer descriptors (as the registry wrote them) and whether it applied the type filter."""

    descriptors: list[dict[str, Any]]
    filtered: bool


def _descriptors(raw: bytes, registry: str, what: str, none_is_empty: bool = False) -> list[dict[str, Any]]:
    """The descriptors of an index body; ``none_is_empty``: a referrers API page may say "none" as
    ``"manifests": null`` or leave the list out (registries that serialise an empty list so)."""
    try:
        doc = manifest_json(raw)
    except ValueError:
        raise UnsupportedManifest(f"registry {registry}: {what} is not JSON") from None
    items = doc.get("manifests") if isinstance(doc, dict) else None
    if items is None and none_is_empty and isinstance(doc, dict) and _index_shaped(doc):
        items = []
    if not isinstance(items, list):
        raise UnsupportedManifest(f"registry {registry}: {what} has no 'manifests' list")
    out = []
    for d in items:
        if isinstance(d, dict) and isinstance(d.get("digest"), str):
            validate_digest(d["digest"])
            out.append(d)
    return out


def _index_shaped(doc: dict[str, Any]) -> bool:
    """An index saying "none" (``schemaVersion`` or ``mediaType``, no ``errors``): not ``{}`` or an
    error body answered 200, which must not pass for "no referrers" (the fallback tag would go unread)."""
    return "errors" not in doc and ("schemaVersion" in doc or "mediaType" in doc)


def index_entries(index: Manifest) -> list[dict[str, Any]]:
    """The descriptor objects of an index exactly as written (artifactType and annotations kept)."""
    return _descriptors(index.raw, "", "index")


async def list_referrers(
    client: RegistryClient,
    repository: str,
    digest: str,
    artifact_type: str | None = None,
    spend: Callable[[int], None] | None = None,
) -> Listing | None:
    """Every page of the referrers API for ``digest``; None when the registry has no referrers API.

    ``spend`` is told each page's size as it is read and raises to stop (the copy's graph budget:
    a source listing page after page cannot grow memory past the limit).
    """
    validate_repository(repository)
    url = await client.url(f"{repository}/referrers/{validate_digest(digest)}")
    if client.memo.referrers_api_absent():  # an earlier job of this pool entry was answered 404 (memo.py)
        return None
    if artifact_type:
        url = with_query(url, artifactType=artifact_type)
    found: list[dict[str, Any]] = []
    filtered = True
    for page in range(MAX_PAGES):
        answer = await reading(client, "GET", url, functools.partial(_page, client, repository, digest, url, page))
        if answer is None:
            return None
        raw, applied, link = answer
        if len(raw) > MAX_MANIFEST_BYTES:
            raise ManifestTooLarge(f"registry {client.name}: referrers list of {digest} is over the size limit")
        if spend is not None:
            spend(len(raw))
        found.extend(_descriptors(raw, client.name, f"referrers list of {digest}", none_is_empty=True))
        filtered = filtered and "artifactType" in applied
        if link is None:
            break
        url = check_followed_url(urljoin(url, link), came_from=url, registry=client.name, what="Link")
    return Listing(found, filtered and bool(artifact_type))


async def _page(
    client: RegistryClient, repository: str, digest: str, url: str, page: int
) -> tuple[bytes, set[str], str | None] | None:
    """One page of a referrers listing: its body, the filters applied, the next page's URL as written;
    None when the registry has no referrers API (asked on the first page only)."""
    resp = await client.send(
        "GET", url, scopes=(scope(repository, "pull"),), headers={"Accept": mt.OCI_INDEX}, follow_redirects=True
    )
    try:
        if resp.status in NO_API and page == 0:
            if resp.status in NO_ROUTE:
                client.memo.note_referrers_api_absent()
            return None
        if resp.status != 200:
            raise await client.refusal(resp, f"listing referrers of {repository}@{digest}")
        with translate_errors(client.name, "GET", url, body=True):
            raw = await read_capped(resp, MAX_MANIFEST_BYTES)
        applied = {f.strip() for f in resp.headers.get("OCI-Filters-Applied", "").split(",")}
        return raw, applied, next_link(resp.headers.get("Link"))
    finally:
        resp.release()


async def tag_names(client: RegistryClient, repository: str) -> frozenset[str] | None:
    """Every tag of ``repository`` when one answer holds them all; None when it cannot say (refused,
    paged, too large, not a tag list, any error): the caller then asks for each tag on its own.

    Read by every job (tags move); joined when the same list is in flight for another job."""
    if client.memo.tag_list_refused(repository):
        return None
    try:
        url = with_query(await client.url(f"{validate_repository(repository)}/tags/list"), n=str(TAG_LIST_PAGE))
        return await client.reads.read(("GET", url), lambda: _tag_names(client, repository, url))
    except RegcastError:
        return None


async def _tag_names(client: RegistryClient, repository: str, url: str) -> frozenset[str] | None:
    resp = await client.send("GET", url, scopes=(scope(repository, "pull"),), headers={"Accept": "application/json"})
    try:
        if resp.status in (401, 403):  # this credential may pull but not list (ECR without ListImages)
            client.memo.note_tag_list_refused(repository)
        if resp.status != 200 or next_link(resp.headers.get("Link")):
            return None
        with translate_errors(client.name, "GET", url):
            raw = await read_capped(resp, MAX_TAG_LIST_BYTES)
    finally:
        resp.release()
    try:
        tags = json.loads(raw).get("tags") or []
    except (ValueError, UnicodeDecodeError, AttributeError):
        return None
    if len(raw) > MAX_TAG_LIST_BYTES or not isinstance(tags, list) or len(tags) >= TAG_LIST_PAGE:
        return None  # a full page may have a next one the registry did not link
    return frozenset(t for t in tags if isinstance(t, str))


@dataclass
class Held:
    """A manifest read with what a conditional write needs: its ``ETag``, if the registry gave one."""

    manifest: Manifest
    etag: str | None


async def read_index(client: RegistryClient, repository: str, tag: str) -> Held | None:
    """The index at ``tag`` (the tag schema) with its ETag, or None when the tag does not exist."""
    validate_repository(repository)
    url = await client.url(f"{repository}/manifests/{validate_ref(tag)}")
    resp = await client.send(
        "GET", url, scopes=(scope(repository, "pull"),), headers={"Accept": mt.ACCEPT_MANIFESTS}, follow_redirects=True
    )
    try:
        if resp.status == 404:
            return None
        if resp.status != 200:
            raise await client.refusal(resp, f"reading referrers index {repository}:{tag}")
        with translate_errors(client.name, "GET", url):
            raw = await read_capped(resp, MAX_MANIFEST_BYTES)
        try:
            manifest = parse_manifest(raw, resp.headers.get("Content-Type", ""))
        except ContentError as exc:
            raise type(exc)(f"registry {client.name}: referrers index {repository}:{tag}: {exc}") from None
        if not manifest.is_index:
            raise UnsupportedManifest(f"registry {client.name}: {repository}:{tag} is not an index")
        return Held(manifest, resp.headers.get("ETag"))
    finally:
        resp.release()


@dataclass
class Pushed:
    """What a manifest PUT answered: the digest announced, whether the registry tracks the subject
    (``OCI-Subject``), and whether an ``If-Match`` precondition failed (someone wrote first)."""

    digest: str | None
    subject_kept: bool
    conflict: bool = False


async def put_manifest(
    client: RegistryClient, repository: str, ref: str, raw: bytes, media_type: str, if_match: str | None = None
) -> Pushed:
    """Push manifest bytes unchanged; reads the answer's ``OCI-Subject``; a 412 is a conflict, not an error."""
    validate_repository(repository)
    url = await client.url(f"{repository}/manifests/{validate_ref(ref)}")
    headers = {"Content-Type": media_type}
    if if_match:
        headers["If-Match"] = if_match
    resp = await client.send("PUT", url, scopes=(scope(repository, "pull,push"),), headers=headers, data=raw)
    try:
        if resp.status == 412 and if_match:
            return Pushed(None, False, conflict=True)
        if resp.status not in (200, 201, 202):
            raise await client.refusal(resp, f"pushing manifest {repository}:{ref}")
        announced = announced_digest(resp.headers.get("Docker-Content-Digest"))
        return Pushed(announced, bool(resp.headers.get("OCI-Subject")))
    finally:
        resp.release()
