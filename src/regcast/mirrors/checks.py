"""Checks across a whole document, after its shape is known good: every problem with its place.

Regexes compile, semver ranges parse strictly, schedules parse, names are unique, groups exist
and do not loop, and no mirror copies into its own source (directly or round a cycle of mirrors).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator

import nodesemver

from regcast._exceptions import InvalidInput
from regcast.mirrors.document import Loc, Mirror, MirrorDocument
from regcast.mirrors.schedule import check_cron, parse_interval
from regcast.mirrors.select import Repo, expand_targets, source_of, split_location, targets_of
from regcast.registry.manifest import Platform
from regcast.registry.reference import canonical_registry, validate_repository, validate_tag

Problem = tuple[Loc, str]

_COMPARATOR = re.compile(
    r"^(?:[<>]=?|=|~|\^)?v?(?:\d+|[xX*])(?:\.(?:\d+|[xX*])){0,2}(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$"
)


def check_semver_range(text: str) -> str:
    """npm-style ranges (``>=1.4 <2``, ``^1.2``, ``1.x || >=3``, ``1.2 - 1.4``); nodesemver alone is too lenient."""
    for alternative in text.split("||"):
        joined = re.sub(r"([<>]=?|=|~|\^)\s+", r"\1", alternative.strip())
        tokens = joined.split()
        if not tokens:
            raise ValueError(f"invalid semver range {text!r}: an empty alternative")
        for i, tok in enumerate(tokens):
            hyphen = tok == "-" and 0 < i < len(tokens) - 1
            if not (hyphen or _COMPARATOR.match(tok)):
                raise ValueError(f"invalid semver range {text!r}: {tok!r} is not a comparator like >=1.4 or ^2")
    try:
        nodesemver.make_range(text, loose=True)
    except ValueError:
        raise ValueError(f"invalid semver range {text!r}") from None
    return text


def _regexes(patterns: list[str], loc: Loc) -> Iterator[Problem]:
    for i, p in enumerate(patterns):
        try:
            re.compile(p)
        except re.error as exc:
            yield (*loc, i), f"invalid regular expression {p!r}: {exc}"


def _check_places(doc: MirrorDocument, m: Mirror, loc: Loc) -> Iterator[Problem]:
    try:
        src = source_of(m)
        if m.repository is not None:
            validate_repository(m.repository)
    except InvalidInput as exc:
        yield (*loc, "source" if m.repository is None else "repository"), str(exc)
        return
    try:
        for entry in expand_targets(doc, m.targets):
            split_location(entry)
        targets = targets_of(doc, m)
    except InvalidInput as exc:
        yield (*loc, "targets"), str(exc)
        return
    if src in targets:
        yield (*loc, "targets"), f"{src} is the source itself: nothing to do"
    for other in doc.mirrors:
        if other is m:
            break
        shared = _layouts(targets) & _layouts_of(doc, other)
        if shared:  # one index.json entry per tag: two mirrors' tags would overwrite each other
            yield (*loc, "targets"), f"layout {sorted(shared)[0]} is already the target of mirror {other.name}"


def _layouts(targets: list[Repo]) -> set[str]:
    return {t.registry for t in targets if t.is_layout}


def _layouts_of(doc: MirrorDocument, m: Mirror) -> set[str]:
    try:
        return _layouts(targets_of(doc, m))
    except InvalidInput:
        return set()  # reported at its own mirror


def _check_tags(m: Mirror, loc: Loc) -> Iterator[Problem]:
    if m.tags is not None:
        for i, tag in enumerate(m.tags.list):  # at load time, not as a failed image of every pass
            try:
                validate_tag(tag)
            except InvalidInput as exc:
                yield (*loc, "tags", "list", i), str(exc)
        yield from _regexes(m.tags.allow, (*loc, "tags", "allow"))
        yield from _regexes(m.tags.deny, (*loc, "tags", "deny"))
        if m.tags.semver is not None:
            try:
                check_semver_range(m.tags.semver)
            except ValueError as exc:
                yield (*loc, "tags", "semver"), str(exc)
    yield from _regexes(m.immutable, (*loc, "immutable"))


def _check_when(m: Mirror, loc: Loc) -> Iterator[Problem]:
    for i, p in enumerate(m.platforms or []):
        try:
            Platform.parse(p)
        except ValueError as exc:
            yield (*loc, "platforms", i), str(exc)
    if m.schedule and m.interval:
        yield (*loc, "interval"), "give schedule or interval, not both"
    try:
        if m.schedule:
            check_cron(m.schedule)
        if m.interval:
            parse_interval(m.interval)
    except ValueError as exc:
        yield (*loc, "schedule" if m.schedule else "interval"), str(exc)


def _check_mirror(doc: MirrorDocument, m: Mirror, loc: Loc) -> Iterator[Problem]:
    yield from _check_places(doc, m, loc)
    yield from _check_tags(m, loc)
    yield from _check_when(m, loc)


def _flow_cycles(doc: MirrorDocument) -> Iterator[Problem]:
    """Mirror A writing B's source while B writes A's: each would copy the other's copies back."""
    edges: dict[Repo, list[tuple[int, Repo]]] = {}
    for i, m in enumerate(doc.mirrors):
        try:
            edges.setdefault(source_of(m), []).extend((i, t) for t in targets_of(doc, m))
        except InvalidInput:
            continue
    reported: set[int] = set()
    for start in edges:
        stack: list[tuple[Repo, list[int]]] = [(start, [])]
        seen: set[Repo] = set()
        while stack:
            node, path = stack.pop()
            for i, nxt in edges.get(node, []):
                if nxt == start and len(path) >= 1 and i not in reported:
                    names = " -> ".join(doc.mirrors[j].name for j in [*path, i])
                    reported.update([*path, i])
                    yield ("mirrors", i, "targets"), f"mirrors copy in a cycle ({names}) back into {start}"
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*path, i]))


def check_document(doc: MirrorDocument) -> list[Problem]:
    problems: list[Problem] = []
    names: set[str] = set()
    for i, m in enumerate(doc.mirrors):
        if m.name in names:
            problems.append((("mirrors", i, "name"), f"duplicate mirror name {m.name!r}"))
        names.add(m.name)
        problems += _check_mirror(doc, m, ("mirrors", i))
    hosts: set[str] = set()
    events = Counter(r.events.name for r in doc.registries if r.events)
    for i, r in enumerate(doc.registries):
        if canonical_registry(r.host) in hosts:
            problems.append((("registries", i, "host"), f"duplicate registry {r.host!r}"))
        hosts.add(canonical_registry(r.host))
        if (r.username is None) != (r.password is None):
            problems.append((("registries", i), "give both username and password, or neither"))
        if r.events and events[r.events.name] > 1:
            problems.append((("registries", i, "events", "name"), f"duplicate events name {r.events.name!r}"))
    for group, entries in doc.target_groups.items():
        if not entries:
            problems.append((("target_groups", group), "an empty group: nothing to do"))
        try:
            expand_targets(doc, [f"@{group}"])
        except InvalidInput as exc:
            problems.append((("target_groups", group), str(exc)))
    problems += _flow_cycles(doc)
    return problems
