"""A target's tag and manifests: checked before any blob, pushed once its blobs are all in, the tag last.

The tag check decides skip (the seed's rule), done, or copy; the push sends child manifests by
digest, then referrers, then the root at the tag, so a target never shows a tag whose content is
incomplete.
"""

from __future__ import annotations

import asyncio
import logging

from regcast._exceptions import (
    AuthenticationFailed,
    InvalidReference,
    RegcastError,
    RegistryError,
    RegistryResponseError,
)
from regcast.registry.manifest import Descriptor, Manifest
from regcast.transfer.plan import SourceGraph
from regcast.transfer.progress import TargetState
from regcast.transfer.referrers import ReferrerSet, access, push_referrers, stored_as_sent
from regcast.transfer.runstate import RunState
from regcast.transfer.target import Target

log = logging.getLogger("regcast.transfer")
BLOB_UNKNOWN = ("MANIFEST_BLOB_UNKNOWN", "BLOB_UNKNOWN")


def _foreign_refused(exc: RegistryResponseError, graph: SourceGraph) -> None:
    """A manifest refused for a blob that is one of its foreign layers (never pushed: they carry ``urls``): the
    registry takes no foreign layer URLs (distribution: ``validation.manifests.urls.allow`` unset, or not
    matching); said so, and not sent again."""
    named = next((d.digest for d in graph.foreign if d.digest in str(exc)), None)
    if named is not None:
        raise RegistryError(
            f"{exc}: {named} is a foreign layer (urls), never pushed; this registry refuses its URL "
            "(distribution: validation.manifests.urls.allow)",
            registry=exc.registry,
        ) from None


class ManifestPush(RunState):
    """The tag and manifests part of a copy."""

    def _root_digest_ref(self, t: Target, root: Manifest) -> bool:
        """Is ``t`` named by a digest that is not the root's, though it may take the root by the root's own?

        A DST without tag keeps the source's ref; read by digest under a platform filter, that digest names
        the source's index while the root copied is another manifest (its platform's, or a new index): it
        goes by its own digest (``put_manifest`` by a digest stores at the manifest's). Any other digest
        than the root's cannot be met: the target fails before any upload (a registry refuses the manifest
        only at the end, ``DIGEST_INVALID``, a layout would list the root under another digest)."""
        if ":" not in t.ref or t.ref == root.digest:
            return False
        if t.ref != self.source_ref:
            raise InvalidReference(f"the image copied is {root.digest}, not the {t.ref} this target names")
        return True

    async def _check_tag(self, t: Target, graph: SourceGraph) -> None:
        root = graph.root
        try:
            if self._root_digest_ref(t, root):
                existing = await t.repo.head_manifest(root.digest)
            else:  # HEADed (or its repository's tags listed) when the copy started
                existing = await self.target_head(t)
            # a repository that holds no tag yet spares every blob HEAD (first attempt only: a later one may
            # find the blobs of an earlier attempt that never got to its tag); not asked when the tag is there
            if existing is None and t.status.attempts <= 1 and t not in self.listed and await t.repo.holds_no_tags():
                self.fresh.add(t)
        except AuthenticationFailed as exc:
            if not t.overwrite and ":" not in t.ref:  # what the tag holds decides the skip: blind, it could be replaced
                self._fail(t, RegistryError(f"{exc}; cannot tell whether {t.ref} exists and overwrite is off"))
                return
            # push-only credentials may not read: the push itself will tell if they cannot write either
            log.info("target %s: cannot check %s (%s); pushing", t.key, t.ref, exc)
            existing = None
        except RegcastError as exc:
            self._fail(t, exc)
            return
        if existing == root.digest and graph.referrers and graph.referrers.referrers and access(t.repo):
            # the image is there; its referrers may not be (the tag is not touched either way)
            t.status.bytes_done = graph.total_bytes
            self.image_held.add(t)
        elif existing is not None and not t.overwrite and not (existing == root.digest and t.status.tag_pushed):
            self._skip(t, up_to_date=existing == root.digest)  # the seed's rule: the tag exists, leave it alone
        elif existing == root.digest:
            t.status.notes.append("already up to date")
            t.status.bytes_done = t.status.bytes_total
            self._set(t, TargetState.FINISHED)
        else:  # the push goes ahead: the tag this target will hold is this job's (stored with the status)
            t.status.tag_pushed = True

    def _push_soon(self, t: Target) -> None:
        if t not in self._pushes and self._graph is not None:
            self._pushes[t] = asyncio.create_task(self._push_manifests(t, self._graph))

    async def _push_manifests(self, t: Target, graph: SourceGraph) -> None:
        found = graph.referrers if graph.referrers and graph.referrers.referrers else None
        if found and access(t.repo) is None:
            t.status.referrers_left_out.append(f"{len(found.referrers)} referrer(s) not copied: {t.key} keeps none")
            found = None
        try:
            try:
                await self._push_all(t, graph, found)
            except RegistryResponseError as exc:
                if exc.code not in BLOB_UNKNOWN:
                    raise
                _foreign_refused(exc, graph)
                # a blob trusted without a HEAD (known_blob_seconds) is gone after all: check every one, once
                log.warning("target %s: %s; checking its blobs again", t.key, exc)
                await self._check_blobs_again(t, [*graph.blobs, *(found.blobs if found else ())])
                await self._push_all(t, graph, found)
            await t.repo.commit()
        except RegcastError as exc:
            self._fail(t, exc)
            return
        if t in self.image_held and not t.overwrite and not t.status.tag_pushed:
            self._skip(t, up_to_date=True)  # as the seed's rule says, with the referrers brought
        else:
            if t in self.image_held:
                t.status.notes.append("already up to date")
            self._set(t, TargetState.FINISHED)

    async def _push_all(self, t: Target, graph: SourceGraph, found: ReferrerSet | None) -> None:
        if t not in self.image_held:
            for m in graph.manifests:
                await self._put_manifest(t, m, m.digest)
        if found:
            # referrers after what they refer to, before the tag moves
            if t not in self.image_held and ":" not in t.ref:
                await self._put_manifest(t, graph.root, graph.root.digest)
            held = t not in self.fresh  # a repository without tags holds no referrer worth a HEAD
            t.status.referrers = await push_referrers(t.repo, found, self.engine.referrer_locks, held=held)
            self.listener.changed(t.status)
        if t not in self.image_held:
            await self._put_manifest(t, graph.root, t.ref)

    async def _check_blobs_again(self, t: Target, blobs: list[Descriptor]) -> None:
        raise NotImplementedError  # BlobCopy's

    async def _put_manifest(self, t: Target, m: Manifest, ref: str) -> None:
        async def put() -> None:
            announced = await t.repo.put_manifest(ref, m.raw, m.media_type, m.digest)
            await stored_as_sent(t.repo, m, ref, announced, "manifest")

        if t.repo.manifests_shared:  # the same PUT under way for another copy: its success is this one's
            await self.engine.manifest_flights.push((t.location, t.repo.path, ref, m.digest), put)
        else:
            await put()
        t.status.manifests_pushed += 1
        self.listener.changed(t.status)
