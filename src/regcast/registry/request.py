"""The one request path of a registry client: auth, a 401 answered once, redirects, retries.

Ping, token, manifest and blob requests all come through ``request``, so auth, the outbound checks
of every redirect hop, the per-registry limits and the retry decision (``RetryPolicy.increment``)
are applied in one place. Functions of a ``RegistryClient`` (as ``blobs.py``): the client owns the
state (session, tokens, watchers), this module the order of the steps.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urljoin

from regcast._exceptions import BodyBroken, ProtocolViolation, RateLimited, RegistryResponseError, RegistryUnreachable
from regcast.registry._transport import challenges, status_error, translate_errors
from regcast.registry.auth import origin
from regcast.registry.guards import Kind, check_followed_url
from regcast.registry.limits import RateWait, send_within
from regcast.registry.redact import redact_url
from regcast.registry.retry import RetryPolicy
from regcast.registry.session import ClientOptions, RequestObserver
from regcast.registry.tls import aiohttp

if TYPE_CHECKING:
    from regcast.registry.client import RegistryClient

log = logging.getLogger("regcast.registry")

REDIRECTS = (301, 302, 303, 307, 308)
MAX_REDIRECTS = 5
Body = bytes | AsyncIterable[bytes] | None
T = TypeVar("T")


class _TokenFailed(Exception):
    """A token request that failed for want of an answer, past its own retries (``client.fetch_token`` goes
    through ``request`` and ``reading`` itself): carried out of the asking request's retry loops as it is.
    Retried there again, the tries multiplied: a token server that never answered held a copy for four
    request timeouts (twice two), one that refused connections took 25 tries of 5."""

    def __init__(self, error: RegistryUnreachable) -> None:
        super().__init__(str(error))
        # a plain RegistryUnreachable, not BodyBroken: the asking request's own ``reading`` must not retry it
        self.error = RegistryUnreachable(str(error), registry=error.registry, failure=error.failure)


@dataclass
class Call:
    """One logical request, as the request path replays it."""

    method: str
    url: str
    scopes: tuple[str, ...] | None
    headers: dict[str, str] | None
    data: Body
    params: list[tuple[str, str]] | None
    json_body: Any
    follow_redirects: bool
    replayable: bool
    outbound: Kind  # the outbound policy's allow-list for this request: "registry" or "auth"
    read_bufsize: int | None = None  # the response's buffer (None: the session's, one chunk)


class RateLimitWatch:
    """Docker Hub style ``ratelimit-remaining: 12;w=21600``: reported to the observer, warned about once."""

    def __init__(self, registry: str, observer: RequestObserver | None) -> None:
        self.registry = registry
        self.observer = observer
        self._warned = False

    def see(self, resp: aiohttp.ClientResponse) -> None:
        remaining = resp.headers.get("ratelimit-remaining")
        if not remaining:
            return
        try:
            left = int(remaining.split(";", 1)[0])
            limit = int(resp.headers.get("ratelimit-limit", "0").split(";", 1)[0])
        except ValueError:
            return
        if self.observer is not None:
            self.observer.remaining(self.registry, left)
        if not self._warned and left <= max(5, limit // 10):
            self._warned = True
            log.warning("registry %s: rate limit nearly used up (%d of %d left)", self.registry, left, limit)


async def request(
    client: RegistryClient,
    method: str,
    url: str,
    *,
    scopes: tuple[str, ...] | None,
    headers: dict[str, str] | None = None,
    data: Body = None,
    params: list[tuple[str, str]] | None = None,
    json_body: Any = None,
    follow_redirects: bool = False,
    streaming: bool = False,
    retry: RetryPolicy | None = None,
    outbound: Kind = "registry",
    read_bufsize: int | None = None,
    limited: bool = True,
) -> aiohttp.ClientResponse:
    """The one request path of ping, token, manifest and blob requests: auth, a 401 answered once,
    redirects, and retries through ``RetryPolicy.increment``.

    ``scopes=None`` sends no registry credentials (the ping, the token server); ``outbound`` names
    the allow-list the URL is checked against (``"auth"``: token hosts may be listed apart). A streamed body
    cannot be replayed, so it is neither retried nor re-authenticated here; callers settle auth first.
    A retryable answer (5xx, 429...) that runs out of tries is returned for the caller to report.
    """
    replayable = data is None or isinstance(data, bytes)
    retry = (retry or client.options.retry) if replayable else RetryPolicy.none()
    call = Call(
        method, url, scopes, headers, data, params, json_body, follow_redirects, replayable, outbound, read_bufsize
    )
    # a token request is made by a request that holds its slot already (the token is fetched while it is
    # sent): asking for a second slot deadlocked a registry with max_concurrency once every slot waited
    limit = client.limit if outbound == "registry" and limited else None
    while True:
        try:
            resp = await send_within(
                limit,
                method == "GET" and "/manifests/" in url,
                client.note_retry,
                lambda: _send_authenticated(client, call, streaming or not replayable),
                reading=streaming and method == "GET",
            )
        except _TokenFailed as failed:
            raise failed.error from failed.__cause__
        except RegistryUnreachable as exc:
            if client.closed:  # cut by close(): whoever asked is gone, a retry would open a new session
                raise
            retry = retry.increment(method, exc)
            client.note_retry(f"{exc}; retry {retry.retries} in {retry.wait:.1f}s")
        else:
            client.rate.see(resp)
            refusal = status_error(resp, client.name)
            if refusal is None or not refusal.retryable:
                return resp
            try:
                retry = retry.increment(method, refusal)
            except RegistryResponseError:
                return resp
            resp.release()
            shown = f"{method} {redact_url(url)} answered {resp.status}"
            client.note_retry(
                f"{shown}; retry {retry.retries} in {retry.wait:.1f}s",
                resp.status,
                RateWait.after(client.name, retry.wait, shown) if isinstance(refusal, RateLimited) else None,
            )
        await asyncio.sleep(retry.wait)


async def reading(client: RegistryClient, method: str, url: str, attempt: Callable[[], Awaitable[T]]) -> T:
    """``attempt`` (one request and the read of its body, read under ``translate_errors(body=True)``) made
    again while the body breaks off: a reset or stall after the headers is past the request's own retries.
    Bounded by the client's ``RetryPolicy``, as every retry."""
    retry = client.options.retry
    while True:
        try:
            return await attempt()
        except BodyBroken as exc:
            if client.closed:  # cut by close(): whoever asked is gone
                raise
            retry = retry.increment(method, exc)
            client.note_retry(f"{exc}; retry {retry.retries} in {retry.wait:.1f}s")
        await asyncio.sleep(retry.wait)


