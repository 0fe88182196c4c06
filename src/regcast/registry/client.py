"""An async client for one registry endpoint: the state one registry's requests share.

One ``RegistryClient`` per (endpoint, credentials): it owns a keep-alive connection pool
(``session.py``), the remembered auth challenge and a token cache keyed by scope
(``authenticator.py``). Every request goes through ``request.request``, the one place that applies
auth, follows redirects safely, retries and translates errors; manifest requests live in
``manifests.py``, blob requests in ``blobs.py``, both as functions of a client.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote_plus, urlencode, urlsplit, urlunsplit

from regcast._exceptions import (
    AuthenticationFailed,
    Failure,
    OutboundRefused,
    RegistryError,
    RegistryResponseError,
    RegistryUnreachable,
)
from regcast.registry import manifests, request
from regcast.registry._transport import challenges, read_capped, response_error, translate_errors
from regcast.registry.auth import MAX_TOKEN_ANSWER, Credentials, SeedAuth
from regcast.registry.authenticator import Authenticator
from regcast.registry.coalesce import InFlight
from regcast.registry.guards import Kind
from regcast.registry.limits import RateWait, RegistryLimit
from regcast.registry.manifest import Manifest
from regcast.registry.memo import Memo
from regcast.registry.redact import printable
from regcast.registry.reference import Endpoint, is_loopback
from regcast.registry.request import Body, RateLimitWatch
from regcast.registry.retry import RetryPolicy
from regcast.registry.session import ClientOptions, ConnectionSlots, RequestObserver, open_session
from regcast.registry.strategy import UploadStrategy
from regcast.registry.tls import aiohttp

if TYPE_CHECKING:
    from regcast.registry.pool import Shared

log = logging.getLogger("regcast.registry")


@functools.cache
def _encoded_query() -> re.Pattern[str]:
    """A query that ``urlencode(parse_qsl(query), safe=":/")`` writes back unchanged.

    ``key=value`` pairs of the characters quote_plus keeps, ``+`` (a space both ways) and the %XX escapes
    quote_plus itself writes for the other ASCII characters (derived from it, not listed by hand). Built on
    first use, not at import: ~1 ms of every command's start-up, and a no-op copy sends no such query (#17).
    """
    kept = "[A-Za-z0-9_.~:/+-]|" + "|".join(
        f"%{b:02X}" for b in range(128) if quote_plus(chr(b), safe=":/") == f"%{b:02X}"
    )
    return re.compile(f"(?:{kept})+=(?:{kept})*(?:&(?:{kept})+=(?:{kept})*)*")


# RFC 8288: the target, then parameters in any order; ``rel`` quoted or not (``rel=next``), not ``nextpage``.
def next_link(header: str | None) -> str | None:
    """The ``rel="next"`` target of a ``Link`` header (tag lists, referrers pages), relative or absolute.

    Read in one pass (RFC 8288: ``<target>; param=value; ...`` per link, ``rel`` anywhere among the
    parameters, its value a space-separated list of relations, quoted or not): a regular expression with
    a lazy run over the parameters took quadratic time on a hostile header (``<a>;`` repeated), holding
    the event loop for every page a registry answered."""
    text = header or ""
    start = text.find("<")
    while start >= 0:
        end = text.find(">", start + 1)
        if end < 0:
            return None
        following = text.find("<", end + 1)
        params = text[end + 1 : following if following >= 0 else len(text)]
        for param in params.split(";")[1:]:
            name, _, value = param.partition("=")
            if name.strip().lower() == "rel" and "next" in value.strip().rstrip(",").strip().strip('"').lower().split():
                return text[start + 1 : end] or None
        start = following
    return None


def with_query(url: str, **params: str) -> str:
    """``url`` with ``params`` added, keeping the query it already has (distribution's ``_state``).

    The query comes out as ``urlencode`` writes it. One already in that form (distribution's
    ``_state=...%3D``) is kept as it is instead of being decoded and quoted again character by
    character: the same URL for half the CPU (every upload PUT and mount, issue 17)."""
    parts = urlsplit(url)
    if params and (not parts.query or _encoded_query().fullmatch(parts.query)):
        added = urlencode(list(params.items()), safe=":/")
        query = f"{parts.query}&{added}" if parts.query else added
    else:
        query = urlencode(parse_qsl(parts.query, keep_blank_values=True) + list(params.items()), safe=":/")
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


class RegistryClient:
    """Client of one registry endpoint. Use as ``async with``; safe to share between tasks."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        credentials: Credentials | None = None,
        seed_auth: SeedAuth | None = None,
        options: ClientOptions | None = None,
        read_only: bool = False,
        limit: RegistryLimit | None = None,
        shared: Shared | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.options = options or ClientOptions()
        self.read_only = read_only
        self.limit = limit  # shared by every client of this registry in the process (mirror sets)
        self._shared = shared  # pool, tokens and ping kept across jobs (pool.py); None: this client's own
        self.auth = shared.auth if shared else Authenticator(endpoint.host, credentials, seed_auth, self.options.policy)
        self.reads = shared.reads if shared else InFlight()  # identical reads under way: sent once
        self.memo = shared.memo if shared else Memo()  # kept across jobs in a pool entry (memo.py)
        self._session: aiohttp.ClientSession | None = None
        self.slots = ConnectionSlots(self.options.max_connections, endpoint.name)  # replaced with each session
        self.closed = False  # close() was called and no request opened a session since: nothing to retry for
        self._released = False  # a pooled client gave its pool entry back (close())
        self._pinged = False
        # first requests sent at once (a tag HEAD beside a tag list) wait for one ping, not one each
        self._ping_lock = shared.ping_lock if shared else asyncio.Lock()
        self._retry_watchers: list[Watcher] = []  # see watch_retries()
        self.uploads = UploadStrategy(endpoint.name, self.options.upload_strategy, self.options.chunk_cap)
        self.rate = RateLimitWatch(endpoint.name, self.options.observer)

    # -- lifecycle -----------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.endpoint.name

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Give the connections back: a pooled client's stay with its pool entry for the next job.

        A pooled client keeps the pool's session, so a read another job joined (``coalesce.py``),
        still under way on this client, goes on with its retries for that job; only a client of its
        own is marked closed (a request it has in flight is then not retried: nobody is waiting)."""
        shared = self._shared
        if shared is not None:
            if not self._released:
                self._released = True
                shared.release()
            return
        self.closed = True
        if self._session is not None:
            await self._session.close()
            self._session = None

    def secrets(self) -> tuple[str, ...]:
        """Every secret this client holds, for scrubbing free text."""
        return self.auth.secrets()

    async def refusal(self, resp: aiohttp.ClientResponse, what: str) -> RegistryResponseError:
        """The error an unwanted answer of this registry stands for (``response_error``), its text scrubbed of
        this client's secrets: a registry's error message quoting the credentials it got (``denied for
        alice:<password>``) was shown as it came in the CLI's error line, a submit's 502 and the logs."""
        return self._anonymous(await response_error(resp, self.name, what, self.secrets()))

    def _anonymous(self, error: RegistryResponseError) -> RegistryResponseError:
        """``error`` marked ``anonymous`` when it is a refusal and this client offered no credentials at all."""
        if isinstance(error, AuthenticationFailed) and self.auth.credentials is None and self.auth.seed_auth is None:
            error.anonymous = True
        return error

    def session(self) -> aiohttp.ClientSession:
        """This client's session: the shared pool's when it has one (``pool.py``), else its own; ``slots``
        are that session's connection slots."""
        if self._session is not None and self._session.closed and self._shared is not None:
            self._session = None  # the pool closed its idle entry after this client let go of it
            self._shared = None  # what is still asked goes over a session of its own, closed by close()
            self.closed = self._released = False
        if self._session is None and self._shared is not None and self._shared.session is not None:
            self._session, self.slots = self._shared.session, self._shared.slots or self.slots
        if self._session is None:
            self.closed = False  # used again after close(): a client of its own from here on
            self._session = open_session(self.options)
            self.slots = ConnectionSlots(self.options.max_connections, self.name)
            if self._shared is not None:
                self._shared.session, self._shared.slots = self._session, self.slots
        return self._session

    async def url(self, path: str) -> str:
        """Absolute API URL for ``path``, after the first ping has settled the scheme."""
        await self.ping()
        return self.endpoint.base + path

    # -- ping, scheme and challenge ---------------------------------------------------------------
    async def ping(self) -> None:
        """``GET /v2/``: decides HTTPS vs HTTP fallback and remembers the auth challenge.

        Some registries (gcr.io) answer 401 without a challenge on later requests, so the one
        given here is kept. With HTTP fallback allowed, HTTPS is tried once (no retries): any
        failure but an untrusted certificate means "try plain HTTP" (a TLS server with a bad
        certificate is never downgraded). Concurrent first requests wait for one ping (the pool entry's
        lock for a pooled client): a failed one leaves the next waiter to ping again.
        """
        if self._pinged:
            return
        async with self._ping_lock:
            await self._ping_locked()

    async def _ping_locked(self) -> None:
        if self._pinged:
            return
        if self._shared is not None and self._shared.pinged is not None:  # an earlier job's client settled it
            self.endpoint, self._pinged = self._shared.pinged, True
            return
        fallback = self.endpoint.fallback_http and self.endpoint.scheme == "https"
        try:
            await self._ping_once(RetryPolicy.none() if fallback else self.options.retry)
        except RegistryUnreachable as exc:
            if not fallback or exc.failure is Failure.CERTIFICATE:
                raise
            log.debug("%s does not speak TLS, using plain HTTP", self.name)
            if self.auth.credentials and not (self.options.allow_plain_http or is_loopback(self.endpoint.host)):
                raise OutboundRefused(
                    f"registry {self.name} does not speak TLS: refusing to send its credentials over plain HTTP "
                    '(the request may allow it with "allow_plain_http": true)'
                ) from None
            self.endpoint = self.endpoint.with_scheme("http")
            await self._ping_once(self.options.retry)
        self._pinged = True
        if self._shared is not None:
            self._shared.pinged = self.endpoint

    async def _ping_once(self, retry: RetryPolicy) -> None:
        resp = await self._request("GET", self.endpoint.base, scopes=None, retry=retry)
        try:
            with translate_errors(self.name, "GET", self.endpoint.base):
                await read_capped(resp, 65536)
            self.auth.remember(challenges(resp))
            if resp.status not in (200, 401):
                raise await self.refusal(resp, "checking the v2 API")
        finally:
            resp.release()

    # -- auth I/O ------------------------------------------------------------------------------
    async def fetch_token(
        self,
        url: str,
        headers: dict[str, str],
        params: list[tuple[str, str]] | None,
        json_body: Any,
        what: str,
        strict: bool,
        form: list[tuple[str, str]] | None = None,
    ) -> bytes:
        """The HTTP half of the Authenticator: one token request (retried as any other), its capped answer.
        With ``form``, the OAuth2 variant: a form-encoded POST to the realm."""
        method, data = ("POST", urlencode(form).encode()) if form is not None else ("GET", None)
        if form is not None:
            headers = {**headers, "Content-Type": "application/x-www-form-urlencoded"}

        async def once() -> bytes:
            resp = await self._request(
                method,
                url,
                scopes=None,
                headers=headers,
                data=data,
                params=params,
                json_body=json_body,
                outbound="auth",
                follow_redirects=form is None,  # a realm moved (http -> https behind a proxy): as docker and the seed
            )
            try:
                if resp.status != 200 if strict else resp.status >= 400:
                    raise self._anonymous(
                        await response_error(resp, self.name, what, self.secrets(), every_value=not strict)
                    )
                with translate_errors(self.name, method, url, body=True):
                    return await read_capped(resp, MAX_TOKEN_ANSWER)
            finally:
                resp.release()

        return await request.reading(self, method, url, once)

    # -- the one request path ------------------------------------------------------------------
    def watch_retries(
        self, callback: Callable[[str], None], on_wait: Callable[[RateWait], None] | None = None
    ) -> contextlib.AbstractContextManager[None]:
        """Tell ``callback`` about every retry of this client while the block runs (job status), and
        ``on_wait`` about every wait on the registry's rate limit (a 429, the RateLimit-Remaining gate)."""
        return _watching(self._retry_watchers, (callback, on_wait))

    def note_retry(self, what: str, status: int | None = None, wait: RateWait | None = None) -> None:
        """A retry (or a rate-limit wait) is under way: logged, counted, told to the watchers.

        Plain retries are INFO: the services log at INFO, the CLI shows them with -v only, so an
        unreachable registry ends a copy in one ``error:`` line, not a line per attempt first. A
        rate-limit wait can last minutes and is the registry's doing: WARNING, shown everywhere."""
        log.log(logging.WARNING if wait is not None or status == 429 else logging.INFO, "%s", what)
        if self.options.observer is not None:
            self.options.observer.retry(status)
        for callback, on_wait in tuple(self._retry_watchers):
            callback(what)
            if wait is not None and on_wait is not None:
                on_wait(wait)

    async def send(
        self,
        method: str,
        url: str,
        *,
        scopes: tuple[str, ...],
        headers: dict[str, str] | None = None,
        data: Body = None,
        follow_redirects: bool = False,
        streaming: bool = False,
        read_bufsize: int | None = None,
        limited: bool = True,
    ) -> aiohttp.ClientResponse:
        """A registry API request: ping first (scheme, challenge), then the one request path.

        The caller owns the response (``release()`` it); ``read_bufsize`` overrides the session's
        response buffer (a slow reader's download buffers less); ``limited=False`` sends it outside the
        registry's limit (``read_blob``: a resumed download whose uploads hold slots waiting for it).
        """
        if self.read_only and method not in ("GET", "HEAD"):
            raise RegistryError(f"refusing {method} to source registry {self.name}", registry=self.name)
        await self.ping()
        return await self._request(
            method,
            url,
            scopes=scopes,
            headers=headers,
            data=data,
            follow_redirects=follow_redirects,
            streaming=streaming,
            read_bufsize=read_bufsize,
            limited=limited,
        )

    async def _request(
        self,
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
        """The one request path (``request.request``), without the ping first (the ping and tokens use it)."""
        return await request.request(
            self,
            method,
            url,
            scopes=scopes,
            headers=headers,
            data=data,
            params=params,
            json_body=json_body,
            follow_redirects=follow_redirects,
            streaming=streaming,
            retry=retry,
            outbound=outbound,
            read_bufsize=read_bufsize,
            limited=limited,
        )

    # -- manifests (manifests.py) ----------------------------------------------------------------
    async def get_manifest(self, repository: str, ref: str) -> Manifest:
        """The manifest bytes exactly as stored, verified against the digest asked for or announced."""
        return await manifests.get_manifest(self, repository, ref)

    async def get_manifest_bytes(self, repository: str, ref: str) -> bytes:
        """The bytes served for ``ref`` now, unchecked (see manifests.py)."""
        return await manifests.get_manifest_bytes(self, repository, ref)

    async def head_manifest(self, repository: str, ref: str) -> str | None:
        """The digest the registry holds for ``ref``, or None when it has none."""
        return await manifests.head_manifest(self, repository, ref)

    async def put_manifest(self, repository: str, ref: str, raw: bytes, media_type: str) -> str | None:
        """Push manifest bytes unchanged; returns the digest the registry announced, if any."""
        return await manifests.put_manifest(self, repository, ref, raw, media_type)

    async def delete_manifest(self, repository: str, ref: str) -> bool:
        """Delete a tag (OCI) or a manifest by digest; False when the registry had none (see manifests.py)."""
        return await manifests.delete_manifest(self, repository, ref)


Watcher = tuple[Callable[[str], None], Callable[[RateWait], None] | None]


@contextlib.contextmanager
def _watching(watchers: list[Watcher], watcher: Watcher) -> Iterator[None]:
    watchers.append(watcher)
    try:
        yield
    finally:
        watchers.remove(watcher)


def describe(exc: BaseException) -> str:
    """A one-line, secret-free description for users."""
    if isinstance(exc, AuthenticationFailed):
        hint = "no credentials were given for this registry" if exc.anonymous else "check the credentials"
        return printable(f"{exc} ({hint})")
    return printable(str(exc) or type(exc).__name__)


__all__ = ["Body", "ClientOptions", "RegistryClient", "RequestObserver", "describe", "next_link", "with_query"]
