"""Push notifications of registries, read into one shape: pure functions, no I/O.

Each registry announces pushes in its own envelope; what regcast needs from any of them is the
same few facts (what happened, to which repository, which tag and digest, when), so every
format is read into ``PushEvent`` here and nothing past this module knows the formats:

- CNCF distribution ``notifications`` (``application/vnd.docker.distribution.events.v1+json``):
  ``{"events": [{"action", "timestamp", "target": {"mediaType", "digest", "repository", "tag"}}]}``,
  one event per manifest and per blob (ACR's ``ImagePushed`` data has the same ``target`` shape);
- Harbor webhooks (``PUSH_ARTIFACT`` / ``DELETE_ARTIFACT``, ``event_data.resources``), also
  inside a CloudEvent (``harbor.artifact.pushed``);
- Docker Hub webhooks (``push_data.tag`` + ``repository.repo_name``; no digest);
- GitHub ``package`` / ``registry_package`` events for GHCR container packages;
- CloudEvents, structured (``application/cloudevents+json``, batches too) or binary (``ce-*``
  headers), whose ``data`` holds one of the shapes above or flat ``repository``/``tag``/``digest``.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from regcast._exceptions import InvalidInput
from regcast.registry.mediatypes import DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED, MANIFESTS

MAX_EVENTS = 1000  # one envelope; distribution batches a few, never thousands
_MANIFEST_TYPES = MANIFESTS | {DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED}


class Action(enum.StrEnum):
    PUSH = "push"
    DELETE = "delete"
    OTHER = "other"  # pulls, mounts, scans, anything regcast does not act on


@dataclass(frozen=True)
class PushEvent:
    """One thing a registry says happened to one repository."""

    action: Action
    repository: str
    tag: str | None = None
    digest: str | None = None
    media_type: str | None = None
    is_manifest: bool = True
    at: dt.datetime | None = None

    @property
    def actionable(self) -> bool:
        """A tag pushed or deleted (blobs, pulls and untagged child manifests change no tag)."""
        if self.action is Action.OTHER or not self.is_manifest:
            return False
        return self.tag is not None or (self.action is Action.DELETE and self.digest is not None)

    def why_ignored(self) -> str:
        if self.action is Action.OTHER:
            return "not a push or delete"
        if not self.is_manifest:
            return "a blob, not a manifest"
        return "no tag"


class EnvelopeError(InvalidInput):
    """A body that is not any push notification format regcast reads."""


# -- small readers --------------------------------------------------------------------------------


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _time(value: Any) -> dt.datetime | None:
    """RFC 3339 (nanoseconds allowed) or a Unix timestamp, as UTC."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return dt.datetime.fromtimestamp(float(value), dt.UTC)
        except (OverflowError, OSError, ValueError):
            return None
    text = _str(value)
    if text is None:
        return None
    text = text.replace("Z", "+00:00")
    if "." in text:  # Go writes nanoseconds; Python reads at most microseconds
        head, _, rest = text.partition(".")
        digits = "".join(c for c in rest if c.isdigit())
        zone = rest[len(digits) :]
        text = f"{head}.{digits[:6]}{zone}"
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _action(word: str | None) -> Action:
    w = (word or "").lower()
    if any(k in w for k in ("push", "publish", "upload", "created")):
        return Action.PUSH
    if "delete" in w or "remove" in w:
        return Action.DELETE
    return Action.OTHER


# -- the formats ------------------------------------------------------------------------------------


def _distribution(event: Mapping[str, Any], action: Action | None = None) -> PushEvent | None:
    target = event.get("target")
    if not isinstance(target, Mapping):
        return None
    repo = _str(target.get("repository"))
    if repo is None:
        return None
    media_type = _str(target.get("mediaType"))
    url = _str(target.get("url")) or ""
    is_manifest = media_type in _MANIFEST_TYPES if media_type else "/blobs/" not in url
    if "/manifests/" in url:
        is_manifest = True
    return PushEvent(
        action or _action(_str(event.get("action"))),
        repo,
        _str(target.get("tag")),
        _str(target.get("digest")),
        media_type,
        is_manifest,
        _time(event.get("timestamp")),
    )


