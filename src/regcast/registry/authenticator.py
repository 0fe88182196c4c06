"""The auth state of one registry client: the remembered challenge, tokens per scope, the seed's token.

Decisions only; the HTTP calls it needs go through the ``fetch`` function the client hands in, so
this module holds no connection and no library knowledge.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlsplit

from regcast._exceptions import RegistryResponseError
from regcast.registry.auth import (
    Challenge,
    Credentials,
    SeedAuth,
    TokenCache,
    TokenRequest,
    origin,
    parse_token_answer,
    parse_www_authenticate,
    token_request,
)
from regcast.registry.guards import OutboundPolicy, check_followed_url
from regcast.registry.redact import redact_url

log = logging.getLogger("regcast.registry")


class Fetch(Protocol):
    """fetch(url, headers, params, json_body, what, strict[, form]) -> body; strict: only 200 is an
    answer; form: the OAuth2 variant, a form-encoded POST."""

    def __call__(
        self,
        url: str,
        headers: dict[str, str],
        params: list[tuple[str, str]] | None,
        json_body: Any,
        what: str,
        strict: bool,
        form: list[tuple[str, str]] | None = None,
        /,
    ) -> Awaitable[bytes]: ...


OAUTH_CLIENT_ID = "regcast"
GET_ONLY_SECONDS = 600.0  # a realm that refused the OAuth2 POST is asked with GET this long, then POST again
_SEED_KEY: tuple[str, str, tuple[str, ...]] = ("", "", ())  # the seed's one token, among the scoped keys


class Authenticator:
    def __init__(
        self,
        host: str,
        credentials: Credentials | None,
        seed_auth: SeedAuth | None,
        policy: OutboundPolicy | None = None,
    ) -> None:
        self.host = host
        self.policy = policy or OutboundPolicy()
        self.credentials = credentials
        # with basicauth the seed's token setup is ignored, as in the seed
        self.seed_auth = seed_auth if (seed_auth and seed_auth.url and not credentials) else None
        self.seed_token: str | None = None
        self.challenge: Challenge | None = None
        self.tokens = TokenCache()
        self._withheld = False  # credentials kept from an unsafe realm: warned about once
        # realms that answered the OAuth2 POST 404/405/501, and until when (monotonic) they are asked with GET
        self._get_only: dict[str, float] = {}
        self._pending: dict[tuple[str, str, tuple[str, ...]], asyncio.Future[str]] = {}  # token requests under way
        # URLs that certainly name this host (netloc == host): the per-request check without a urlsplit
        plain = host and not any(c in host for c in "/?#@\\[]")
        self._own_prefixes = (f"http://{host}/", f"https://{host}/") if plain else ()

    def secrets(self) -> tuple[str, ...]:
        """Values no error or log may show. A credential as it was sent counts too: a server echoing the
        Basic header's base64 without its ``Basic`` word (an error page quoting it) showed the password
        encoded; it is listed padded and unpadded, as either may be quoted."""
        out = list(self.tokens.secrets())
        if self.credentials:
            out.append(self.credentials.password)
            encoded = self.credentials.basic_header().partition(" ")[2]
            out += [encoded, encoded.rstrip("=")]
            if self.credentials.identity_token:
                out.append(self.credentials.identity_token)
        if self.seed_token:
            out.append(self.seed_token)
        if self.seed_auth is not None:  # every header value and every auth.url query value may be a secret
            for value in self.seed_auth.header.values():
                out += [value, value.partition(" ")[2]]  # "Basic <b64>": its credential alone as well
            out += [v for _k, v in parse_qsl(urlsplit(self.seed_auth.url or "").query, keep_blank_values=True)]
            out += _string_leaves(self.seed_auth.json_body)  # the seed's `json` body: credentials, as sent
        return tuple(out)

    def remember(self, header: str | None) -> Challenge | None:
        """Keep the registry's challenge (gcr.io answers later 401s without one). Bearer wins over Basic
        when both are offered, whatever their order, as docker's challenge handlers decide: a registry (or
        a gateway in front of it) listing Basic first still wants its token."""
        offered = [ch for ch in parse_www_authenticate(header or "") if ch.scheme in ("bearer", "basic")]
        if not offered:
            return None
        self.challenge = next((ch for ch in offered if ch.scheme == "bearer"), offered[0])
        return self.challenge

    def rejected(self, header: str | None, scopes: tuple[str, ...], sent: str | None = None) -> None:
        """A 401 to a request that carried ``sent`` (its Authorization): forget that token, so the next request
        asks afresh. Only that one: requests in flight together all come back 401 when a token expires, and
        each dropping whatever was cached threw away the new token the first one had just fetched (a token
        request per request of the burst)."""
        challenge = self.remember(header) or self.challenge
        if self.seed_auth is not None:  # only the seed's token is ever sent: fetch it again (it outlives jobs: pool.py)
            if sent is None or self.seed_token is None or sent == self._seed_header(self.seed_token):
                self.seed_token = None
        elif challenge is not None and challenge.scheme == "bearer":
            key = TokenCache.key(challenge, scopes)
            cached = self.tokens.get(key)
            if sent is None or cached is None or sent == f"Bearer {cached}":
                self.tokens.drop(key)

    def _seed_header(self, token: str) -> str:
        assert self.seed_auth is not None
        return f"{self.seed_auth.token_type or 'Bearer'} {token}"

    async def header(self, scopes: tuple[str, ...], url: str, base: str, fetch: Fetch) -> str | None:
        """The Authorization value for a request to ``url`` needing ``scopes``, or None."""
        if not url.startswith(self._own_prefixes) and not self._same_host(url, base):
            return None  # never send credentials to another host (redirect targets, foreign Locations)
        if self.seed_auth is not None:
            token = self.seed_token
            if token is None:
                token = await self._token_once(_SEED_KEY, lambda: self._fetch_seed_token(fetch))
            return self._seed_header(token)
        ch = self.challenge
        if ch is None:
            return None
        if ch.scheme == "basic":
            return self.credentials.basic_header() if self.credentials else None
        key = TokenCache.key(ch, scopes)
        token = self.tokens.get(key)
        if token is None:
            token = await self._token_once(key, lambda: self._fetch_token(key, ch, scopes, base, fetch))
        return f"Bearer {token}"

    async def _fetch_seed_token(self, fetch: Fetch) -> str:
        auth = self.seed_auth
        assert auth is not None and auth.url
        body = await fetch(auth.url, auth.header, None, auth.json_body, "fetching a token from the auth url", False)
        where = redact_url(auth.url, every_value=True)
        self.seed_token, _ = parse_token_answer(body, registry=self.host, realm=where)
        return self.seed_token

    async def _token_once(self, key: tuple[str, str, tuple[str, ...]], fetch: Callable[[], Awaitable[str]]) -> str:
        """One token request per key at a time (the seed's token too): the blobs a copy starts at once all lack
        the same token, and each asking the token server for it (10 requests for an 8-layer image) is what gets
        a client rate-limited there. The others wait for the one under way (shielded: a waiter that is
        cancelled does not cancel it for the rest)."""
        pending = self._pending.get(key)
        if pending is None or pending.get_loop() is not asyncio.get_running_loop():  # none a closed loop left
            pending = asyncio.ensure_future(fetch())
            self._pending[key] = pending
            pending.add_done_callback(functools.partial(self._fetched, key))
        return await asyncio.shield(pending)

    def _fetched(self, key: tuple[str, str, tuple[str, ...]], done: asyncio.Future[str]) -> None:
        if self._pending.get(key) is done:
            del self._pending[key]
        if not done.cancelled():
            done.exception()  # retrieved: every waiter may have gone

    async def _fetch_token(
        self, key: tuple[str, str, tuple[str, ...]], ch: Challenge, scopes: tuple[str, ...], base: str, fetch: Fetch
    ) -> str:
        req = token_request(ch, scopes, self.credentials, self.host, base)
        check_followed_url(
            req.url, came_from=base, registry=self.host, what="token realm", policy=self.policy, kind="auth"
        )  # first: a realm refused outright (https -> http, a private address) is not "asked anonymously"
        if self.credentials and req.basic is None and not self._withheld:
            self._withheld = True  # said once: the 401 that follows would otherwise only say "check the credentials"
            log.warning(
                "registry %s: its token server %s is plain HTTP on another server (host or port): credentials "
                "not sent to it (an anonymous token is asked for)",
                self.host,
                redact_url(req.url, every_value=True),
            )
        answer = None if self._get_only.get(req.url, 0.0) > time.monotonic() else await self._oauth2(req, fetch)
        if answer is None:
            headers = {"Authorization": req.basic.basic_header()} if req.basic else {}
            try:
                answer = await fetch(req.url, headers, req.params, None, "token server refused", True)
            except RegistryResponseError as exc:
                if exc.status in (401, 403):  # GET cannot pass for this login: the next token request POSTs again
                    self._get_only.pop(req.url, None)
                raise
        token, expires_at = parse_token_answer(answer, registry=self.host, realm=redact_url(req.url, every_value=True))
        self.tokens.put(key, token, expires_at)
        return token

    def _same_host(self, url: str, base: str) -> bool:
        """Is ``url`` on the registry's own host? Its netloc as written, or its host and port with the
        scheme's default port made explicit: an endpoint written ``reg.example:443`` and the Location
        ``https://reg.example/...`` it hands out (or the other way round) are the same server."""
        if urlsplit(url).netloc.lower() == self.host.lower():
            return True
        return bool(base) and origin(url) == origin(base)

    async def _oauth2(self, req: TokenRequest, fetch: Fetch) -> bytes | None:
        """With an identity token (``docker login`` to ACR and others stores one), the OAuth2 variant of
        the token spec: POST ``grant_type=refresh_token``, as docker and skopeo do. None when the realm
        answers 404/405/501 (it knows only GET: the caller asks that way, and the token requests of the next
        10 minutes go straight to GET, unless a GET is refused: a POST refused per scope doubled the token
        requests) or there is no identity token.
        Sent only where the password would be (``req.basic``: an HTTPS realm, or the registry's own)."""
        creds = req.basic
        if creds is None or not creds.identity_token:
            return None
        params = dict(req.params)
        form = [("grant_type", "refresh_token"), ("refresh_token", creds.identity_token)]
        form += [("client_id", OAUTH_CLIENT_ID)]
        if "service" in params:
            form.append(("service", params["service"]))
        scopes = [v for k, v in req.params if k == "scope"]
        if scopes:
            form.append(("scope", " ".join(scopes)))
        try:
            return await fetch(req.url, {}, None, None, "token server refused", True, form)
        except RegistryResponseError as exc:
            if exc.status in (404, 405, 501):  # a realm that does not take the POST: asked with GET for a while
                # (not for good: a 404 during an ingress reload would leave a pool entry on GET, whose Basic
                # placeholder user an identity-token login cannot pass, until the process restarts)
                self._get_only[req.url] = time.monotonic() + GET_ONLY_SECONDS
                return None
            raise


# Keys of the seed's ``json`` whose values are words the errors use, not secrets (a registry's name, a grant
# type "password"): kept readable. Any other string value counts as a secret (an allow-list, as a
# deny-list misses a key).
_HARMLESS_KEYS = frozenset({"grant_type", "service", "scope", "client_id", "username", "user", "account"})


def _string_leaves(value: Any, depth: int = 0) -> list[str]:
    """Every string value in a JSON value (not its keys, nor the values of ``_HARMLESS_KEYS``): any may be a
    secret."""
    if depth > 32:  # a request's JSON is depth-checked already; a bound all the same
        return []
    if isinstance(value, dict):
        kept = [v for k, v in value.items() if not (isinstance(k, str) and k.lower() in _HARMLESS_KEYS)]
        return [s for v in kept for s in _string_leaves(v, depth + 1)]
    if isinstance(value, list):
        return [s for v in value for s in _string_leaves(v, depth + 1)]
    return [value] if isinstance(value, str) else []
