"""The boundary where aiohttp and ssl errors become regcast errors, and HTTP answers become
``RegistryResponseError``s carrying status, OCI code, method and a redacted URL."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import ssl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from regcast._exceptions import (
    AuthenticationFailed,
    BodyBroken,
    Failure,
    NotFound,
    OutboundRefused,
    RateLimited,
    RegistryResponseError,
    RegistryUnreachable,
)
from regcast.registry.auth import parse_www_authenticate
from regcast.registry.digest import announced_digest
from regcast.registry.guards import AddressRefused
from regcast.registry.redact import printable, redact_text, redact_url, redact_urls
from regcast.registry.tls import aiohttp

MAX_ERROR_BODY = 1024 * 1024
# An error body is read for its message only, within this many seconds: a streamed request (a blob GET, an
# upload) has no total limit and the read limit is between reads, so a body trickled a byte at a time held it
ERROR_BODY_SECONDS = 10.0
# Answers whose Retry-After says when to come back: 429, and 503 (RFC 9110: how long the service is
# expected to be unavailable, e.g. a registry in maintenance or its read-only window)
RETRY_AFTER_STATUSES = frozenset({429, 503})


def _classify(exc: BaseException) -> tuple[Failure, str]:
    """What kind of failure this is (it decides retrying) and the words for it."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return Failure.CERTIFICATE, f"TLS certificate not trusted ({exc.certificate_error})"
    if isinstance(exc, aiohttp.ClientConnectorSSLError | aiohttp.ClientSSLError | ssl.SSLError):
        return Failure.TLS_HANDSHAKE, "TLS handshake failed (does the host speak TLS?)"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        if exc.os_error.errno == socket.EAI_AGAIN:
            return Failure.DNS_TEMPORARY, "host name lookup failed (resolver did not answer)"
        return Failure.NAME_NOT_FOUND, "host name not found"
    if isinstance(exc, aiohttp.InvalidURL):
        return Failure.INVALID_URL, "invalid URL"  # its text holds the raw URL: left to __cause__
    if isinstance(exc, aiohttp.ClientConnectorError):
        return Failure.CONNECT, f"connection failed ({exc.os_error.strerror or exc.os_error})"
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return Failure.TIMEOUT, "timed out"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return Failure.DISCONNECTED, "server closed the connection"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return Failure.DISCONNECTED, "connection broke while reading the body"
    return Failure.DISCONNECTED, _other(exc)


def _other(exc: BaseException) -> str:
    """The words for any other library error: never its raw text, whose URL may carry a redirect's signature."""
    if isinstance(exc, aiohttp.ClientResponseError):  # its str() ends with the raw URL
        # and its message quotes the server's bytes, cut at 100 (b'X-Echo: <credentials it got>...'): too short
        # a piece for a secret to be recognised and scrubbed, so nothing quoted is kept
        said = re.split(r""":?\s*b?['"]""", str(exc.message), maxsplit=1)[0]
        return f"malformed answer ({printable(said, 100)})"
    text = str(exc)
    return type(exc).__name__ + (f" ({printable(redact_urls(text), 200)})" if text else "")


def _refused_address(exc: BaseException) -> str | None:
    """The outbound policy's reason when the socket factory refused every address, else None."""
    os_error = exc.os_error if isinstance(exc, aiohttp.ClientConnectorError) else exc
    if isinstance(os_error, AddressRefused):
        return str(os_error)
    text = str(os_error)
    return text[text.index("address ") :] if "refused by the outbound policy" in text else None


@contextmanager
def translate_errors(
    registry: str, method: str, url: str, body: bool = False, secrets: Callable[[], tuple[str, ...]] | None = None
) -> Iterator[None]:
    """Turn library errors raised inside the block into ``RegistryUnreachable`` with one clear line
    (``BodyBroken`` with ``body``: the block reads an answer's body, which ``request.reading`` asks again).

    The library error stays as ``__cause__`` for debugging; the message is built from the redacted URL, and
    scrubbed of ``secrets()`` (asked only then): a malformed answer's text quotes the server's own bytes.
    """
    try:
        yield
    except OutboundRefused as exc:  # the client middleware: name the registry, as every error does
        text = str(exc)
        raise OutboundRefused(text if text.startswith("registry ") else f"registry {registry}: {text}") from exc
    except (aiohttp.ClientError, ssl.SSLError, TimeoutError, OSError) as exc:
        refused = _refused_address(exc)
        if refused:
            raise OutboundRefused(f"registry {registry}: {method} {redact_url(url)}: {refused}") from exc
        failure, reason = _classify(exc)
        text = f"registry {registry}: {method} {redact_url(url)}: {reason}"
        kind = BodyBroken if body else RegistryUnreachable
        raise kind(redact_text(text, secrets()) if secrets else text, registry=registry, failure=failure) from exc


