"""An async client for one registry endpoint: auth, manifests, blob streams and uploads.

One ``RegistryClient`` per (endpoint, credentials): it owns a keep-alive connection pool,
the remembered auth challenge and a token cache keyed by scope. Every request goes through
``_send``, the one place that applies auth, follows redirects safely and translates errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import AsyncIterable, Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import aiohttp
from aiohttp.abc import AbstractResolver

from regcast import USER_AGENT
from regcast._exceptions import (
    AuthenticationFailed,
    ContentError,
    Failure,
    ManifestTooLarge,
    NotFound,
    OutboundRefused,
    ProtocolViolation,
    RegistryError,
    RegistryResponseError,
    RegistryUnreachable,
)
from regcast.registry import mediatypes as mt
from regcast.registry._transport import read_capped, response_error, status_error, translate_errors, trust
from regcast.registry.auth import (
    MAX_TOKEN_ANSWER,
    Credentials,
    SeedAuth,
    scope,
)
from regcast.registry.authenticator import Authenticator
from regcast.registry.digest import validate_digest
from regcast.registry.guards import Kind, OutboundPolicy, check_followed_url
from regcast.registry.limits import RegistryLimit, send_within
from regcast.registry.manifest import MAX_MANIFEST_BYTES, Manifest, parse_manifest
from regcast.registry.redact import printable, redact_url
from regcast.registry.reference import Endpoint, is_loopback, validate_ref, validate_repository
from regcast.registry.retry import RetryPolicy
from regcast.registry.strategy import UploadStrategy

if TYPE_CHECKING:
    from regcast.registry.pool import Shared

log = logging.getLogger("regcast.registry")

_REDIRECTS = (301, 302, 303, 307, 308)
MAX_REDIRECTS = 5
PARSE_ON_LOOP_MAX = 256 * 1024  # larger manifests are hashed and parsed in a thread
Body = bytes | AsyncIterable[bytes] | None


class RequestObserver(Protocol):
    """Told about every request, retry and rate-limit header (``ops.metrics.Metrics`` is one)."""

    def request(self, registry: str, method: str, status: int | None, seconds: float) -> None: ...

    def retry(self, status: int | None) -> None: ...

    def remaining(self, registry: str, left: int) -> None: ...

    def bytes_read(self, registry: str, n: int) -> None: ...


@dataclass(frozen=True)
class ClientOptions:
    """Connection settings for one registry client (built from ``Settings``)."""

    verify_tls: bool = True
    ca_bundle: str | None = None
    max_connections: int = 16
    connect_timeout: float = 20.0
    read_timeout: float = 120.0  # between reads of a streamed body
    request_timeout: float = 60.0  # a whole request without a streamed body (tokens, manifests, HEADs)
    chunk_size: int = 1024 * 1024
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    upload_strategy: str = "auto"  # auto | monolithic | chunked
    chunk_cap: int | None = None  # largest PATCH body this registry takes (GHCR: 4 MiB)
    policy: OutboundPolicy = field(default_factory=OutboundPolicy)  # where requests may go (guards.py)
    resolver: AbstractResolver | None = field(default=None, compare=False)  # tests: names -> loopback
    allow_plain_http: bool = False  # Basic credentials over an HTTP fallback to a non-loopback host
    min_throughput: int = 0  # bytes/s a blob download must keep up over ``throughput_window`` (0: no floor)
    throughput_window: float = 60.0
    observer: RequestObserver | None = field(default=None, compare=False)


def _ssl_context(options: ClientOptions) -> ssl.SSLContext | bool:
    if not options.verify_tls:
        return False
    return trust(options.ca_bundle)


def with_query(url: str, **params: str) -> str:
    """``url`` with ``params`` added, keeping the query it already has (distribution's ``_state``)."""
    parts = urlsplit(url)
    pairs = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(pairs, safe=":/"), parts.fragment))


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
        self._session: aiohttp.ClientSession | None = None
        self._pinged = False
        self._retry_watchers: list[Callable[[str], None]] = []  # see watch_retries()
        self.uploads = UploadStrategy(endpoint.name, self.options.upload_strategy, self.options.chunk_cap)
        self._rate_warned = False

    # -- lifecycle -----------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.endpoint.name

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        shared = self._shared
        if shared is not None:  # the connections stay with the pool for the next job
            self._shared = None
            shared.release()
            self._session = None
            return
        if self._session is not None:
            await self._session.close()
            self._session = None

    def secrets(self) -> tuple[str, ...]:
        """Every secret this client holds, for scrubbing free text."""
        return self.auth.secrets()

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None and self._shared is not None and self._shared.session is not None:
            self._session = self._shared.session
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self.options.max_connections,
                ssl=_ssl_context(self.options),
                ttl_dns_cache=300,
                resolver=self.options.resolver,
                socket_factory=self.options.policy.socket_factory,  # checks the address really connected to
            )
            timeout = aiohttp.ClientTimeout(
                total=None, sock_connect=self.options.connect_timeout, sock_read=self.options.read_timeout
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=timeout,
                auto_decompress=False,
                headers={"User-Agent": USER_AGENT},
                skip_auto_headers=("Accept-Encoding",),
                read_bufsize=self.options.chunk_size,  # fewer, larger chunks: less work per byte per target
                middlewares=(self.options.policy.middleware("registry"),),  # every request's URL, every hop
            )
            if self._shared is not None:
                self._shared.session = self._session
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
        certificate is never downgraded).
        """
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
            self.auth.remember(resp.headers.get("WWW-Authenticate"))
            if resp.status not in (200, 401):
                raise await response_error(resp, self.name, "checking the v2 API")
        finally:
            resp.release()

    # -- auth I/O ------------------------------------------------------------------------------
    async def _fetch_token(
        self,
        url: str,
        headers: dict[str, str],
        params: list[tuple[str, str]] | None,
        json_body: Any,
        what: str,
        strict: bool,
    ) -> bytes:
        """The HTTP half of the Authenticator: one token request (retried as any other), its capped answer."""
        resp = await self._request(
            "GET", url, scopes=None, headers=headers, params=params, json_body=json_body, outbound="auth"
        )
        try:
            if resp.status != 200 if strict else resp.status >= 400:
                raise await response_error(resp, self.name, what, self.secrets(), every_value=not strict)
            with translate_errors(self.name, "GET", url):
                return await read_capped(resp, MAX_TOKEN_ANSWER)
        finally:
            resp.release()

    # -- the one request path ------------------------------------------------------------------
    def watch_retries(self, callback: Callable[[str], None]) -> contextlib.AbstractContextManager[None]:
        """Tell ``callback`` about every retry of this client while the block runs (job status)."""
        return _watching(self._retry_watchers, callback)

    def note_retry(self, what: str, status: int | None = None) -> None:
        log.warning("%s", what)
        if self.options.observer is not None:
            self.options.observer.retry(status)
        for callback in tuple(self._retry_watchers):
            callback(what)

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
    ) -> aiohttp.ClientResponse:
        """A registry API request: ping first (scheme, challenge), then the one request path.

        The caller owns the response (``release()`` it).
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
    ) -> aiohttp.ClientResponse:
        """The one request path of ping, token, manifest and blob requests: auth, a 401 answered once,
        redirects, and retries through ``RetryPolicy.increment``.

        ``scopes=None`` sends no registry credentials (the ping, the token server); ``outbound`` names
        the allow-list the URL is checked against (``"auth"``: token hosts may be listed apart). A streamed body
        cannot be replayed, so it is neither retried nor re-authenticated here; callers settle auth first.
        A retryable answer (5xx, 429...) that runs out of tries is returned for the caller to report.
        """
        replayable = data is None or isinstance(data, bytes)
        retry = (retry or self.options.retry) if replayable else RetryPolicy.none()
        call = _Call(method, url, scopes, headers, data, params, json_body, follow_redirects, replayable, outbound)
        while True:
            try:
                resp = await send_within(
                    self.limit,
                    method == "GET" and "/manifests/" in url,
                    self.note_retry,
                    lambda: self._send_authenticated(call, streaming or not replayable),
                )
            except RegistryUnreachable as exc:
                retry = retry.increment(method, exc)
                self.note_retry(f"{exc}; retry {retry.retries} in {retry.wait:.1f}s")
            else:
                self._watch_rate_limit(resp)
                refusal = status_error(resp, self.name)
                if refusal is None or not refusal.retryable:
                    return resp
                try:
                    retry = retry.increment(method, refusal)
                except RegistryResponseError:
                    return resp
                resp.release()
                self.note_retry(
                    f"{method} {redact_url(url)} answered {resp.status}; retry {retry.retries} in {retry.wait:.1f}s",
                    resp.status,
                )
            await asyncio.sleep(retry.wait)

    def _watch_rate_limit(self, resp: aiohttp.ClientResponse) -> None:
        """Docker Hub style ``ratelimit-remaining: 12;w=21600``: warn once when it runs low."""
        remaining = resp.headers.get("ratelimit-remaining")
        if not remaining:
            return
        try:
            left = int(remaining.split(";", 1)[0])
            limit = int(resp.headers.get("ratelimit-limit", "0").split(";", 1)[0])
        except ValueError:
            return
        if self.options.observer is not None:
            self.options.observer.remaining(self.name, left)
        if not self._rate_warned and left <= max(5, limit // 10):
            self._rate_warned = True
            log.warning("registry %s: rate limit nearly used up (%d of %d left)", self.name, left, limit)

    async def _send_authenticated(self, call: _Call, streaming: bool) -> aiohttp.ClientResponse:
        timeout = None if streaming else self._total_timeout()
        resp = await self._send_once(call, call.url, call.data, timeout)
        if resp.status == 401 and call.scopes is not None:
            self.auth.rejected(resp.headers.get("WWW-Authenticate"), call.scopes)
            if call.replayable:
                resp.release()
                resp = await self._send_once(call, call.url, call.data, timeout)
        url, hops = call.url, 0
        while call.follow_redirects and resp.status in _REDIRECTS and hops < MAX_REDIRECTS:
            location = resp.headers.get("Location")
            resp.release()
            if not location:
                raise ProtocolViolation(f"registry {self.name}: redirect without Location", registry=self.name)
            url = self._checked_redirect(url, location)
            resp = await self._send_once(call, url, None, timeout)
            hops += 1
        return resp

    def _checked_redirect(self, current: str, location: str) -> str:
        return check_followed_url(
            urljoin(current, location),
            came_from=current,
            registry=self.name,
            what="redirect",
            policy=self.options.policy,
        )

    def _total_timeout(self) -> aiohttp.ClientTimeout:
        o = self.options
        return aiohttp.ClientTimeout(total=o.request_timeout, sock_connect=o.connect_timeout)

    async def _send_once(
        self,
        call: _Call,
        url: str,
        data: Body,
        timeout: aiohttp.ClientTimeout | None = None,  # noqa: ASYNC109 (aiohttp's per-request limits)
    ) -> aiohttp.ClientResponse:
        hdrs = dict(call.headers or {})
        if call.scopes is not None:
            auth = await self.auth.header(call.scopes, url, self.endpoint.base, self._fetch_token)
            if auth:
                hdrs["Authorization"] = auth
        log.debug("%s %s", call.method, redact_url(url))
        extra: dict[str, Any] = {"timeout": timeout} if timeout is not None else {}  # streamed: per-read limit
        if call.params:
            extra["params"] = call.params
        if call.json_body is not None:
            extra["json"] = call.json_body
        if call.outbound != "registry":  # the session's middleware checks registry requests
            extra["middlewares"] = (self.options.policy.middleware(call.outbound),)
        started, status = time.monotonic(), None
        try:
            with translate_errors(self.name, call.method, url):
                resp = await self._get_session().request(
                    call.method, url, headers=hdrs, data=data, allow_redirects=False, **extra
                )
            status = resp.status
            return resp
        finally:
            if self.options.observer is not None:
                self.options.observer.request(self.name, call.method, status, time.monotonic() - started)

    # -- manifests -------------------------------------------------------------------------------
    async def _manifest_url(self, repository: str, ref: str) -> str:
        validate_repository(repository)
        validate_ref(ref)
        return await self.url(f"{repository}/manifests/{ref}")

    async def _manifest_request(self, method: str, repository: str, ref: str) -> tuple[str, aiohttp.ClientResponse]:
        url = await self._manifest_url(repository, ref)
        resp = await self.send(
            method,
            url,
            scopes=(scope(repository, "pull"),),
            headers={"Accept": mt.ACCEPT_MANIFESTS},
            follow_redirects=True,
        )
        return url, resp

    async def get_manifest(self, repository: str, ref: str) -> Manifest:
        """The manifest bytes exactly as stored, verified against the digest asked for or announced."""
        url, resp = await self._manifest_request("GET", repository, ref)
        try:
            if resp.status != 200:
                raise await response_error(resp, self.name, f"getting manifest {repository}:{ref}")
            length = resp.content_length
            if length is not None and length > MAX_MANIFEST_BYTES:
                raise ManifestTooLarge(
                    f"registry {self.name}: manifest {repository}:{ref} is {length} bytes, "
                    f"over the {MAX_MANIFEST_BYTES} byte limit"
                )
            with translate_errors(self.name, "GET", url):
                raw = await read_capped(resp, MAX_MANIFEST_BYTES)
            if len(raw) > MAX_MANIFEST_BYTES:
                raise ManifestTooLarge(
                    f"registry {self.name}: manifest {repository}:{ref} is over the {MAX_MANIFEST_BYTES} byte limit"
                )
            expected = ref if ":" in ref else None
            announced = resp.headers.get("Docker-Content-Digest")
            if expected is None and announced and announced.startswith("sha"):
                expected = validate_digest(announced)
            try:
                ctype = resp.headers.get("Content-Type", "")
                if len(raw) > PARSE_ON_LOOP_MAX:  # hashing and parsing megabytes would stall every other job
                    return await asyncio.to_thread(parse_manifest, raw, ctype, expected)
                return parse_manifest(raw, ctype, expected)
            except ContentError as exc:  # name the registry, as every error does
                raise type(exc)(f"registry {self.name}: manifest {repository}:{ref}: {exc}") from None
        finally:
            resp.release()

    async def head_manifest(self, repository: str, ref: str) -> str | None:
        """The digest the registry holds for ``ref``, or None when it has none."""
        _url, resp = await self._manifest_request("HEAD", repository, ref)
        try:
            if resp.status == 404:
                return None
            if resp.status != 200:
                raise await response_error(resp, self.name, f"checking manifest {repository}:{ref}")
            digest = resp.headers.get("Docker-Content-Digest")
        finally:
            resp.release()
        if digest:
            return validate_digest(digest)
        try:  # older registries: no digest header on HEAD, so hash the bytes
            return (await self.get_manifest(repository, ref)).digest
        except NotFound:
            return None

    async def put_manifest(self, repository: str, ref: str, raw: bytes, media_type: str) -> str | None:
        """Push manifest bytes unchanged; returns the digest the registry announced, if any."""
        url = await self._manifest_url(repository, ref)
        resp = await self.send(
            "PUT",
            url,
            scopes=(scope(repository, "pull,push"),),
            headers={"Content-Type": media_type},
            data=raw,
        )
        try:
            if resp.status not in (200, 201, 202):
                raise await response_error(resp, self.name, f"pushing manifest {repository}:{ref}")
            return resp.headers.get("Docker-Content-Digest")
        finally:
            resp.release()

    async def delete_manifest(self, repository: str, ref: str) -> bool:
        """Delete a tag (OCI) or a manifest by digest; False when the registry had none.

        A registry that cannot delete tags (distribution 2.8 answers 400/405 ``UNSUPPORTED``)
        raises ``RegistryResponseError``; the caller decides whether a digest delete is right.
        """
        url = await self._manifest_url(repository, ref)
        resp = await self.send("DELETE", url, scopes=(scope(repository, "delete"),))
        try:
            if resp.status == 404:
                return False
            if resp.status not in (200, 202, 204):
                raise await response_error(resp, self.name, f"deleting manifest {repository}:{ref}")
            return True
        finally:
            resp.release()


@dataclass(frozen=True)
class _Call:
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


@contextlib.contextmanager
def _watching(watchers: list[Callable[[str], None]], callback: Callable[[str], None]) -> Iterator[None]:
    watchers.append(callback)
    try:
        yield
    finally:
        watchers.remove(callback)


def describe(exc: BaseException) -> str:
    """A one-line, secret-free description for users."""
    if isinstance(exc, AuthenticationFailed):
        return printable(f"{exc} (check the credentials)")
    return printable(str(exc) or type(exc).__name__)


__all__ = ["ClientOptions", "RegistryClient", "describe", "with_query"]
