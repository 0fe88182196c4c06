"""The upload strategy learner: what each refusal changes, and that it stops changing."""

from __future__ import annotations

import pytest

from regcast._exceptions import RegistryResponseError, RegistryUnreachable
from regcast.registry.strategy import MAX_CHANGES, MIN_CHUNK_CAP, UploadStrategy

MiB = 1024 * 1024


def refused(method: str, status: int) -> RegistryResponseError:
    return RegistryResponseError(f"{method} answered {status}", status=status, method=method)


@pytest.mark.parametrize("status", [405, 413, 501])
def test_a_refused_monolithic_put_switches_to_chunks(status: int) -> None:
    s = UploadStrategy("r")
    assert s.learn(refused("PUT", status)) is True
    assert s.chunked is True
    assert s.chunk_cap == 4 * MiB


def test_a_too_large_patch_halves_the_cap_down_to_the_floor() -> None:
    s = UploadStrategy("r", "chunked", chunk_cap=4 * MiB)
    caps = []
    while s.learn(refused("PATCH", 413)):
        caps.append(s.chunk_cap)
    assert caps == [2 * MiB, MIN_CHUNK_CAP]
    assert s.chunked is True


def test_an_unsupported_patch_goes_back_to_monolithic_unless_the_user_chose_chunks() -> None:
    learnt = UploadStrategy("r")
    learnt.chunked = True
    assert learnt.learn(refused("PATCH", 405)) is True
    assert learnt.chunked is False
    chosen = UploadStrategy("r", "chunked")
    assert chosen.learn(refused("PATCH", 405)) is False
    assert chosen.chunked is True


def test_a_user_chosen_monolithic_strategy_is_kept() -> None:
    s = UploadStrategy("r", "monolithic")
    assert s.learn(refused("PUT", 413)) is False
    assert s.chunked is False


@pytest.mark.parametrize(
    "exc",
    [refused("PUT", 500), refused("PUT", 401), refused("POST", 413), RegistryUnreachable("down"), ValueError("x")],
)
def test_other_failures_teach_nothing(exc: BaseException) -> None:
    s = UploadStrategy("r")
    assert s.learn(exc) is False
    assert s.mode == "monolithic"
    assert s.changes == 0


def test_a_registry_refusing_everything_cannot_flip_it_forever() -> None:
    s = UploadStrategy("r")
    flips = 0
    for _ in range(50):
        if s.learn(refused("PUT", 413) if not s.chunked else refused("PATCH", 501)):
            flips += 1
    assert flips == MAX_CHANGES


def test_chunk_size_honours_the_registry_minimum() -> None:
    s = UploadStrategy("r", "chunked", chunk_cap=MiB)
    assert s.chunk_size(10 * MiB) == MiB
    s.note_min_length("3145728")
    assert s.chunk_size(10 * MiB) == 3 * MiB
    s.note_min_length("not a number")
    assert s.chunk_min == 3 * MiB
    assert UploadStrategy("r", "chunked").chunk_size(5000) == 5000  # no cap: the whole blob in one PATCH
