"""Listing a repository's tags: ``GET /v2/<name>/tags/list?n=`` page by page, following ``Link``.

Registries that paginate send ``Link: </v2/...?n=100&last=x>; rel="next"``; the next URL is
checked like any redirect (same scheme rules, no metadata address). A registry that ignores
``n`` answers everything at once, which is fine too.

The whole walk is one read of ``coalesce.py``'s ``InFlight`` (the client's pool entry): mirror runs,
push events and ``latest`` selections listing the same repository at the same moment share one walk
of the pages; nothing is kept once it ends (tags move). Its key is not the first page's
``("GET", url)``: a one-page reader of that URL (``registry/referrers.py``'s ``tag_names``) answers
something else and must neither join nor be joined by a walk.
"""

from __future__ import annotations

import functools
import json
from urllib.parse import urljoin

from regcast._exceptions import ProtocolViolation, RegistryResponseError
from regcast.registry._transport import read_capped, translate_errors
from regcast.registry.auth import scope
from regcast.registry.client import RegistryClient, next_link, with_query
from regcast.registry.guards import check_followed_url
from regcast.registry.reference import validate_repository
from regcast.registry.request import reading

PAGE_SIZE = 1000
MAX_PAGE_BYTES = 16 * 1024 * 1024
MAX_PAGES = 10_000
# All pages of one walk together: a registry answering page after page of new tags (10,000 pages of up to
# 16 MiB each) grew the walk's dict past any memory; the largest real repositories list a few MiB.
MAX_TAG_LIST_BYTES = 64 * 1024 * 1024


async def list_tags(client: RegistryClient, repository: str, page_size: int = PAGE_SIZE) -> list[str]:
    """Every tag of ``repository`` (in the registry's order, without repeats); the same walk already
    under way in this client's pool entry is joined (each caller gets its own list)."""
    validate_repository(repository)
    url = with_query(await client.url(f"{repository}/tags/list"), n=str(page_size))
    return list(await client.reads.read(("tag walk", url), lambda: _walk(client, repository, url)))


async def _walk(client: RegistryClient, repository: str, url: str) -> tuple[str, ...]:
    """Every page from ``url`` on, following ``Link``; a tuple, so joiners share nothing mutable."""
    tags: dict[str, None] = {}
    read = 0
    for number in range(MAX_PAGES):
        try:
            raw, link = await reading(client, "GET", url, functools.partial(_page, client, repository, url))
        except RegistryResponseError as exc:
            if number or exc.status != 400:
                raise
            # a page size over the registry's maximum (distribution 3.1: 400 PAGINATION_NUMBER_INVALID over
            # tags.maxtags): asked without one, the registry pages at its own size, linking the next page
            url = url.split("?", 1)[0]
            raw, link = await reading(client, "GET", url, functools.partial(_page, client, repository, url))
        read += len(raw)
        if read > MAX_TAG_LIST_BYTES:
            raise ProtocolViolation(
                f"registry {client.name}: the tag list of {repository} is over {MAX_TAG_LIST_BYTES} bytes "
                f"({number + 1} pages): not read further",
                registry=client.name,
            )
        try:
            page = json.loads(raw).get("tags") or []
            if not isinstance(page, list) or not all(isinstance(t, str) for t in page):
                raise TypeError
        except (ValueError, TypeError, AttributeError):
            raise ProtocolViolation(
                f"registry {client.name}: the tag list of {repository} is not {{'tags': [...]}}", registry=client.name
            ) from None
        before = len(tags)
        tags.update(dict.fromkeys(page))
        if link is None or len(tags) == before:
            return tuple(tags)
        url = check_followed_url(urljoin(url, link), came_from=url, registry=client.name, what="tag list page")
    raise ProtocolViolation(f"registry {client.name}: the tag list of {repository} never ends", registry=client.name)


async def _page(client: RegistryClient, repository: str, url: str) -> tuple[bytes, str | None]:
    """One page: its body and the next page's URL as the ``Link`` header wrote it."""
    resp = await client.send("GET", url, scopes=(scope(repository, "pull"),), headers={"Accept": "application/json"})
    try:
        if resp.status != 200:
            raise await client.refusal(resp, f"listing the tags of {repository}")
        with translate_errors(client.name, "GET", url, body=True):
            raw = await read_capped(resp, MAX_PAGE_BYTES)
        return raw, next_link(resp.headers.get("Link"))
    finally:
        resp.release()