async def _send_authenticated(client: RegistryClient, call: Call, streaming: bool) -> aiohttp.ClientResponse:
    timeout = None if streaming else _total_timeout(client.options)
    resp = await _send_once(client, call, call.url, call.data, timeout)
    if resp.status == 401 and call.scopes is not None:
        client.auth.rejected(challenges(resp), call.scopes, resp.request_info.headers.get("Authorization"))
        if call.replayable:
            resp.release()
            resp = await _send_once(client, call, call.url, call.data, timeout)
    url, hops = call.url, 0
    while call.follow_redirects and resp.status in REDIRECTS and hops < MAX_REDIRECTS:
        location = resp.headers.get("Location")
        resp.release()
        if not location:
            raise ProtocolViolation(f"registry {client.name}: redirect without Location", registry=client.name)
        came_from, url = (
            url,
            check_followed_url(
                urljoin(url, location),
                came_from=url,
                registry=client.name,
                what="redirect",
                policy=client.options.policy,
                kind=call.outbound,
            ),
        )
        resp = await _send_once(client, _hop(call, came_from, url, resp.status), url, None, timeout)
        hops += 1
    if call.follow_redirects and resp.status in REDIRECTS:  # said as what it is, not as "answered 307"
        resp.release()
        raise ProtocolViolation(
            f"registry {client.name}: {call.method} {redact_url(call.url, every_value=call.outbound == 'auth')}: "
            f"redirected more than {MAX_REDIRECTS} "
            "times (a redirect loop)",
            registry=client.name,
        )
    return resp


def _hop(call: Call, came_from: str, url: str, status: int) -> Call:
    """``call`` as sent to the ``url`` a redirect named: its query is the Location's (``params`` not added
    again); a token request's headers (its Basic credentials, the seed's ``header``) only while the server
    stays the same (``_same_server``), as requests keeps Authorization; a JSON body only through 307/308,
    and a token request's (the seed's ``json``, credentials) only on the same server too. Registry
    credentials are chosen per URL anyway (``Authenticator.header``)."""
    headers, body = call.headers, call.json_body if status in (307, 308) else None
    if call.outbound == "auth" and not _same_server(came_from, url):
        headers = body = None  # the seed's `header` and `json` values are secrets as much as its Authorization
    return dataclasses.replace(call, url=url, headers=headers, params=None, json_body=body)