def challenges(resp: aiohttp.ClientResponse) -> str | None:
    """Every ``WWW-Authenticate`` of an answer as one header value: a registry may send one header per
    challenge (Basic, then Bearer), and the first alone may be the one regcast should not answer."""
    values = resp.headers.getall("WWW-Authenticate", [])
    return ", ".join(values) if values else None


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds (a number or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def oci_error(body: bytes, secrets: tuple[str, ...] = ()) -> tuple[str, str]:
    """The telling ``(code, message)`` of an OCI ``errors`` body: the first not ``UNKNOWN`` (distribution 2.8
    lists ``UNKNOWN`` first, then ``MANIFEST_BLOB_UNKNOWN``, for a foreign layer URL it refuses), with the
    digest its ``detail`` names, if any; empty strings if the body is anything else.

    Token servers answer in their own shapes, read as docker reads them: OAuth2's ``{"error",
    "error_description"}`` (RFC 6749 5.2: an expired identity token is ``invalid_grant``) and Docker Hub's
    ``{"details": "incorrect username or password"}`` (no code). Without them the line said only the status.
    Every text is scrubbed of ``secrets`` before it is cut short: cut first, a secret across the cut showed
    its first part."""

    def said(value: object, length: int) -> str:
        # cut to a window a secret crossing the cut lies wholly inside, then scrubbed, then cut: not a 1 MiB
        # body scrubbed of 512 tokens on the event loop
        window = length + max((len(s) for s in secrets), default=0)
        return printable(redact_text(str(value)[:window], secrets), length)

    try:
        doc = json.loads(body)
    except ValueError:
        return "", ""
    try:
        errors = doc["errors"]
        first = next((e for e in errors if e.get("code") != "UNKNOWN"), errors[0])
        message = said(first.get("message", ""), 200)
        detail = first.get("detail")
        if isinstance(detail, str) and announced_digest(detail) == detail:  # a digest only: no remote prose
            message += f" ({detail})"
        return said(first.get("code", ""), 60), message
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        pass
    if not isinstance(doc, dict):
        return "", ""
    code, description, details = doc.get("error"), doc.get("error_description"), doc.get("details")
    if isinstance(code, str) and code:
        return said(code, 60), said(description, 200) if isinstance(description, str) else ""
    return "", said(details, 200) if isinstance(details, str) else ""


async def read_capped(resp: aiohttp.ClientResponse, cap: int) -> bytes:
    """Read at most ``cap`` + 1 bytes of a body (caller decides what more than ``cap`` means)."""
    parts: list[bytes] = []
    total = 0
    while total <= cap:
        chunk = await resp.content.read(min(65536, cap + 1 - total))
        if not chunk:
            break
        parts.append(chunk)
        total += len(chunk)
    return b"".join(parts)


async def response_error(
    resp: aiohttp.ClientResponse, registry: str, what: str, secrets: tuple[str, ...] = (), every_value: bool = False
) -> RegistryResponseError:
    """Build the right ``RegistryResponseError`` for an unwanted answer (reads a capped body)."""
    try:
        async with asyncio.timeout(ERROR_BODY_SECONDS):
            body = await read_capped(resp, MAX_ERROR_BODY)
    except (TimeoutError, aiohttp.ClientError):
        body = b""
    code, message = oci_error(body, secrets)
    method = resp.method
    url = redact_url(str(resp.url), every_value)
    status = resp.status
    # a short, sanitised reason only: a foreign server's body is never echoed beyond it
    detail = f"{code}: {message}" if code and message else code or message or printable(resp.reason or "", 60)
    if status in (401, 403):
        detail += _scope_refused(challenges(resp))
    text = redact_text(f"registry {registry}: {what}: {method} {url} answered {status} {detail}".rstrip(), secrets)
    kind = _BY_STATUS.get(status, RegistryResponseError)
    retry_after = parse_retry_after(resp.headers.get("Retry-After")) if status in RETRY_AFTER_STATUSES else None
    return kind(text, registry=registry, status=status, code=code, method=method, url=url, retry_after=retry_after)


def _scope_refused(header: str | None) -> str:
    """`` (insufficient_scope: <scope>)`` when the challenge says the token lacked a scope, else ``""``: the
    token server granted less than asked (no error there), so the credentials may not do this here."""
    for ch in parse_www_authenticate(header or ""):
        if ch.params.get("error") == "insufficient_scope":
            wanted = ch.params.get("scope", "")
            return f" (insufficient_scope{': ' + printable(wanted, 200) if wanted else ''})"
    return ""


def status_error(resp: aiohttp.ClientResponse, registry: str) -> RegistryResponseError | None:
    """The error an answer stands for, judged by its status alone (no body read), or None under 400.

    The request path asks it whether to try again; the caller reads the body for the real message.
    """
    status = resp.status
    if status < 400:
        return None
    kind = _BY_STATUS.get(status, RegistryResponseError)
    retry_after = parse_retry_after(resp.headers.get("Retry-After")) if status in RETRY_AFTER_STATUSES else None
    url = redact_url(str(resp.url))
    return kind(
        f"registry {registry}: {resp.method} {url} answered {status}",
        registry=registry,
        status=status,
        method=resp.method,
        url=url,
        retry_after=retry_after,
    )


_BY_STATUS: dict[int, type[RegistryResponseError]] = {
    401: AuthenticationFailed,
    403: AuthenticationFailed,
    404: NotFound,
    429: RateLimited,
}
