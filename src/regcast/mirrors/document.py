"""The mirror-set document (CONTRACT section 4): YAML or JSON, validated, ``${VAR}`` filled in.

Loading is three steps, each able to point at a line: YAML is composed into nodes (their marks
give every key and value a line), ``${VAR}`` is substituted in string values (an unset variable
is an error, never an empty password), then pydantic checks the shape (unknown keys refused)
and ``checks.py`` the cross-references. Every problem reads ``line N: path: why``.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from regcast._exceptions import InvalidInput
from regcast.registry.redact import origin_only
from regcast.registry.reference import canonical_registry

Loc = tuple[str | int, ...]
_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$\{([^}]*)\}?")
MAX_DOCUMENT_BYTES = 1024 * 1024
# Values a document may hold once its aliases are followed: ten levels of ten ``*alias`` each (under 1 KiB of
# YAML) expand to 10^10 values, which the line map and the model walked one by one (the API's loop held for hours)
MAX_DOCUMENT_VALUES = 250_000
MAX_PROBLEMS = 10


class DocumentError(InvalidInput):
    """A mirror-set document that cannot be used; ``problems`` each name a line and a field."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        more = f" (and {len(problems) - MAX_PROBLEMS} more)" if len(problems) > MAX_PROBLEMS else ""
        super().__init__("; ".join(problems[:MAX_PROBLEMS]) + more)


def _as_list(v: Any) -> Any:
    """``allow: '^v'`` means ``allow: ['^v']``."""
    return [v] if isinstance(v, str) else v


StrList = Annotated[list[str], BeforeValidator(_as_list)]
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Events(_Strict):
    name: Name
    secret: str = Field(min_length=1, repr=False)


class RegistrySettings(_Strict):
    """Credentials, TLS and limits of one registry ``host[:port]``."""

    host: str = Field(pattern=r"^[A-Za-z0-9\[][A-Za-z0-9.:\[\]-]*$", max_length=255)
    username: str | None = None
    password: str | None = Field(None, repr=False)
    tls_verify: bool = True
    max_concurrency: int | None = Field(None, ge=1, le=1024)
    requests_per_second: float | None = Field(None, gt=0, le=100_000)
    rate_limit_min: int | None = Field(None, ge=0)
    events: Events | None = None


class TagRules(_Strict):
    list: StrList = Field(default_factory=lambda: [])
    allow: StrList = Field(default_factory=lambda: [])
    deny: StrList = Field(default_factory=lambda: [])
    semver: str | None = None
    latest: int | None = Field(None, ge=1, le=100_000)


class Notify(_Strict):
    """Where to POST a run's summary when it ends (``ops/notify.py``): signed with ``secret``."""

    url: str = Field(pattern=r"^https?://[^/\s]+", max_length=4096)
    events: tuple[Literal["finished", "failed"], ...] = ("finished", "failed")
    secret: str | None = Field(None, max_length=4096, repr=False)


class Mirror(_Strict):
    name: Name
    source: str = Field(min_length=1, max_length=512)
    targets: StrList = Field(min_length=1)
    repository: str | None = None
    tags: TagRules | None = None
    platforms: StrList | None = None
    referrers: bool = True
    immutable: StrList = Field(default_factory=lambda: [])
    overwrite: bool = True
    prune: bool = False  # a tag deleted at the source (push events) is deleted at the targets
    spool: bool | None = None  # detached targets finish from an on-disk copy (None: the process's default)
    schedule: str | None = None
    interval: str | None = None
    notify: Notify | None = None


class MirrorDocument(_Strict):
    version: Literal[1]
    registries: list[RegistrySettings] = Field(default_factory=lambda: [])
    target_groups: dict[str, StrList] = Field(default_factory=lambda: {})
    mirrors: list[Mirror] = Field(min_length=1)

    def registry(self, host: str) -> RegistrySettings | None:
        """The settings of ``host``; Docker Hub's under any of its names (``index.docker.io``, as docker's
        config writes it, used to match no ``docker.io/...`` source: its credentials went unused)."""
        for r in self.registries:
            if canonical_registry(r.host) == canonical_registry(host):
                return r
        return None

    def mirror(self, name: str) -> Mirror | None:
        return next((m for m in self.mirrors if m.name == name), None)

    def public(self) -> dict[str, Any]:
        """The document as shown back: every password and event secret replaced by ``***``."""
        data = self.model_dump(exclude_none=True)
        for r in data.get("registries", []):
            if "password" in r:
                r["password"] = "***"
            if "events" in r:
                r["events"]["secret"] = "***"
        for m in data.get("mirrors", []):
            if "notify" in m:  # a hook URL's path, query and user:password@ may each be its secret (chat hooks)
                m["notify"]["url"] = origin_only(m["notify"]["url"])
                if "secret" in m["notify"]:
                    m["notify"]["secret"] = "***"
        return data


