"""What the clients of one registry identity remember across a service's jobs (issue 17: per-job cost).

Two facts, both owned by ONE pool entry (``pool.py``: endpoint, credentials, client options), so a
job whose credentials differ never sees what another credential read:

- verified manifest bytes by digest (``ManifestCache``): content addressed, so immutable; kept a
  short, bounded time (``seconds``) because the registry is then not asked whether this credential
  may still read them. Tag -> digest stays fresh per job: a GET by tag is still sent, with
  ``If-None-Match: "<digest>"`` when this entry holds the digest it last answered; a ``304`` (the
  tag still holds it) answers from here without a body to read, hash and parse.
- the registry has no referrers API (it answered 404): later jobs go straight to the tag schema for
  ``no_referrers_api_seconds``. A referrer attached later is found all the same: a registry without
  the API keeps referrers in the ``<alg>-<hex>`` tag, read fresh by every job. Only a registry
  upgraded to serve the API within that window is asked through the tag schema until it ends.
  Likewise a repository whose tag list was refused to this credential (``referrers.tag_names``:
  401/403) is not asked for it again in that window; each referrer tag is then asked for on its
  own, as before. Kept per repository: listing is often a permission of its own per repository
  (ECR's ListImages, a robot account's scope), so a refusal in one says nothing about another.
- a tag was there moments ago (``PRESENT_SECONDS``): the API's submit check (an existence check
  before a job is accepted, not the job's tag resolution, which stays a GET of its own) answers
  from here for a burst of submissions of one image. Only "present" is kept; a 404 is asked again.
- a repository holds tags (listed, or a tag pushed through this entry): a later job does not ask
  whether it is empty (``blobs.holds_no_tags``). Wrong only if every tag was deleted meanwhile, and
  then it only costs what "not empty" always costs: the target's tag and blob HEADs.

One process-wide ``ManifestCache`` bounds entries and bytes for every pool entry at once; its keys
hold the owning ``Memo`` itself (never an ``id``, which a later object could reuse).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import TypeVar

from regcast.registry.manifest import Manifest

MANIFEST_SECONDS = 120.0  # how long bytes read under one credential are served without asking the registry
MANIFEST_ENTRIES = 512
MANIFEST_BYTES = 16 * 1024 * 1024  # raw bytes over every pool entry (typical manifests are 1-10 KiB)
NO_REFERRERS_API_SECONDS = 300.0
TAG_HINTS = 1024  # (repository, tag) -> the digest last answered, per Memo: only chooses If-None-Match
TAGGED_REPOSITORIES = 1024  # repositories seen holding a tag, per Memo
_K = TypeVar("_K", bound=Hashable)
PRESENT_SECONDS = 3.0  # a submit check answered "present" stands for the submissions of a burst


class ManifestCache:
    """Verified manifests by (owner, repository, digest): LRU within ``entries`` and ``max_bytes``,
    each entry served at most ``seconds`` after the registry last answered for it."""

    def __init__(
        self,
        seconds: float = MANIFEST_SECONDS,
        entries: int = MANIFEST_ENTRIES,
        max_bytes: int = MANIFEST_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.seconds = seconds
        self.entries = entries
        self.max_bytes = max_bytes
        self.clock = clock
        self.bytes = 0
        self.hits = 0
        self._items: OrderedDict[tuple[object, str, str], tuple[float, Manifest]] = OrderedDict()

    def get(self, owner: object, repository: str, digest: str) -> Manifest | None:
        key = (owner, repository, digest)
        item = self._items.get(key)
        if item is None:
            return None
        if self.clock() - item[0] > self.seconds:
            self._drop(key)
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return item[1]

    def put(self, owner: object, repository: str, manifest: Manifest) -> None:
        """Keep ``manifest`` (its bytes hashed to ``manifest.digest``); the registry answered for it now."""
        if self.seconds <= 0 or len(manifest.raw) > self.max_bytes:
            return
        key = (owner, repository, manifest.digest)
        self._drop(key)
        self._items[key] = (self.clock(), manifest)
        self.bytes += len(manifest.raw)
        while len(self._items) > self.entries or self.bytes > self.max_bytes:
            self._drop(next(iter(self._items)))

    def drop(self, owner: object, repository: str, digest: str) -> None:
        self._drop((owner, repository, digest))

    def _drop(self, key: tuple[object, str, str]) -> None:
        item = self._items.pop(key, None)
        if item is not None:
            self.bytes -= len(item[1].raw)

    def __len__(self) -> int:
        return len(self._items)


class Memo:
    """One pool entry's memory (a client of its own gets one too, without a manifest cache)."""

    def __init__(
        self,
        manifests: ManifestCache | None = None,
        no_referrers_api_seconds: float = NO_REFERRERS_API_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.manifests = manifests
        self.no_referrers_api_seconds = no_referrers_api_seconds
        self.clock = clock
        self._until: dict[str, float] = {}  # a fact about the registry -> until when it is taken as true
        self._tags: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._tagged: OrderedDict[str, float] = OrderedDict()  # repository -> when it was seen holding a tag
        self._present: OrderedDict[tuple[str, str], float] = OrderedDict()  # (repository, ref) -> when seen
        self._unlisted: OrderedDict[str, float] = OrderedDict()  # repository -> when its tag list was refused

    # -- what the registry cannot do ------------------------------------------------------------------
    def referrers_api_absent(self) -> bool:
        return self.clock() < self._until.get("no referrers API", 0.0)

    def note_referrers_api_absent(self) -> None:
        self._until["no referrers API"] = self.clock() + self.no_referrers_api_seconds

    def tag_list_refused(self, repository: str) -> bool:
        seen = self._unlisted.get(repository)
        return seen is not None and self.clock() - seen < self.no_referrers_api_seconds

    def note_tag_list_refused(self, repository: str) -> None:
        _note(self._unlisted, repository, self.clock(), TAGGED_REPOSITORIES)

    def holds_tags(self, repository: str) -> bool:
        seen = self._tagged.get(repository)
        return seen is not None and self.clock() - seen < self.no_referrers_api_seconds

    def note_tags(self, repository: str) -> None:
        _note(self._tagged, repository, self.clock(), TAGGED_REPOSITORIES)

    def recently_present(self, repository: str, ref: str) -> bool:
        seen = self._present.get((repository, ref))
        return seen is not None and self.clock() - seen < PRESENT_SECONDS

    def note_present(self, repository: str, ref: str) -> None:
        _note(self._present, (repository, ref), self.clock(), TAG_HINTS)

    # -- manifests ------------------------------------------------------------------------------------
    def manifest(self, repository: str, digest: str) -> Manifest | None:
        return self.manifests.get(self, repository, digest) if self.manifests is not None else None

    def keep(self, repository: str, manifest: Manifest, tag: str | None = None) -> None:
        if self.manifests is None:
            return
        self.manifests.put(self, repository, manifest)
        if tag is not None:
            self._tags[(repository, tag)] = manifest.digest
            self._tags.move_to_end((repository, tag))
            while len(self._tags) > TAG_HINTS:
                self._tags.popitem(last=False)

    def tagged(self, repository: str, tag: str) -> Manifest | None:
        """The manifest this entry last read at ``tag``, if still kept: a hint for ``If-None-Match`` only."""
        digest = self._tags.get((repository, tag))
        return self.manifest(repository, digest) if digest is not None else None

    def forget(self, repository: str, ref: str) -> None:
        """A manifest or tag deleted through this entry: not served from here again."""
        if self.manifests is None:
            return
        digest = self._tags.pop((repository, ref), None) if ":" not in ref else ref
        if digest is not None:
            self.manifests.drop(self, repository, digest)


def _note(seen: OrderedDict[_K, float], key: _K, now: float, bound: int) -> None:
    """Keep ``key`` as seen ``now``, the oldest dropped beyond ``bound`` entries."""
    seen[key] = now
    seen.move_to_end(key)
    while len(seen) > bound:
        seen.popitem(last=False)
