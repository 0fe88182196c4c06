"""Which tags a mirror selects, and where they go: pure functions, no I/O.

``mirror_selects`` answers "does repository R, tag T at registry H belong to mirror M?" without
touching a registry, so push events can use it as well as schedules.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cmp_to_key

import nodesemver

from regcast._exceptions import InvalidReference
from regcast.layouts.reference import parse_layout_reference
from regcast.mirrors.document import Mirror, MirrorDocument, TagRules
from regcast.registry.redact import without_userinfo
from regcast.registry.reference import DOCKER_HUB, parse_reference, validate_host, validate_repository

LAYOUT_KINDS = ("oci:", "oci-archive:")


def is_layout(entry: str) -> bool:
    """A target written ``oci:DIR`` or ``oci-archive:FILE.tar`` (CONTRACT section 5), not a registry."""
    return entry.startswith(LAYOUT_KINDS)


@dataclass(frozen=True)
class Repo:
    """One repository at one registry (``host[:port]``), as a mirror names it; or, for a layout target,
    the layout (``oci-archive:/srv/app.tar``) with the repository whose tags it holds."""

    registry: str
    repository: str

    @property
    def is_layout(self) -> bool:
        return is_layout(self.registry)

    def __str__(self) -> str:
        return self.registry if self.is_layout else f"{self.registry}/{self.repository}"


def semver_of(tag: str) -> str | None:
    """The tag as a semver version (``v`` prefix allowed), or None when it is not one."""
    version = nodesemver.valid(tag, loose=True)
    return str(version) if version is not None else None


def _newest_first(a: str, b: str) -> int:
    return int(nodesemver.compare(b, a, loose=True))


# The tags referrers live under (the referrers tag schema's ``<alg>-<hex>``, cosign's ``.sig|.att|.sbom``):
# not images of their own; they travel with the image they refer to, or, with ``referrers: false``, stay.
REFERRER_TAG = re.compile(r"^(sha256|sha512)-[0-9a-f]{64}(\.(sig|att|sbom))?\Z")


def is_referrer_tag(tag: str) -> bool:
    return REFERRER_TAG.match(tag) is not None


@dataclass(frozen=True)
class TagSelector:
    """A mirror's ``tags`` rules, compiled once. ``referrers`` off: referrer tags are never picked from
    the repository's tags (without ``tags`` rules every tag is, and they would carry what was to stay)."""

    listed: tuple[str, ...] = ()
    allow: tuple[re.Pattern[str], ...] = ()
    deny: tuple[re.Pattern[str], ...] = ()
    semver: str | None = None
    latest: int | None = None
    referrers: bool = True

    @classmethod
    def from_rules(cls, rules: TagRules | None, referrers: bool = True) -> TagSelector:
        if rules is None:
            return cls(referrers=referrers)
        return cls(
            tuple(rules.list),
            tuple(re.compile(p) for p in rules.allow),
            tuple(re.compile(p) for p in rules.deny),
            rules.semver,
            rules.latest,
            referrers,
        )

    @property
    def listed_only(self) -> bool:
        """Only exact tags: no need to list the repository's tags."""
        return bool(self.listed) and not (self.allow or self.deny or self.semver or self.latest)

    def passes(self, tag: str) -> bool:
        """Every filter but ``latest`` (which depends on the other tags)."""
        if not self.referrers and is_referrer_tag(tag):
            return False
        if self.allow and not any(p.search(tag) for p in self.allow):
            return False
        if any(p.search(tag) for p in self.deny):
            return False
        if self.semver is not None or self.latest is not None:
            version = semver_of(tag)
            if version is None:
                return False
            if self.semver is not None and not nodesemver.satisfies(version, self.semver, loose=True):
                return False
        return True

    def select(self, tags: Iterable[str]) -> list[str]:
        """The selected tags, sorted: ``list`` always, then the filtered ones (newest N with ``latest``)."""
        if self.listed_only:
            return sorted(set(self.listed))
        available = sorted(set(tags))
        kept = [t for t in available if self.passes(t)]
        if self.latest is not None:
            kept = sorted(kept, key=cmp_to_key(_newest_first))[: self.latest]
        return sorted(set(kept) | set(self.listed))

    def may_select(self, tag: str, tags: Iterable[str] | None = None) -> bool:
        """Is ``tag`` selected? With ``latest``, ``tags`` (the repository's) decide; without them, it may be."""
        if tag in self.listed:
            return True
        if self.listed_only:  # ``list`` alone selects exactly those: no filter lets any other tag in
            return False
        if not self.passes(tag):
            return False
        if self.latest is None or tags is None:
            return True
        return tag in self.select([*tags, tag])


