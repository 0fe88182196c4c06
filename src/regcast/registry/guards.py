"""Outbound request guards (SSRF): where regcast agrees to send requests, and to which addresses.

Two layers, because a host's text is not where a request goes:

1. the URL, before any request (endpoints, ``auth.url``, realms, redirects, upload Locations):
   its host is normalised exactly as the HTTP stack will (yarl: IDNA, fullwidth digits,
   ideographic full stops; then the numeric IPv4 forms getaddrinfo accepts: hex, octal,
   decimal, short), checked against cloud-metadata names, forbidden addresses and the
   allow-lists (``REGCAST_ALLOWED_REGISTRIES``; token hosts also ``REGCAST_ALLOWED_AUTH_HOSTS``);
2. the address, at connect time: the connector's socket factory sees the very address it is
   about to connect to, after DNS, so a rebinding answer cannot swap a checked name for a
   forbidden address (IPv4-mapped, NAT64, 6to4 and Teredo forms are unwrapped first).
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from yarl import URL

from regcast._exceptions import InvalidInput, OutboundRefused, ProtocolViolation

Kind = Literal["registry", "auth"]
IP = ipaddress.IPv4Address | ipaddress.IPv6Address

METADATA_HOSTS = frozenset(
    {
        "metadata.google.internal",
        "metadata.goog",
        "metadata",
        "metadata.azure.com",
        "instance-data",
        "instance-data.ec2.internal",
    }
)
# Cloud metadata services outside 169.254.0.0/16: AWS IPv6, Alibaba, Azure wireserver, Oracle.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("fd00:ec2::254", "100.100.100.200", "168.63.129.16", "192.0.0.192")
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
_SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT: private in practice
VERDICTS_KEPT = 256  # origins whose verdict one policy keeps (cleared when full)
_NUMERIC_V4 = re.compile(r"^(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+)){0,3}$")


class AddressRefused(OSError):
    """Raised by the socket factory: aiohttp reports it as a connection error we recognise."""


def canonical_host(host: str) -> str:
    """``host`` as it will be connected to: lower case, no brackets or trailing dots, IPv4 canonical.

    ``host`` is what yarl made of the URL (IDNA and Unicode already applied).
    """
    name = host.strip().lower()
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    name = name.rstrip(".")
    if _NUMERIC_V4.match(name):
        try:  # the forms getaddrinfo accepts: 0xa9fea9fe, 2852039166, 0251.0376.0251.0376, 169.254.43518
            return socket.inet_ntoa(socket.inet_aton(name))
        except OSError:
            pass
    return name


def _parsed_host(url: str) -> tuple[str, int | None, str]:
    """``(raw host, port, scheme)`` of ``url`` as the HTTP stack parses it (the host IDNA-encoded)."""
    try:
        parsed = URL(url)
        host = parsed.raw_host  # IDNA-encoded: what DNS is asked for
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"invalid URL: {exc}") from None
    if not host:
        raise InvalidInput("invalid URL: no host")
    return host, parsed.explicit_port, parsed.scheme


def url_host(url: str) -> tuple[str, int | None, str]:
    """``(canonical host, port, scheme)`` of ``url`` as the HTTP stack parses it."""
    host, port, scheme = _parsed_host(url)
    return canonical_host(host), port, scheme


def _ip(host: str) -> IP | None:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, NAT64, 6to4, Teredo, IPv4-compatible), or None."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if int(ip) >> 32 == 0 and int(ip) > 1:  # deprecated IPv4-compatible ::a.b.c.d
        return ipaddress.IPv4Address(int(ip))
    return None


def _private(ip: IP) -> bool:
    if isinstance(ip, ipaddress.IPv4Address) and ip in _SHARED:
        return True
    return (
        ip.is_loopback
        or ip.is_private
        or ip.is_reserved
        or (isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local)
    )


def address_problem(ip: IP, block_private: bool = False) -> str | None:
    """Why regcast will not connect to ``ip`` (None: it may)."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_v4(ip)
        if inner is not None:
            return address_problem(inner, block_private)
        if ip in _NAT64_LOCAL:
            return "a NAT64 address"
    if ip in METADATA_ADDRESSES or ip.is_link_local:
        return "a link-local/metadata address"
    if ip.is_unspecified or (isinstance(ip, ipaddress.IPv4Address) and ip in _THIS_NETWORK):
        return "an unspecified (0.0.0.0/8) address"
    if ip.is_multicast:
        return "a multicast address"
    if block_private and _private(ip):
        return "a loopback/private address (REGCAST_BLOCK_PRIVATE is on)"
    return None


def host_problem(host: str, block_private: bool = False) -> str | None:
    """Why the (canonical) ``host`` is refused by its text alone, or None."""
    if host in METADATA_HOSTS or host.endswith(".metadata.google.internal"):
        return "a cloud-metadata name"
    if block_private and (host == "localhost" or host.endswith(".localhost")):
        return "a loopback name (REGCAST_BLOCK_PRIVATE is on)"
    ip = _ip(host)
    return address_problem(ip, block_private) if ip is not None else None


def is_metadata_address(host: str | None) -> bool:
    """Link-local (169.254.0.0/16, fe80::/10) and known cloud-metadata names and addresses, in any spelling."""
    if not host:
        return False
    try:
        name = canonical_host(URL.build(scheme="http", host=host.strip("[]")).raw_host or host)
    except (ValueError, TypeError):
        name = canonical_host(host)
    return (host_problem(name) or "").startswith(("a link-local", "a cloud-metadata"))


