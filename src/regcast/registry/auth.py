"""Registry authentication as an I/O-free flow (as httpx does it).

Pure pieces only: credentials, the seed's explicit auth block, ``WWW-Authenticate`` parsing,
scopes, token request construction, token answer parsing and the token cache. The client
(``client.py``) performs the I/O these describe.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
import re
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from regcast._exceptions import ProtocolViolation
from regcast.registry.reference import is_loopback

MIN_TOKEN_LIFETIME = 60.0  # distribution token spec: treat less than 60 s as 60 s
MAX_TOKEN_LIFETIME = 24 * 3600.0  # no token is kept as valid forever ("expires_in": Infinity, 1e999)
MAX_TOKEN_ANSWER = 1024 * 1024
TOKENS_KEPT = 512  # token slots one client (or pool entry) keeps: scopes of the repositories it works on now
_HEADER_SAFE = re.compile(r"[\x21-\x7e]+")  # a token as an Authorization value carries it: visible ASCII


@dataclass(frozen=True)
class Credentials:
    """A username and password (or identity token). ``repr`` never shows the password."""

    username: str
    password: str = field(repr=False)
    identity_token: str | None = field(default=None, repr=False)  # Docker config's `identitytoken` (OAuth2)

    def basic_header(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    @classmethod
    def parse(cls, text: str) -> Credentials:
        """``USER:PASS`` as given to ``--src-creds``/``--dest-creds``."""
        user, sep, password = text.partition(":")
        if not sep or not user:
            raise ValueError("credentials must be USER:PASS")
        return cls(user, password)


@dataclass(frozen=True)
class SeedAuth:
    """The seed's ``auth`` block: a token fetched once from ``url`` and sent as ``<token_type> <token>``.

    The seed sent ``GET url`` with ``header`` as request headers and ``json`` as a JSON body, and
    read ``token`` from the answer; regcast does the same (also accepting ``access_token``).
    """

    url: str | None = field(default=None, repr=False)  # its query may hold an api_key
    token_type: str = "Bearer"
    header: dict[str, str] = field(default_factory=dict, repr=False)
    json_body: Any = field(default=None, repr=False)


@dataclass
class Challenge:
    scheme: str  # lower case: "bearer" or "basic"
    params: dict[str, str]

    @property
    def realm(self) -> str:
        return self.params.get("realm", "")


def _parse_params(text: str, i: int) -> tuple[dict[str, str], int]:
    params: dict[str, str] = {}
    n = len(text)
    while i < n:
        while i < n and text[i] in " ,":
            i += 1
        start = i
        while i < n and text[i] not in "= ,":
            i += 1
        key = text[start:i].strip().lower()
        if i >= n or text[i] != "=":
            # a bare token: the next challenge's scheme starts here
            return params, start
        i += 1
        if i < n and text[i] == '"':
            i += 1
            value = []
            while i < n and text[i] != '"':
                if text[i] == "\\" and i + 1 < n:
                    i += 1
                value.append(text[i])
                i += 1
            i += 1
            params[key] = "".join(value)
        else:
            start = i
            while i < n and text[i] != ",":
                i += 1
            params[key] = text[start:i].strip()
    return params, i


def parse_www_authenticate(header: str) -> list[Challenge]:
    """Parse ``WWW-Authenticate`` into challenges; tolerant of odd spacing, quoting and commas."""
    challenges: list[Challenge] = []
    i, n = 0, len(header)
    while i < n:
        while i < n and header[i] in " ,":
            i += 1
        start = i
        while i < n and header[i] not in " ,":
            i += 1
        scheme = header[start:i].lower()
        if not scheme:
            break
        params, i = _parse_params(header, i)
        challenges.append(Challenge(scheme, params))
    return challenges


def scope(repository: str, actions: str) -> str:
    return f"repository:{repository}:{actions}"


@dataclass
class TokenRequest:
    url: str
    params: list[tuple[str, str]]
    basic: Credentials | None


def origin(url: str) -> tuple[str, str, int | None]:
    """``(scheme, host, port)`` of ``url``, the scheme's default port made explicit."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = -1
    default = {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").rstrip("."), port if port is not None else default


def token_request(
    challenge: Challenge,
    scopes: tuple[str, ...],
    credentials: Credentials | None,
    registry_host: str,
    registry_base: str = "",
) -> TokenRequest:
    """What to ask the token server for. Credentials go to the realm only if it is safe.

    Safe: the realm is HTTPS, or has the registry's own origin (scheme, host and port: a plain
    http realm on another port is another server; CVE-2020-15157 class of leak), or both are the
    same loopback host.
    """
    realm = challenge.realm
    parts = urlsplit(realm)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ProtocolViolation(f"token realm is not an http(s) URL: {realm[:100]!r}", registry=registry_host)
    params: list[tuple[str, str]] = []
    if "service" in challenge.params:
        params.append(("service", challenge.params["service"]))
    for s in scopes:
        params.append(("scope", s))
    base = registry_base or f"http://{registry_host}/"
    realm_origin, registry_origin = origin(realm), origin(base)
    same_origin = realm_origin == registry_origin
    # a token server beside a loopback registry: the password never leaves this machine
    local = realm_origin[1] == registry_origin[1] and is_loopback(realm_origin[1])
    send_creds = credentials if (parts.scheme == "https" or same_origin or local) else None
    return TokenRequest(realm, params, send_creds)


def parse_token_answer(
    body: bytes, now: float | None = None, *, registry: str = "", realm: str = ""
) -> tuple[str, float]:
    """``(token, expires_at)`` from a token server's JSON answer.

    ``registry`` (host[:port]) and ``realm`` (a redacted URL) name where the answer came from: a login page
    or an error page is a job's one-line reason, and it must say which registry's token server sent it."""
    now = time.monotonic() if now is None else now
    where = " ".join(part for part in (f"registry {registry}:" if registry else "", "token server", realm) if part)
    try:
        doc = json.loads(body[:MAX_TOKEN_ANSWER])
    except ValueError as exc:
        raise ProtocolViolation(f"{where} answered with something that is not JSON", registry=registry) from exc
    if not isinstance(doc, dict):
        raise ProtocolViolation(f"{where} answer is not a JSON object", registry=registry)
    token = doc.get("token") or doc.get("access_token")
    if not isinstance(token, str) or not token:
        raise ProtocolViolation(f"{where} answer has no 'token' or 'access_token'", registry=registry)
    if not _HEADER_SAFE.fullmatch(token):  # sent as "Bearer <token>": a CR/LF was an internal error, not this line
        raise ProtocolViolation(
            f"{where} answer's token is not printable ASCII (a header cannot carry it)", registry=registry
        )
    expires_at = now + min(max(_lifetime(doc.get("expires_in")), MIN_TOKEN_LIFETIME), MAX_TOKEN_LIFETIME) - 5.0
    jwt_left = _jwt_seconds_left(token, _issued_at(doc.get("issued_at")))
    # the token's own exp wins when it is sooner (servers that lie about expires_in); a token fresh from its
    # server that looks expired says the clocks differ (no iat, no issued_at): expires_in counts then, not a
    # token request per registry request
    if jwt_left is not None and jwt_left > 0:
        expires_at = min(expires_at, now + jwt_left - min(2.0, jwt_left / 4))
    return token, expires_at


def _issued_at(value: object) -> float | None:
    """The answer's ``issued_at`` (RFC 3339, the token server's clock) as a POSIX time, or None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        when = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return (when if when.tzinfo else when.replace(tzinfo=dt.UTC)).timestamp()


def _lifetime(expires_in: object) -> float:
    """``expires_in`` in seconds: a number, or a number written as a string (``"3600"``, as some token servers
    send it); anything else (absent, ``null``, ``true``, text) is the spec's default. Never NaN: Python's JSON
    reader takes ``NaN``, and a NaN expiry is a token that never counts as valid (a token request per
    registry request); ``Infinity`` is capped by the caller (``MAX_TOKEN_LIFETIME``), and an integer too
    large for a float is that cap too, not an ``OverflowError`` out of the registry layer."""
    if isinstance(expires_in, str):
        try:
            expires_in = float(expires_in.strip())
        except ValueError:
            return MIN_TOKEN_LIFETIME
    if not isinstance(expires_in, int | float) or isinstance(expires_in, bool):
        return MIN_TOKEN_LIFETIME
    try:
        seconds = float(expires_in)
    except OverflowError:
        return MAX_TOKEN_LIFETIME if expires_in > 0 else MIN_TOKEN_LIFETIME
    return MIN_TOKEN_LIFETIME if math.isnan(seconds) else seconds


def _jwt_seconds_left(token: str, issued_at: float | None = None) -> float | None:
    """Seconds until a JWT's ``exp`` (read, not verified: only to refresh in time), or None.

    Counted from its ``iat`` when it has one, else from the answer's ``issued_at`` (a token is read as it
    arrives): both are the token server's clock, so a skewed local clock neither makes a fresh token look
    expired (a token fetched per request) nor long-lived."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        exp = payload.get("exp") if isinstance(payload, dict) else None
        iat = payload.get("iat") if isinstance(payload, dict) else None
    except (ValueError, TypeError):
        return None
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        return None
    try:  # an exp or iat too large for a float (10**400) says nothing usable
        if isinstance(iat, int | float) and not isinstance(iat, bool):
            issued = float(iat)
        else:
            issued = issued_at if issued_at is not None else time.time()
        return float(exp) - float(issued)
    except OverflowError:
        return None