def split_location(text: str) -> Repo:
    """``host[:port][/path]`` (a target prefix) into registry and path (which may be empty);
    a layout (``oci:DIR``, ``oci-archive:FILE.tar``, no tag: each tag is written under its own name)."""
    if is_layout(text.strip()):
        ref = parse_layout_reference(text.strip())
        if ref.tag is not None or ref.digest is not None:
            raise InvalidReference(f"{text!r}: a mirror's layout target takes no tag (each tag keeps its own)")
        return Repo(ref.where, "")
    if "://" in text:
        raise InvalidReference(f"{without_userinfo(text)!r}: expected host[:port][/path], without a scheme")
    host, _, path = text.strip().strip("/").partition("/")
    if not host or not ("." in host or ":" in host or host == "localhost" or host.startswith("[")):
        shown = without_userinfo(text)
        raise InvalidReference(f"{shown!r}: expected host[:port][/path] (the host must have a dot or a port)")
    validate_host(host)  # ``user:password@host``: refused, not taken for a registry named so (and shown)
    if path:
        validate_repository(path)
    return Repo(host.lower(), path)


def source_of(mirror: Mirror) -> Repo:
    if is_layout(mirror.source.strip()):
        raise InvalidReference(
            f"{mirror.source!r}: a mirror's source is a registry repository; an image layout is a target "
            "only (regcast copy oci-archive:FILE.tar:TAG host/repo imports one of its images)"
        )
    ref = parse_reference(mirror.source, default_tag=None)
    if ref.tag or ref.digest:
        raise InvalidReference(f"{mirror.source!r}: a source is a repository, without a tag or digest")
    return Repo(ref.registry, ref.repository)


def expand_targets(doc: MirrorDocument, entries: Iterable[str], seen: tuple[str, ...] = ()) -> list[str]:
    """Target entries with every ``@group`` replaced by its members (groups may name groups)."""
    out: list[str] = []
    for entry in entries:
        if entry.startswith("@"):
            group = entry[1:]
            if group in seen:
                raise InvalidReference(f"target group cycle: {' -> '.join([*seen, group])}")
            if group not in doc.target_groups:
                raise InvalidReference(f"unknown target group {entry!r}")
            out += expand_targets(doc, doc.target_groups[group], (*seen, group))
        else:
            out.append(entry)
    return list(dict.fromkeys(out))


def targets_of(doc: MirrorDocument, mirror: Mirror) -> list[Repo]:
    """Every target repository: prefix + the source's path, or + ``repository`` when renamed."""
    path = mirror.repository or source_of(mirror).repository
    repos = []
    for entry in expand_targets(doc, mirror.targets):
        where = split_location(entry)
        if where.is_layout:
            repos.append(Repo(where.registry, path))
            continue
        repos.append(Repo(where.registry, f"{where.repository}/{path}" if where.repository else path))
    return list(dict.fromkeys(repos))


def _same_registry(a: str, b: str) -> bool:
    hub = {DOCKER_HUB, "index.docker.io", "registry-1.docker.io"}
    return a.lower() == b.lower() or (a.lower() in hub and b.lower() in hub)


def mirror_selects(
    doc: MirrorDocument, mirror: Mirror, registry: str, repository: str, tag: str, tags: Iterable[str] | None = None
) -> bool:
    """Does ``registry/repository:tag`` belong to ``mirror``? Pure: no registry is asked."""
    src = source_of(mirror)
    if not _same_registry(src.registry, registry) or src.repository != repository:
        return False
    return TagSelector.from_rules(mirror.tags, mirror.referrers).may_select(tag, tags)


def is_immutable(mirror: Mirror, tag: str) -> bool:
    return any(re.search(p, tag) for p in mirror.immutable)


__all__ = [
    "Repo",
    "TagSelector",
    "expand_targets",
    "is_immutable",
    "is_layout",
    "is_referrer_tag",
    "mirror_selects",
    "semver_of",
    "source_of",
    "split_location",
    "targets_of",
]
