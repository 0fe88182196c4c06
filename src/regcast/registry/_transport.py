"""The boundary where aiohttp and ssl errors become regcast errors, and HTTP answers become
``RegistryResponseError``s carrying status, OCI code, method and a redacted URL."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import aiohttp

from regcast._exceptions import (
    AuthenticationFailed,
    NotFound,
    OutboundRefused,
    RateLimited,
    RegistryResponseError,
    RegistryUnreachable,
)
from regcast.registry.guards import AddressRefused
from regcast.registry.redact import redact_text, redact_url

MAX_ERROR_BODY = 1024 * 1024


def _reason(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return f"TLS certificate not trusted ({exc.certificate_error})"
    if isinstance(exc, aiohttp.ClientConnectorSSLError | ssl.SSLError):
        return "TLS handshake failed (does the host speak TLS?)"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "host name not found"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"connection failed ({exc.os_error.strerror or exc.os_error})"
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "server closed the connection"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "connection broke while reading the body"
    return type(exc).__name__ + (f" ({exc})" if str(exc) else "")


def _refused_address(exc: BaseException) -> str | None:
    """The outbound policy's reason when the socket factory refused every address, else None."""
    os_error = exc.os_error if isinstance(exc, aiohttp.ClientConnectorError) else exc
    if isinstance(os_error, AddressRefused):
        return str(os_error)
    text = str(os_error)
    return text[text.index("address ") :] if "refused by the outbound policy" in text else None


@contextmanager
def translate_errors(registry: str, method: str, url: str) -> Iterator[None]:
    """Turn library errors raised inside the block into ``RegistryUnreachable`` with one clear line."""
    try:
        yield
    except OutboundRefused as exc:  # the client middleware: name the registry, as every error does
        text = str(exc)
        raise OutboundRefused(text if text.startswith("registry ") else f"registry {registry}: {text}") from None
    except (aiohttp.ClientError, ssl.SSLError, TimeoutError, OSError) as exc:
        refused = _refused_address(exc)
        if refused:
            raise OutboundRefused(f"registry {registry}: {method} {redact_url(url)}: {refused}") from None
        tls = isinstance(exc, aiohttp.ClientSSLError | ssl.SSLError)  # deterministic: never worth a retry
        raise RegistryUnreachable(
            f"registry {registry}: {method} {redact_url(url)}: {_reason(exc)}", registry=registry, transient=not tls
        ) from None


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


def oci_error(body: bytes) -> tuple[str, str]:
    """First ``(code, message)`` of an OCI ``errors`` body; empty strings if the body is anything else."""
    try:
        doc = json.loads(body)
        first = doc["errors"][0]
        return str(first.get("code", ""))[:100], str(first.get("message", ""))[:300]
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return "", ""


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
    resp: aiohttp.ClientResponse, registry: str, what: str, secrets: tuple[str, ...] = ()
) -> RegistryResponseError:
    """Build the right ``RegistryResponseError`` for an unwanted answer (reads a capped body)."""
    try:
        body = await read_capped(resp, MAX_ERROR_BODY)
    except (TimeoutError, aiohttp.ClientError):
        body = b""
    code, message = oci_error(body)
    method = resp.method
    url = redact_url(str(resp.url))
    status = resp.status
    detail = f"{code}: {message}" if code else (resp.reason or "")
    text = redact_text(f"registry {registry}: {what}: {method} {url} answered {status} {detail}".rstrip(), secrets)
    kind = _BY_STATUS.get(status, RegistryResponseError)
    retry_after = parse_retry_after(resp.headers.get("Retry-After")) if status == 429 else None
    return kind(text, registry=registry, status=status, code=code, method=method, url=url, retry_after=retry_after)


_BY_STATUS: dict[int, type[RegistryResponseError]] = {
    401: AuthenticationFailed,
    403: AuthenticationFailed,
    404: NotFound,
    429: RateLimited,
}
