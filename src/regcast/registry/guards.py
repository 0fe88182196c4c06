"""Outbound request guards (SSRF): where regcast agrees to send requests, decided before sending.

Pure functions. Callers: endpoints from users (allow-list), and every URL a registry hands back
(redirects, upload Locations, token realms), which must not lead to link-local / cloud-metadata
addresses and must never turn https into http.
"""

from __future__ import annotations

import fnmatch
import ipaddress
from urllib.parse import urlsplit

from regcast._exceptions import InvalidInput, ProtocolViolation

METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata", "metadata.azure.com", "instance-data"})


def is_metadata_address(host: str | None) -> bool:
    """Link-local (169.254.0.0/16, fe80::/10) and known cloud-metadata names and addresses."""
    if not host:
        return False
    name = host.strip("[]").lower().rstrip(".")
    if name in METADATA_HOSTS:
        return True
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_link_local or str(ip) in ("fd00:ec2::254", "100.100.100.200")


def check_followed_url(url: str, *, came_from: str, registry: str, what: str) -> str:
    """A URL a registry handed us (redirect, upload Location, token realm): refuse it if unsafe."""
    new, old = urlsplit(url), urlsplit(came_from)
    if new.scheme not in ("http", "https") or not new.hostname:
        raise ProtocolViolation(f"registry {registry}: {what} is not an http(s) URL", registry=registry)
    if old.scheme == "https" and new.scheme == "http":
        raise ProtocolViolation(f"registry {registry}: refusing {what} from https to http", registry=registry)
    if is_metadata_address(new.hostname):
        raise ProtocolViolation(
            f"registry {registry}: refusing {what} to link-local/metadata address {new.hostname}", registry=registry
        )
    return url


def check_registry_allowed(host: str, patterns: tuple[str, ...]) -> None:
    """``host`` (host[:port]) must match one of the glob ``patterns`` when an allow-list is set."""
    host = host.lower()
    if is_metadata_address(urlsplit(f"//{host}").hostname):
        raise InvalidInput(f"registry {host} is a link-local/metadata address")
    if not patterns:
        return
    bare = urlsplit(f"//{host}").hostname or host
    if not any(fnmatch.fnmatchcase(host, p.lower()) or fnmatch.fnmatchcase(bare, p.lower()) for p in patterns):
        raise InvalidInput(f"registry {host} is not in REGCAST_ALLOWED_REGISTRIES")
