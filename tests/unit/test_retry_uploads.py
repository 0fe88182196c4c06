"""The timeout count of a blob's uploads to one target (BlobCopy._try_again), without a network."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from regcast._exceptions import Failure, RegistryUnreachable
from regcast.registry.manifest import Descriptor
from regcast.registry.retry import RetryPolicy
from regcast.transfer.blobcopy import BlobCopy

BLOB = Descriptor(media_type="application/octet-stream", digest="sha256:" + "a" * 64, size=3 << 30)


def stalled() -> RegistryUnreachable:
    """What the fan-out's watchdog reports for a target that stopped reading its upload."""
    return RegistryUnreachable("r: upload made no progress for 60s", registry="r", failure=Failure.TIMEOUT)


def copy_and_target() -> tuple[Any, Any, list[BaseException]]:
    failed: list[BaseException] = []
    repo = SimpleNamespace(
        retry=RetryPolicy(attempts=5, backoff=0.0, jitter=0.0), name="r", learn_from_refusal=lambda e: False
    )
    target = SimpleNamespace(repo=repo, key="r/app:1")
    copy = SimpleNamespace(_fail=lambda t, exc: failed.append(exc), retried=lambda t: None)
    return copy, target, failed


def test_an_upload_that_progressed_before_each_stall_keeps_its_tries() -> None:
    """A large blob to a slow target stalled at 3 GB, was sent again and stalled again: the target failed for
    good after two tries (the timeout rule meant for a registry that never answers); progress now resets it."""
    copy, t, failed = copy_and_target()
    retries: dict[int, RetryPolicy] = {}
    for _ in range(4):  # the fifth failure is the last of the 5 tries
        assert BlobCopy._try_again(copy, t, BLOB, stalled(), retries, True)
    assert not failed
    assert not BlobCopy._try_again(copy, t, BLOB, stalled(), retries, True)
    assert len(failed) == 1


def test_an_upload_that_never_moved_is_given_up_at_the_second_timeout() -> None:
    copy, t, failed = copy_and_target()
    retries: dict[int, RetryPolicy] = {}
    assert BlobCopy._try_again(copy, t, BLOB, stalled(), retries, False)
    assert not BlobCopy._try_again(copy, t, BLOB, stalled(), retries, False)
    assert len(failed) == 1
