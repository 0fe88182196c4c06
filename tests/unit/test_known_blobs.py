"""KnownBlobs: where a blob was seen, and whether that happened after a given moment (issue 17)."""

from __future__ import annotations

import pytest

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


def test_trusted_only_in_the_same_repository_within_the_seconds_and_until_forgotten(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [1000.0]
    monkeypatch.setattr("regcast.transfer.flights.time.monotonic", lambda: now[0])
    known = KnownBlobs()
    known.add("reg-a", "sha256:1", "team/app")
    known.add("reg-a", "sha256:2", "team/app")
    known.add("reg-a", "sha256:3", "other")
    assert known.trusted("reg-a", "sha256:1", "team/app", 30.0)
    assert not known.trusted("reg-a", "sha256:1", "team/web", 30.0)  # another repository: HEADed
    assert not known.trusted("reg-b", "sha256:1", "team/app", 30.0)
    now[0] += 31.0
    assert not known.trusted("reg-a", "sha256:1", "team/app", 30.0)  # too old: HEADed
    assert not known.trusted("reg-a", "sha256:1", "team/app", 0.0)
    now[0] -= 31.0
    known.forget("reg-a", "team/app")  # a manifest PUT answered BLOB_UNKNOWN there
    assert [known.get("reg-a", d) for d in ("sha256:1", "sha256:2", "sha256:3")] == [None, None, "other"]