def _harbor(data: Mapping[str, Any], kind: str | None, at: Any) -> Iterator[PushEvent]:
    repo_info = data.get("repository")
    resources = data.get("resources")
    if not isinstance(repo_info, Mapping) or not isinstance(resources, list):
        return
    repo = _str(repo_info.get("repo_full_name"))
    if repo is None and _str(repo_info.get("name")):
        ns = _str(repo_info.get("namespace"))
        repo = f"{ns}/{repo_info['name']}" if ns else str(repo_info["name"])
    if repo is None:
        return
    action = _action(kind)
    for res in resources[:MAX_EVENTS]:
        if isinstance(res, Mapping):
            yield PushEvent(action, repo, _str(res.get("tag")), _str(res.get("digest")), at=_time(at))


def _docker_hub(body: Mapping[str, Any]) -> PushEvent | None:
    push, repo_info = body.get("push_data"), body.get("repository")
    if not isinstance(push, Mapping) or not isinstance(repo_info, Mapping):
        return None
    repo = _str(repo_info.get("repo_name"))
    if repo is None:
        return None
    if "/" not in repo:
        repo = f"library/{repo}"
    return PushEvent(Action.PUSH, repo, _str(push.get("tag")), at=_time(push.get("pushed_at")))


def _github(body: Mapping[str, Any]) -> PushEvent | None:
    package = body.get("package") or body.get("registry_package")
    if not isinstance(package, Mapping):
        return None
    if str(package.get("package_type", "")).lower() != "container":
        return PushEvent(Action.OTHER, str(package.get("name", "")))
    name, namespace = _str(package.get("name")), _str(package.get("namespace"))
    owner = package.get("owner")
    if namespace is None and isinstance(owner, Mapping):
        namespace = _str(owner.get("login"))
    if name is None:
        return None
    version = package.get("package_version")
    tag = digest = None
    if isinstance(version, Mapping):
        meta = version.get("container_metadata")
        tag_info = meta.get("tag") if isinstance(meta, Mapping) else None
        if isinstance(tag_info, Mapping):
            tag, digest = _str(tag_info.get("name")), _str(tag_info.get("digest"))
        digest = digest or _str(version.get("version"))
    repo = f"{namespace}/{name}".lower() if namespace else name.lower()
    return PushEvent(_action(_str(body.get("action"))), repo, tag, digest, at=_time(body.get("updated_at")))


def _flat(data: Mapping[str, Any], kind: str | None, at: Any) -> PushEvent | None:
    repo = _str(data.get("repository"))
    if repo is None:
        return None
    return PushEvent(_action(kind), repo, _str(data.get("tag")), _str(data.get("digest")), at=_time(at))


def _cloudevent(ce: Mapping[str, Any]) -> Iterator[PushEvent]:
    kind, data, at = _str(ce.get("type")), ce.get("data"), ce.get("time")
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except ValueError:
            return
    if not isinstance(data, Mapping):
        return
    if "target" in data:
        event = _distribution({**data, "timestamp": data.get("timestamp", at)}, _action(kind))
        if event:
            yield event
    elif "resources" in data:
        yield from _harbor(data, kind, at)
    elif (event := _flat(data, kind, at)) is not None:
        yield event


def parse_envelope(body: bytes, headers: Mapping[str, str]) -> list[PushEvent]:
    """Every event of one delivery; ``EnvelopeError`` when the body is no format regcast reads.

    ``headers`` are lower-cased names (binary CloudEvents carry their attributes there).
    """
    try:
        doc = json.loads(body) if body.strip() else None
    except (ValueError, RecursionError):
        raise EnvelopeError("body is not valid JSON") from None
    if "ce-type" in headers or "ce-specversion" in headers:  # binary CloudEvent: the body is the data
        return list(_cloudevent({"type": headers.get("ce-type"), "time": headers.get("ce-time"), "data": doc}))
    if isinstance(doc, list):  # a CloudEvents batch
        return [e for ce in doc[:MAX_EVENTS] if isinstance(ce, Mapping) for e in _cloudevent(ce)]
    if not isinstance(doc, Mapping):
        raise EnvelopeError("body is not a JSON object")
    if isinstance(doc.get("events"), list):
        found = [_distribution(e) for e in doc["events"][:MAX_EVENTS] if isinstance(e, Mapping)]
        return [e for e in found if e is not None]
    if "specversion" in doc:
        return list(_cloudevent(doc))
    if isinstance(doc.get("event_data"), Mapping):
        return list(_harbor(doc["event_data"], _str(doc.get("type")), doc.get("occur_at")))
    if "push_data" in doc:
        event = _docker_hub(doc)
        return [event] if event else []
    if "package" in doc or "registry_package" in doc:
        event = _github(doc)
        return [event] if event else []
    raise EnvelopeError("not a push notification regcast reads (distribution, Harbor, Docker Hub, GitHub, CloudEvents)")
