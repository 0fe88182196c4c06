"""KnownBlobs: where a blob was seen, and whether that happened after a given moment (issue 17)."""

from __future__ import annotations

from regcast.transfer.flights import KnownBlobs


def test_seen_since_tells_only_what_was_added_after_the_moment_read() -> None:
    known = KnownBlobs(capacity=2)
    known.add("reg-a", "sha256:1", "team/app")
    before = known.seq
    assert not known.seen_since("reg-a", "sha256:1", before)
    known.add("reg-b", "sha256:1", "team/app")
    assert known.seen_since("reg-b", "sha256:1", before)
    assert not known.seen_since("reg-a", "sha256:1", before)
    assert known.get("reg-b", "sha256:1") == "team/app"
    known.add("reg-a", "sha256:2", "other")  # beyond capacity: the oldest entry goes
    assert known.get("reg-a", "sha256:1") is None
    assert not known.seen_since("reg-a", "sha256:1", 0)
