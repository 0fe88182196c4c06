"""Image references as users write them, and registry endpoints as the seed wrote them.

Two spellings reach regcast:

* ``host[:port]/path/name[:tag][@sha256:...]`` (``docker pull`` style, the CLI), with Docker Hub's
  defaults (``docker.io``, ``library/``);
* the seed's ``endpoint`` (``http://host:port/v2``) + ``image`` + ``ref`` (the REST API).

Both become an ``Endpoint`` (where to send requests) and a ``Reference`` (what to ask for).
Every repository name, tag and digest is validated here, before it is used in a URL.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

from regcast._exceptions import InvalidReference
from regcast.registry.digest import validate_digest
from regcast.registry.redact import without_userinfo

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
_HUB_ALIASES = {"docker.io", "index.docker.io", "registry-1.docker.io"}

# OCI distribution spec: <name> components and tags.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*\Z")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}\Z")
_HOST_RE = re.compile(r"^(?:\[[0-9a-fA-F:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)(?::[0-9]{1,5})?\Z")
MAX_REPOSITORY_LENGTH = 255


def validate_repository(name: str) -> str:
    if len(name) > MAX_REPOSITORY_LENGTH or not _REPOSITORY_RE.match(name):
        raise InvalidReference(
            f"invalid repository name {name[:80]!r}: lowercase letters, digits and separators (. _ __ -) "
            "in '/'-separated components"
        )
    return name


def validate_tag(tag: str) -> str:
    if not _TAG_RE.match(tag):
        raise InvalidReference(f"invalid tag {tag[:80]!r}: up to 128 of [A-Za-z0-9_.-], not starting with . or -")
    return tag


def validate_ref(ref: str) -> str:
    """A tag or a digest (the seed's ``ref`` field)."""
    return validate_digest(ref) if ":" in ref else validate_tag(ref)


def _host_only(host: str) -> str:
    if host.startswith("["):
        return host[1 : host.index("]")]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def is_loopback(host: str) -> bool:
    """True for localhost, 127.0.0.0/8 and ::1 (``host`` may carry a port)."""
    name = _host_only(host).lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Endpoint:
    """Where a registry's v2 API lives: ``{scheme}://{host}{prefix}/v2/``.

    ``fallback_http`` allows plain HTTP when the host does not speak TLS (loopback hosts, or TLS
    verification switched off), decided once by the client's first request.
    """

    scheme: str
    host: str
    prefix: str = ""
    fallback_http: bool = False

    @property
    def base(self) -> str:
        return f"{self.scheme}://{self.host}{self.prefix}/v2/"

    @property
    def name(self) -> str:
        """The registry as users name it in messages (host[:port])."""
        return self.host

    def with_scheme(self, scheme: str) -> Endpoint:
        return replace(self, scheme=scheme, fallback_http=False)


@dataclass(frozen=True)
class Reference:
    """One image in one repository: by tag, by digest, or both (the digest wins)."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def ref(self) -> str:
        """What goes after ``/manifests/``: the digest if given, else the tag."""
        return self.digest or self.tag or "latest"

    def __str__(self) -> str:
        s = f"{self.registry}/{self.repository}"
        if self.tag:
            s += f":{self.tag}"
        if self.digest:
            s += f"@{self.digest}"
        return s


def pinned_mismatch(src_digest: str | None, dst: Reference) -> str | None:
    """A DST naming a tag and a digest is pushed to its tag; the digest must be the one SRC names."""
    if dst.tag and dst.digest and dst.digest != src_digest:
        return f"{dst}: its digest must be the one SRC names (write SRC as NAME:TAG@{dst.digest})"
    return None


def split_ref(ref: str) -> tuple[str | None, str | None]:
    """``ref`` (tag or digest) → (tag, digest)."""
    validate_ref(ref)
    return (None, ref) if ":" in ref else (ref, None)


# skopeo's transports regcast does not read or write: named so, rather than taken for Docker Hub images.
# The hyphenated ones always; a short one (dir:, sif: ...) only when what follows cannot be a tag, so the
# Docker Hub image ``dir:1.0`` stays one while ``dir:/tmp/x`` is refused.
OTHER_TRANSPORTS = frozenset({"docker-archive", "docker-daemon", "containers-storage"})
SHORT_TRANSPORTS = frozenset({"dir", "ostree", "sif", "tarball"})


def _other_transport(text: str) -> str | None:
    """The skopeo transport ``text`` names, if it names one regcast does not support."""
    transport, colon, rest = text.partition(":")
    if not colon or (rest.split("/", 1)[0].isdigit() and "/" in rest):
        return None  # dir:5000/app:1 is the registry host "dir" on port 5000
    if transport in OTHER_TRANSPORTS:
        return transport
    if transport in SHORT_TRANSPORTS and not _TAG_RE.match(rest.split("@", 1)[0]):
        return transport
    return None


def parse_reference(text: str, default_tag: str | None = "latest") -> Reference:
    """Parse ``host[:port]/path/name[:tag][@digest]`` with Docker Hub's defaults.

    ``default_tag`` fills in a missing tag (None leaves it unset: a DST keeps the source's).
    """
    original = text
    if "://" in text:  # a URL pasted from a browser may carry user:password@: never echoed
        raise InvalidReference(f"invalid reference {without_userinfo(text)!r}: write host/path:tag without a scheme")
    transport = _other_transport(text)
    if transport is not None:  # else docker-archive:x.tar is docker.io/library/docker-archive
        raise InvalidReference(
            f"invalid reference {original[:200]!r}: {transport}: is not supported; regcast copies registry images "
            "(host/path:tag), oci:DIR and oci-archive:FILE.tar"
        )
    digest = None
    if "@" in text:
        text, digest = text.rsplit("@", 1)
        validate_digest(digest)
    tag = None
    last = text.rsplit("/", 1)[-1]
    if ":" in last:
        text, tag = text.rsplit(":", 1)
        validate_tag(tag)
    registry, path = _split_registry(text, original)
    if registry.lower() in _HUB_ALIASES:
        registry = DOCKER_HUB
        if "/" not in path:
            path = f"library/{path}"
    if not path:
        raise InvalidReference(f"invalid reference {original!r}: no repository")
    validate_repository(path)
    if tag is None and digest is None:
        tag = default_tag
    return Reference(registry=registry, repository=path, tag=tag, digest=digest)


def _split_registry(text: str, original: str) -> tuple[str, str]:
    """(registry, repository path) of a reference without its tag and digest."""
    first, _, rest = text.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
        if not _HOST_RE.match(first):
            raise InvalidReference(f"invalid registry host {first!r} in {original!r}")
        return first, rest
    if not rest and _looks_like_host(first):
        # docker would read "127.0.0.1:5000" as docker.io/library/127.0.0.1:5000 and push there
        where = original.split("@")[0]
        raise InvalidReference(
            f"invalid reference {original!r}: {where} is a registry, not an image; write {where}/NAME[:TAG]"
        )
    return DOCKER_HUB, text


def canonical_registry(host: str) -> str:
    """A registry host as references name it: lower case, Docker Hub's aliases as ``docker.io`` (docker's
    config writes ``index.docker.io``, its API answers at ``registry-1.docker.io``)."""
    return DOCKER_HUB if host.lower() in _HUB_ALIASES else host.lower()


def validate_host(host: str) -> str:
    """A registry ``host[:port]`` as a reference or a mirror's target names it; ``user:password@`` is
    refused without being echoed (credentials go in the document's ``registries``)."""
    if "@" in host:
        raise InvalidReference("invalid registry host: no user:password@ in a reference (credentials go elsewhere)")
    if not _HOST_RE.match(host):
        raise InvalidReference(f"invalid registry host {host[:120]!r}")
    return host


def _looks_like_host(segment: str) -> bool:
    """A lone segment a user meant as a registry: has a dot (a domain or an IP), or is localhost."""
    return "." in segment or segment.lower() == "localhost" or segment.startswith("[")


def endpoint_for_registry(registry: str, *, tls_verify: bool = True) -> Endpoint:
    """The endpoint for a registry named in a reference (HTTPS, HTTP fallback as docker does)."""
    host = DOCKER_HUB_API if registry == DOCKER_HUB else registry
    return Endpoint("https", host, "", fallback_http=is_loopback(host) or not tls_verify)


def parse_endpoint(url: str) -> Endpoint:
    """The seed's ``endpoint``: ``http(s)://host[:port][/prefix]/v2`` (``/v2`` optional)."""
    shown = without_userinfo(url)  # what a message may echo: no user:password@, even in a URL urlsplit refuses
    try:
        parts = urlsplit(url.strip())
    except ValueError as exc:
        raise InvalidReference(f"invalid endpoint URL {shown!r}") from exc
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidReference(f"invalid endpoint URL {shown!r}: expected http(s)://host[:port]/v2")
    if parts.username or parts.password:
        raise InvalidReference("invalid endpoint URL: credentials belong in 'auth', not in the URL")
    if parts.query or parts.fragment:
        raise InvalidReference(f"invalid endpoint URL {shown!r}: no query or fragment allowed")
    if not _HOST_RE.match(parts.netloc):
        raise InvalidReference(f"invalid endpoint host {parts.netloc[:120]!r}")
    path = parts.path.rstrip("/")
    if path.endswith("/v2"):
        path = path[: -len("/v2")]
    host = parts.netloc.lower()
    if host in _HUB_ALIASES:
        host = DOCKER_HUB_API
    return Endpoint(parts.scheme, host, path)