# -- line numbers ------------------------------------------------------------------------------------


def _expands_past(node: yaml.Node, limit: int) -> bool:
    """Does ``node`` hold more than ``limit`` values with every alias followed (a node an alias names counted
    each time)? Walked without recursion and given up at the limit: an alias to itself ends there too."""
    stack, seen = [node], 0
    while stack:
        current = stack.pop()
        seen += 1
        if seen > limit:
            return True
        if isinstance(current, yaml.MappingNode):
            for key, value in current.value:
                stack += (key, value)
        elif isinstance(current, yaml.SequenceNode):
            stack.extend(current.value)
    return False


def _lines(node: yaml.Node, loc: Loc, out: dict[Loc, int], twice: list[str]) -> None:
    """Where each key and item is; a key given twice in one mapping into ``twice`` (YAML forbids it, and
    the loader would keep the last silently: a second ``mirrors:`` dropping the first's mirrors)."""
    out.setdefault(loc, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key, value in node.value:
            k = key.value if isinstance(key, yaml.ScalarNode) else str(key.start_mark.line)
            if isinstance(key, yaml.ScalarNode) and k != "<<":
                if k in first:
                    where = f"line {key.start_mark.line + 1}: {format_loc((*loc, k))}"
                    twice.append(f"{where}: duplicate key {k!r} (first at line {first[k]})")
                first.setdefault(k, key.start_mark.line + 1)
            out[(*loc, k)] = key.start_mark.line + 1
            _lines(value, (*loc, k), out, twice)
            out[(*loc, k)] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _lines(item, (*loc, i), out, twice)


class LineMap:
    """Where each key and item of a document is, by its path."""

    def __init__(self, lines: dict[Loc, int] | None = None) -> None:
        self.lines = lines or {}

    def line(self, loc: Loc) -> int | None:
        for end in range(len(loc), -1, -1):
            if loc[:end] in self.lines:
                return self.lines[loc[:end]]
        return None

    def where(self, loc: Loc) -> str:
        path = format_loc(loc)
        n = self.line(loc)
        return f"line {n}: {path}" if n else path


def format_loc(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "document"


# -- ${VAR} ----------------------------------------------------------------------------------------


def _value_of(
    m: re.Match[str], env: Mapping[str, str], reserved: str | None, allowed: tuple[str, ...] = ()
) -> tuple[str, str | None]:
    """One ``${VAR}`` (or ``$$``): its value, or ``""`` and why it has none."""
    if m.group(0) == "$$":
        return "$", None
    name = m.group(1)
    if name is None:
        return "", f"malformed variable {m.group(0)!r} (write ${{NAME}}, or $$ for $)"
    if reserved is not None and name.upper().startswith(reserved.upper()):  # settings are read in any case
        return "", f"{name} is one of regcast's own settings, not readable by a document"
    if allowed and not any(fnmatch.fnmatchcase(name, pattern) for pattern in allowed):
        return "", f"{name} is not readable by a posted document (REGCAST_MIRROR_ENV)"
    if name not in env:
        return "", f"environment variable {name} is not set"
    return env[name], None


def substitute(
    data: Any,
    env: Mapping[str, str],
    lines: LineMap,
    loc: Loc = (),
    reserved: str | None = None,
    allowed: tuple[str, ...] = (),
    filled: dict[Loc, list[str]] | None = None,
) -> tuple[Any, list[str]]:
    """``${VAR}`` filled in every string value; ``$$`` is a literal ``$``. Unset or malformed: a problem;
    so is a name starting with ``reserved`` or, with ``allowed``, one no pattern matches (``load_document``).
    ``filled`` gets the variables read at each place (a problem there never quotes the value)."""
    problems: list[str] = []
    if isinstance(data, dict):
        out: dict[Any, Any] = {}
        for k, v in data.items():
            out[k], p = substitute(v, env, lines, (*loc, str(k)), reserved, allowed, filled)
            problems += p
        return out, problems
    if isinstance(data, list):
        items = []
        for i, v in enumerate(data):
            item, p = substitute(v, env, lines, (*loc, i), reserved, allowed, filled)
            items.append(item)
            problems += p
        return items, problems
    if not isinstance(data, str) or "$" not in data:
        return data, problems

    def fill(m: re.Match[str]) -> str:
        value, problem = _value_of(m, env, reserved, allowed)
        if problem is not None:
            problems.append(f"{lines.where(loc)}: {problem}")
        elif m.group(1) and filled is not None:
            filled.setdefault(loc, []).append(m.group(1))
        return value

    return _VAR.sub(fill, data), problems


# -- loading --------------------------------------------------------------------------------------------


def parse_text(text: str) -> tuple[Any, LineMap]:
    """YAML (JSON is YAML too) into plain data plus where each part was."""
    if len(text.encode()) > MAX_DOCUMENT_BYTES:
        raise DocumentError([f"document: over {MAX_DOCUMENT_BYTES} bytes"])
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is not None and _expands_past(node, MAX_DOCUMENT_VALUES):
            raise DocumentError([f"document: over {MAX_DOCUMENT_VALUES} values once its aliases (*name) are followed"])
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise DocumentError([f"{where}not valid YAML or JSON: {exc.problem or exc}"]) from None
    except yaml.YAMLError as exc:
        raise DocumentError([f"not valid YAML or JSON: {exc}"]) from None
    except RecursionError:  # [[[[... 100k deep: the YAML composer recurses per level
        raise DocumentError(["document: nested too deeply"]) from None
    lines: dict[Loc, int] = {}
    twice: list[str] = []
    if node is not None:
        _lines(node, (), lines, twice)
    if twice:
        raise DocumentError(twice)
    return data, LineMap(lines)


def _pydantic_problems(exc: ValidationError, lines: LineMap, filled: dict[Loc, list[str]]) -> list[str]:
    problems = []
    for err in exc.errors(include_url=False):
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        msg = str(err["msg"])
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        if err["type"] == "extra_forbidden":
            msg = f"unknown key {loc[-1]!r}"
        elif err["type"] == "missing":
            msg = "missing"
        elif err["type"] == "string_type" and isinstance(err.get("input"), (bool, int, float)):
            # YAML 1.1: `1.10` is the number 1.1, `on`/`no` are booleans; the value is not echoed (a password)
            kind = "a boolean" if isinstance(err["input"], bool) else "a number"
            msg = f"expected text, but YAML read {kind} here: put the value in quotes"
        problems.append(f"{lines.where(loc)}: {_unquoted(loc, msg, filled)}")
    return problems


def _unquoted(loc: Loc, msg: str, filled: dict[Loc, list[str]]) -> str:
    """``msg``, unless a variable's value went in at or under ``loc`` (or ``loc`` is under one): then the
    problem without the value, which it may quote (an invalid tag does): whatever a document read from the
    environment is never echoed back to whoever sent it (a document posted to the service)."""
    names = [n for at, ns in filled.items() if (loc and at[: len(loc)] == loc) or loc[: len(at)] == at for n in ns]
    if not names:
        return msg
    shown = ", ".join(f"${{{n}}}" for n in dict.fromkeys(names))
    return f"not valid here (the value read from {shown} is not shown)"


def load_document(
    text: str, env: Mapping[str, str], reserved: str | None = None, allowed: tuple[str, ...] = ()
) -> MirrorDocument:
    """Parse, substitute and validate one document; raises ``DocumentError`` naming every place.

    ``reserved``: a prefix of variables no ``${VAR}`` may read. The service passes ``REGCAST_``: a
    document posted by an API caller would otherwise read the secret key, the API tokens or the
    database URL of the serving process, echoed back in the plan or ``GET /api/mirrors/<name>``.
    ``allowed``: glob patterns of the only variables it may read (``REGCAST_MIRROR_ENV``), so that the
    rest of the service's environment (cloud credentials, say) stays its own too.
    """
    from regcast.mirrors.checks import check_document

    data, lines = parse_text(text)
    if not isinstance(data, dict):
        raise DocumentError(["document: expected a mapping with version, mirrors (and registries, target_groups)"])
    filled: dict[Loc, list[str]] = {}
    data, problems = substitute(data, env, lines, reserved=reserved, allowed=allowed, filled=filled)
    if problems:
        raise DocumentError(problems)
    try:
        doc = MirrorDocument.model_validate(data)
    except ValidationError as exc:
        raise DocumentError(_pydantic_problems(exc, lines, filled)) from None
    problems = [f"{lines.where(loc)}: {_unquoted(loc, msg, filled)}" for loc, msg in check_document(doc)]
    if problems:
        raise DocumentError(problems)
    return doc


__all__ = [
    "DocumentError",
    "Events",
    "LineMap",
    "Mirror",
    "MirrorDocument",
    "RegistrySettings",
    "TagRules",
    "load_document",
]