def _same_server(came_from: str, url: str) -> bool:
    """The same (scheme, host, port), or the same host moved from http:80 to https:443 (a proxy's upgrade:
    requests keeps Authorization there too)."""
    old, new = origin(came_from), origin(url)
    return old == new or (old == ("http", new[1], 80) and new == ("https", old[1], 443))


class _Sent:
    """A streamed request body that tells when its last chunk was taken (``ended``): from then on the
    answer's head is awaited, and bounded (``_head_within``)."""

    def __init__(self, body: AsyncIterable[bytes]) -> None:
        self.body = body
        self.ended = asyncio.Event()

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        async for chunk in self.body:
            yield chunk
        self.ended.set()


async def _head_within(send: Callable[[], Awaitable[T]], seconds: float, body: _Sent | None = None) -> T:
    """``send()``, its status line and headers within ``seconds`` of the request's body having gone (at once
    without one). A streamed request has no total limit and the session's read limit is between reads, so a
    server trickling header lines (slowloris) held a blob GET, or an upload whose bytes it had all taken,
    forever; the pace of the bytes themselves is the fan-out's and ``blobs._body``'s to judge."""
    if body is None:
        async with asyncio.timeout(seconds):
            return await send()
    sending = asyncio.ensure_future(send())
    sending.add_done_callback(lambda t: t.cancelled() or t.exception())  # retrieved, whoever gave up on it
    answer: T | None = None
    try:
        ended = asyncio.ensure_future(body.ended.wait())
        try:
            await asyncio.wait({sending, ended}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ended.cancel()
        async with asyncio.timeout(seconds):
            answer = await asyncio.shield(sending)
        return answer
    finally:
        if answer is None:
            await _abandon(sending)


async def _abandon(sending: asyncio.Future[Any]) -> None:
    """A send given up on (timed out, or its caller cancelled): stopped and waited for, or, when its answer
    came in the same turn, that answer released, so its connection goes back to the pool now."""
    if not sending.done():
        sending.cancel()
        await asyncio.wait({sending})
    elif not sending.cancelled() and sending.exception() is None:
        release = getattr(sending.result(), "release", None)
        if callable(release):
            release()


def _total_timeout(o: ClientOptions) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=o.request_timeout, sock_connect=o.connect_timeout)


async def _send_once(
    client: RegistryClient,
    call: Call,
    url: str,
    data: Body,
    timeout: aiohttp.ClientTimeout | None = None,  # noqa: ASYNC109 (aiohttp's per-request limits)
) -> aiohttp.ClientResponse:
    hdrs = dict(call.headers or {})
    if call.scopes is not None:
        try:
            auth = await client.auth.header(call.scopes, url, client.endpoint.base, client.fetch_token)
        except RegistryUnreachable as exc:
            raise _TokenFailed(exc) from exc
        if auth:
            hdrs["Authorization"] = auth
    if log.isEnabledFor(logging.DEBUG):  # redacting a URL costs more than the log call it would feed
        log.debug("%s %s", call.method, redact_url(url))
    extra: dict[str, Any] = {"timeout": timeout} if timeout is not None else {}  # streamed: per-read limit
    if call.params:
        extra["params"] = call.params
    sent = _Sent(data) if timeout is None and data is not None and not isinstance(data, bytes) else None
    if call.read_bufsize is not None:  # aiohttp pauses the socket once 2x this is buffered
        extra["read_bufsize"] = call.read_bufsize
    if call.json_body is not None:
        extra["json"] = call.json_body
    if call.outbound != "registry":  # the session's middleware checks registry requests
        extra["middlewares"] = (client.options.policy.middleware(call.outbound),)
    observer = client.options.observer
    started, status = time.monotonic(), None
    try:
        with translate_errors(client.name, call.method, url, secrets=client.secrets):
            session = client.session()  # its clock starts once a connection is free: ConnectionSlots
            send = functools.partial(
                session.request, call.method, url, headers=hdrs, data=sent or data, allow_redirects=False, **extra
            )
            # streamed (no total limit): the answer's head still comes within the read timeout of the body's end
            limit = client.options.read_timeout
            resp = await client.slots.send(send if timeout is not None else lambda: _head_within(send, limit, sent))
        status = resp.status
        return resp
    finally:
        if observer is not None:
            observer.request(client.name, call.method, status, time.monotonic() - started)
