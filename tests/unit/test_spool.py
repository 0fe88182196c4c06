"""The on-disk spool of issue 19 without a network: one source read, the cap, tampering, clean-up."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from regcast._exceptions import DigestMismatch
from regcast.config import load_settings
from regcast.transfer.detach import DetachPolicy
from regcast.transfer.engine import CopyEngine
from regcast.transfer.fanout import Channel, broadcast
from regcast.transfer.spool import SpoolBudget
from tests.support.spool import DiskFullBudget
from tests.unit.test_detach import DATA, Harness, chunks, desc


class Counted(Harness):
    """The harness, counting main reads too, with the spool in its policy."""

    def __init__(self, budget: SpoolBudget) -> None:
        super().__init__()
        self.budget = budget
        self.reads = 0
        self.files_seen: list[Path] = []

    def source(self) -> AsyncIterator[bytes]:
        self.reads += 1
        return chunks(self.data)

    def policy(self) -> DetachPolicy:
        def detached(i: int, why: str, at: int) -> None:
            self.detached.append((i, at))
            if self.budget.directory.exists():
                self.files_seen.extend(self.budget.directory.iterdir())

        return DetachPolicy(0.01, self.reread, detached, spool=self.budget)


def run(h: Counted, slow_first: bool = False) -> list[BaseException | None]:
    async def go() -> list[BaseException | None]:
        sinks = [h.sink("slow", h.fast_done), h.sink("a"), h.sink("b")]
        return await broadcast(h.source(), desc(h.data), sinks, depth=3, detach=h.policy())

    return asyncio.run(go())


def test_a_detached_sink_is_fed_from_the_spool_with_one_source_read(tmp_path: Path) -> None:
    budget = SpoolBudget(tmp_path / "spool", 10 * len(DATA), chunk_size=700)
    h = Counted(budget)
    errors = run(h)
    assert errors == [None, None, None]
    assert h.ended == ["a", "b", "slow"]
    assert [i for i, _ in h.detached] == [0]
    assert h.got["slow"] == DATA and h.got["a"] == DATA and h.got["b"] == DATA
    assert h.reads == 1 and h.rereads == []  # the source was read once: the spool fed the laggard
    assert len(h.files_seen) == 1  # a spool file existed while it was needed...
    assert list(budget.directory.iterdir()) == [] and budget.used == 0  # ...and is gone afterwards


def test_a_blob_beyond_the_cap_falls_back_to_a_second_source_read(tmp_path: Path) -> None:
    budget = SpoolBudget(tmp_path / "spool", len(DATA) - 1)
    h = Counted(budget)
    errors = run(h)
    assert errors == [None, None, None]
    assert h.got["slow"] == DATA
    assert h.files_seen == []  # nothing spooled
    assert h.reads == 1 and h.rereads == [h.detached[0][1]]  # the Range re-read from where it stopped


def test_the_cap_counts_the_room_other_blobs_hold(tmp_path: Path) -> None:
    budget = SpoolBudget(tmp_path / "spool", 2 * len(DATA))
    held = budget.open(len(DATA) + 1)  # another blob's spool, still in use
    assert held is not None
    assert budget.open(len(DATA)) is None  # no longer fits
    held.close()
    held.close()  # once only
    assert budget.used == 0 and list((tmp_path / "spool").iterdir()) == []
    again = budget.open(len(DATA))
    assert again is not None
    again.close()


def test_a_tampered_spool_file_is_refused_before_the_last_chunk(tmp_path: Path) -> None:
    budget = SpoolBudget(tmp_path / "spool", 10 * len(DATA), chunk_size=1000)
    h = Counted(budget)
    tampered: list[Path] = []

    async def go() -> list[BaseException | None]:
        async def slow(ch: Channel) -> None:
            await h.fast_done.wait()  # the main read is over: the spool is whole, its reader waits on us
            for path in (tmp_path / "spool").iterdir():
                with path.open("r+b") as f:
                    f.seek(len(DATA) - 10)
                    f.write(b"\x00" * 5)
                tampered.append(path)
            out = bytearray()
            first = await ch.get()
            async for c in ch.body(first, lambda n: None):
                out += c
            h.got["slow"] = bytes(out)

        sinks = [slow, h.sink("a"), h.sink("b")]
        return await broadcast(h.source(), desc(h.data), sinks, depth=3, detach=h.policy())

    errors = asyncio.run(go())
    assert len(tampered) == 1
    assert errors[1:] == [None, None]
    assert isinstance(errors[0], DigestMismatch) and "the spool" in str(errors[0])
    assert "slow" not in h.got  # its last chunk was held back: never the whole blob
    assert h.rereads == [] and list((tmp_path / "spool").iterdir()) == []


def test_a_source_failure_deletes_the_spool(tmp_path: Path) -> None:
    budget = SpoolBudget(tmp_path / "spool", 10 * len(DATA))
    h = Counted(budget)

    async def broken() -> AsyncIterator[bytes]:
        async for c in chunks(DATA[: len(DATA) // 2]):
            yield c
        raise ConnectionError("source went away")

    async def go() -> list[BaseException | None]:
        sinks = [h.sink("x"), h.sink("a"), h.sink("b")]
        return await broadcast(broken(), desc(h.data), sinks, depth=3, detach=h.policy())

    errors = asyncio.run(go())
    assert all(isinstance(e, ConnectionError) for e in errors)
    assert list((tmp_path / "spool").iterdir()) == [] and budget.used == 0


def test_a_full_disk_mid_blob_falls_back_to_a_second_source_read(tmp_path: Path) -> None:
    budget = DiskFullBudget(tmp_path / "spool", 10 * len(DATA), room=len(DATA) // 2)
    h = Counted(budget)
    where: list[tuple[int, str]] = []
    policy = h.policy()
    h.policy = lambda: replace(policy, reading=lambda i, w: where.append((i, w)))  # type: ignore[method-assign]
    errors = run(h)
    assert errors == [None, None, None]
    assert h.got == {"slow": DATA, "a": DATA, "b": DATA}  # byte-identical all the same
    assert budget.failed_writes == 1 and len(budget.opened) == 1  # it failed once, then was not written to
    assert not budget.opened[0].exists() and budget.used == 0  # the half file went at once, its room back
    assert h.reads == 1 and h.rereads == [h.detached[0][1]]  # the ranged second read, from the detach point
    assert where == [(0, "a second source read")]
    assert list(budget.directory.iterdir()) == []


def test_a_write_error_deletes_the_file_at_once(tmp_path: Path) -> None:
    budget = DiskFullBudget(tmp_path / "spool", 100, room=10)
    spool = budget.open(50)
    assert spool is not None and budget.used == 50
    spool.write(b"x" * 10)
    assert spool.path.exists()
    spool.write(b"y" * 10)  # no room: ENOSPC
    assert spool.broken and not spool.complete
    assert not spool.path.exists() and budget.used == 0  # not at the end of the blob: now
    spool.write(b"z")
    spool.close()
    assert budget.used == 0 and budget.failed_writes == 1


def test_the_settings_reach_the_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REGCAST_SPOOL_DIR", raising=False)
    monkeypatch.delenv("REGCAST_SPOOL_MAX_BYTES", raising=False)
    engine = CopyEngine(load_settings().transfer_options())
    assert not engine.spool_by_default  # off by default...
    assert engine.spool.directory == Path(tempfile.gettempdir())  # ...and in the temp dir when a job asks
    assert engine.spool.max_bytes == 1024**3
    monkeypatch.setenv("REGCAST_SPOOL_DIR", str(tmp_path / "spool"))
    monkeypatch.setenv("REGCAST_SPOOL_MAX_BYTES", "12345")
    engine = CopyEngine(load_settings().transfer_options())
    assert engine.spool_by_default
    assert engine.spool.directory == tmp_path / "spool" and engine.spool.max_bytes == 12345