@dataclass
class TokenCache:
    """Tokens per (realm, service, scopes): several slots, unlike a one-token client."""

    _tokens: dict[tuple[str, str, tuple[str, ...]], tuple[str, float]] = field(default_factory=dict, repr=False)

    @staticmethod
    def key(challenge: Challenge, scopes: tuple[str, ...]) -> tuple[str, str, tuple[str, ...]]:
        return (challenge.realm, challenge.params.get("service", ""), tuple(sorted(scopes)))

    def get(self, key: tuple[str, str, tuple[str, ...]], now: float | None = None) -> str | None:
        entry = self._tokens.get(key)
        now = time.monotonic() if now is None else now
        if entry and entry[1] > now:
            return entry[0]
        self._tokens.pop(key, None)
        return None

    def put(
        self, key: tuple[str, str, tuple[str, ...]], token: str, expires_at: float, now: float | None = None
    ) -> None:
        """Keep ``token``; past ``TOKENS_KEPT`` slots, the expired ones go, then the longest kept. A pool entry
        of the service lives as long as its registry is busy: a mirror set's thousand repositories left a
        token each (and its scopes' others) for good, every error's scrub walking them all."""
        self._tokens.pop(key, None)
        self._tokens[key] = (token, expires_at)
        if len(self._tokens) > TOKENS_KEPT:
            now = time.monotonic() if now is None else now
            for old in [k for k, (_t, until) in self._tokens.items() if until <= now]:
                del self._tokens[old]
            while len(self._tokens) > TOKENS_KEPT:
                del self._tokens[next(iter(self._tokens))]

    def drop(self, key: tuple[str, str, tuple[str, ...]]) -> None:
        self._tokens.pop(key, None)

    def secrets(self) -> tuple[str, ...]:
        return tuple(t for t, _ in self._tokens.values())