def _matches(host: str, port: int | None, patterns: tuple[str, ...]) -> bool:
    hostport = f"{host}:{port}" if port is not None else host
    if ":" in host and port is not None:
        hostport = f"[{host}]:{port}"
    return any(fnmatch.fnmatchcase(hostport, p.lower()) or fnmatch.fnmatchcase(host, p.lower()) for p in patterns)


@dataclass(frozen=True)
class OutboundPolicy:
    """Where regcast may send requests: built once from the settings, carried by every client.

    A verdict depends only on the URL's scheme, host and port (and the allow-list asked), so it is
    decided once per origin and kept (``_verdicts``, bounded): every request's middleware check and
    every upload Location's check would otherwise normalise the same host and parse the same
    address again (~40 us of a request's CPU, issue 17). Not part of equality or hashing.
    """

    registries: tuple[str, ...] = ()  # REGCAST_ALLOWED_REGISTRIES (glob host[:port]); empty = any
    auth_hosts: tuple[str, ...] = ()  # REGCAST_ALLOWED_AUTH_HOSTS: token servers, besides the registries
    block_private: bool = False  # REGCAST_BLOCK_PRIVATE: loopback and private ranges refused too
    _verdicts: dict[tuple[str, str, int | None, Kind], str | None] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )

    def problem(self, url: str, kind: Kind = "registry") -> str | None:
        """Why a request to ``url`` is refused (a short reason naming the host), or None."""
        try:
            host, port, scheme = _parsed_host(url)
        except InvalidInput as exc:
            return str(exc)
        return self._verdict(scheme, host, port, kind)

    def _verdict(self, scheme: str, raw_host: str, port: int | None, kind: Kind) -> str | None:
        """``problem`` for a parsed URL: decided once per (scheme, host, port, kind)."""
        key = (scheme, raw_host, port, kind)
        try:
            return self._verdicts[key]
        except KeyError:
            pass
        why = self._decide(scheme, canonical_host(raw_host), port, kind)
        if len(self._verdicts) >= VERDICTS_KEPT:  # hosts come from registries' answers too: bounded
            self._verdicts.clear()
        self._verdicts[key] = why
        return why

    def _decide(self, scheme: str, host: str, port: int | None, kind: Kind) -> str | None:
        if scheme not in ("http", "https"):
            return f"{scheme or 'no'} scheme is not http(s)"
        why = host_problem(host, self.block_private)
        if why:
            return f"{host} is {why}"
        if self.registries or (kind == "auth" and self.auth_hosts):
            allowed = self.registries + (self.auth_hosts if kind == "auth" else ())
            if not _matches(host, port, allowed):
                where = "REGCAST_ALLOWED_REGISTRIES" + (" or REGCAST_ALLOWED_AUTH_HOSTS" if kind == "auth" else "")
                return f"{host}{f':{port}' if port is not None else ''} is not in {where}"
        return None

    def check_url(self, url: str, kind: Kind = "registry", what: str = "request") -> str:
        why = self.problem(url, kind)
        if why:
            raise OutboundRefused(f"refusing {what}: {why}")
        return url

    def socket_factory(self, addr_info: tuple[Any, ...]) -> socket.socket:
        """aiohttp's socket factory: the last word on the address actually connected to."""
        family, type_, proto, _canon, sockaddr = addr_info
        ip = _ip(str(sockaddr[0]))
        why = address_problem(ip, self.block_private) if ip is not None else "not an IP address"
        if why:
            raise AddressRefused(f"address {sockaddr[0]} refused by the outbound policy: it is {why}")
        return socket.socket(family, type_, proto)

    def middleware(self, kind: Kind) -> Callable[[Any, Callable[[Any], Awaitable[Any]]], Awaitable[Any]]:
        """An aiohttp client middleware checking every request's URL before it is sent."""

        async def guard(request: Any, handler: Callable[[Any], Awaitable[Any]]) -> Any:
            url = request.url  # already parsed by aiohttp: its very host, port and scheme, no second parse
            host = url.raw_host
            why = self._verdict(url.scheme, host, url.explicit_port, kind) if host else self.problem(str(url), kind)
            if why:
                raise OutboundRefused(f"refusing {request.method} to this host: {why}")
            return await handler(request)

        return guard


def check_followed_url(
    url: str, *, came_from: str, registry: str, what: str, policy: OutboundPolicy | None = None, kind: Kind = "registry"
) -> str:
    """A URL a registry handed us (redirect, upload Location, token realm): refuse it if unsafe."""
    new, old = urlsplit(url), urlsplit(came_from)
    if new.scheme not in ("http", "https") or not new.hostname:
        raise ProtocolViolation(f"registry {registry}: {what} is not an http(s) URL", registry=registry)
    if "@" in new.netloc:  # sent with them, aiohttp refused the request (a ValueError out of the registry layer)
        raise ProtocolViolation(f"registry {registry}: refusing {what}: it carries user:password@", registry=registry)
    if old.scheme == "https" and new.scheme == "http":
        raise ProtocolViolation(f"registry {registry}: refusing {what} from https to http", registry=registry)
    why = (policy or OutboundPolicy()).problem(url, kind)
    if why:
        raise OutboundRefused(f"registry {registry}: refusing {what}: {why}")
    return url


def check_registry_allowed(host: str, patterns: tuple[str, ...], block_private: bool = False) -> None:
    """``host`` (host[:port]) must be a safe address and match one of ``patterns`` when an allow-list is set."""
    why = OutboundPolicy(patterns, (), block_private).problem(f"http://{host}/")
    if why:
        raise OutboundRefused(f"registry {why}")
