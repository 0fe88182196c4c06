"""Issue 19: a slow target is detached from the shared stream; the fast ones do not wait for it.

The slow target sits behind a TCP proxy that lets uploads through at a few MiB/s. Assertions are
about state and order (who was done while whom was still copying) and counts at the source
proxy, never about seconds.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from regcast.registry.client import ClientOptions, RegistryClient
from regcast.registry.reference import parse_endpoint
from regcast.transfer.engine import CopyEngine, CopyResult, Target, TransferOptions
from regcast.transfer.progress import TargetState, TargetStatus
from regcast.transfer.remote import RegistryRepository
from tests.support import images
from tests.support.cli import regcast
from tests.support.clients import FAST_RETRY, target
from tests.support.faults import FaultProxy, proxy, via
from tests.support.proxy import TcpProxy
from tests.support.registry import RegistryServer
from tests.support.spool import DiskFullBudget
from tests.support.verify import assert_same_image

MiB = 1024 * 1024
OPTIONS = TransferOptions(queue_depth=2, detach_after=0.3)


class Watch:
    """What the others were doing at the moment each target had all its blobs / ended."""

    def __init__(self, blobs: int) -> None:
        self.blobs = blobs
        self.statuses: dict[str, TargetStatus] = {}
        self.all_blobs_in: dict[str, dict[str, int]] = {}  # target -> bytes_done of every target then
        self.ended: list[str] = []
        self.others_when_ended: dict[str, dict[str, TargetState]] = {}

    def changed(self, status: TargetStatus) -> None:
        self.statuses[status.key] = status
        have = status.blobs_uploaded + status.blobs_present + status.blobs_mounted
        if have >= self.blobs and status.key not in self.all_blobs_in:
            self.all_blobs_in[status.key] = {k: s.bytes_done for k, s in self.statuses.items()}
        if status.done and status.key not in self.ended:
            self.ended.append(status.key)
            self.others_when_ended[status.key] = {k: s.state for k, s in self.statuses.items()}


def slow_target(reg: RegistryServer, repo: str, link: TcpProxy) -> Target:
    client = RegistryClient(parse_endpoint(f"http://127.0.0.1:{link.port}/v2"), options=ClientOptions(retry=FAST_RETRY))
    return Target("slow", RegistryRepository(client, repo), "v1")


def run(
    source: RegistryClient, repo: str, targets: list[Target], watch: Watch, options: TransferOptions = OPTIONS
) -> CopyResult:
    async def go() -> CopyResult:
        try:
            return await CopyEngine(options).copy(RegistryRepository(source, repo), "v1", targets, listener=watch)
        finally:
            await source.close()
            for t in targets:
                await t.repo.close()

    return asyncio.run(go())


def blob_reads(p: FaultProxy) -> Counter[str]:
    return Counter(path.split("/blobs/")[1] for method, path, _h in p.seen if method == "GET" and "/blobs/sha" in path)


def test_fast_targets_do_not_wait_for_a_slow_one(
    faults: list[FaultProxy], repo: str, src_reg: RegistryServer, open_reg: RegistryServer, token_reg: RegistryServer
) -> None:
    img = images.image([os.urandom(12 * MiB), os.urandom(10 * MiB + 3)]).push(src_reg.http(), repo, "v1")
    source = proxy(faults, src_reg, "pass")
    link = TcpProxy(src_reg.port, upload_rate=4 * MiB).start()  # the slow target: src_reg again, far away
    fast1 = Target("fast1", target(open_reg, repo).repo, "v1")
    fast2 = Target("fast2", target(token_reg, repo).repo, "v1")
    watch = Watch(len(img.blobs))
    try:
        result = run(via(source), repo, [fast1, fast2, slow_target(src_reg, repo + "-slow", link)], watch)
    finally:
        link.stop()
    assert result.ok, [t.error for t in result.targets]
    total = result.targets[2].bytes_total
    for fast in ("fast1", "fast2"):  # every blob of a fast target was in while the slow one was behind
        assert watch.all_blobs_in[fast]["slow"] < total, [(t.key, t.blobs_detached) for t in result.targets]
    # per-target completion: each fast target was FINISHED (tag pushed) while the slow one still ran
    assert watch.ended[-1] == "slow" and set(watch.ended[:2]) == {"fast1", "fast2"}
    for fast in ("fast1", "fast2"):
        assert watch.others_when_ended[fast]["slow"] is TargetState.RUNNING
    finished = {t.key: t.finished_at for t in result.targets}
    assert finished["fast1"] and finished["fast2"] and finished["slow"]
    assert max(finished["fast1"], finished["fast2"]) <= finished["slow"]
    slow = result.targets[2]
    assert slow.blobs_detached >= 1 and slow.detached_reason and "full" in slow.detached_reason
    assert result.targets[0].blobs_detached == result.targets[1].blobs_detached == 0
    assert all(t.blobs_uploaded == len(img.blobs) for t in result.targets)
    assert all(t.retries == 0 for t in result.targets)  # the slow upload sessions went on, not restarted
    reads = blob_reads(source)
    assert set(reads) >= set(img.blobs) and max(reads.values()) <= 2
    assert reads.total() <= len(img.blobs) + slow.blobs_detached
    for reg, r in ((open_reg, repo), (token_reg, repo), (src_reg, repo + "-slow")):
        assert_same_image(src_reg.http(), repo, "v1", reg.http(), r, "v1")


def test_with_a_spool_the_source_is_read_once_per_blob(
    faults: list[FaultProxy],
    repo: str,
    src_reg: RegistryServer,
    open_reg: RegistryServer,
    token_reg: RegistryServer,
    tmp_path: Path,
) -> None:
    img = images.image([os.urandom(12 * MiB), os.urandom(10 * MiB + 3)]).push(src_reg.http(), repo, "v1")
    source = proxy(faults, src_reg, "pass")
    link = TcpProxy(src_reg.port, upload_rate=4 * MiB).start()
    spool = tmp_path / "spool"
    options = replace(OPTIONS, spool_dir=str(spool), spool_max_bytes=64 * MiB)
    fast1 = Target("fast1", target(open_reg, repo).repo, "v1")
    fast2 = Target("fast2", target(token_reg, repo).repo, "v1")
    try:
        targets = [fast1, fast2, slow_target(src_reg, repo + "-slow", link)]
        result = run(via(source), repo, targets, Watch(len(img.blobs)), options)
    finally:
        link.stop()
    assert result.ok, [t.error for t in result.targets]
    assert result.targets[2].blobs_detached >= 1  # the slow target was fed from the spool
    reads = blob_reads(source)
    assert reads == Counter(dict.fromkeys(img.blobs, 1)), reads  # exactly one source GET per blob
    assert list(spool.iterdir()) == []  # every spool file deleted
    for reg, r in ((open_reg, repo), (token_reg, repo), (src_reg, repo + "-slow")):
        assert_same_image(src_reg.http(), repo, "v1", reg.http(), r, "v1")


def two_layers(src_reg: RegistryServer, repo: str) -> images.Image:
    return images.image([os.urandom(12 * MiB), os.urandom(10 * MiB + 3)]).push(src_reg.http(), repo, "v1")


def copy_to_three(
    engine: CopyEngine,
    source: FaultProxy,
    repo: str,
    registries: tuple[RegistryServer, RegistryServer, RegistryServer],
    spool: bool | None,
) -> CopyResult:
    """fast1, fast2 and a slow target (the source registry again, behind a 4 MiB/s link)."""
    src_reg, open_reg, token_reg = registries
    link = TcpProxy(src_reg.port, upload_rate=4 * MiB).start()
    client = via(source)
    targets = [
        Target("fast1", target(open_reg, repo).repo, "v1"),
        Target("fast2", target(token_reg, repo).repo, "v1"),
        slow_target(src_reg, repo + "-slow", link),
    ]

    async def go() -> CopyResult:
        try:
            return await engine.copy(RegistryRepository(client, repo), "v1", targets, spool=spool)
        finally:
            await client.close()
            for t in targets:
                await t.repo.close()

    try:
        result = asyncio.run(go())
    finally:
        link.stop()
    assert result.ok, [t.error for t in result.targets]
    for reg, r in ((open_reg, repo), (token_reg, repo), (src_reg, repo + "-slow")):
        assert_same_image(src_reg.http(), repo, "v1", reg.http(), r, "v1")
    return result


def test_a_job_that_spools_reads_the_source_once_though_the_process_does_not(
    faults: list[FaultProxy],
    repo: str,
    src_reg: RegistryServer,
    open_reg: RegistryServer,
    token_reg: RegistryServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))  # REGCAST_SPOOL_DIR unset: the system temp dir
    img = two_layers(src_reg, repo)
    source = proxy(faults, src_reg, "pass")
    engine = CopyEngine(OPTIONS)  # no spool_dir: off by default...
    assert not engine.spool_by_default
    result = copy_to_three(engine, source, repo, (src_reg, open_reg, token_reg), spool=True)  # ...on for this job
    slow = result.targets[2]
    assert slow.blobs_detached >= 1 and slow.detached_reason
    assert slow.detached_reason.endswith("; finished from the spool"), slow.detached_reason
    assert slow.detached_reason.count("finished from") == 1, slow.detached_reason  # blobs detached at once
    assert blob_reads(source) == Counter(dict.fromkeys(img.blobs, 1))  # exactly one source GET per blob
    assert engine.spool.directory == temp
    assert list(temp.iterdir()) == [] and engine.spool.used == 0  # every spool file deleted


def test_a_job_that_does_not_spool_reads_again_though_the_process_would(
    faults: list[FaultProxy],
    repo: str,
    src_reg: RegistryServer,
    open_reg: RegistryServer,
    token_reg: RegistryServer,
    tmp_path: Path,
) -> None:
    img = two_layers(src_reg, repo)
    source = proxy(faults, src_reg, "pass")
    engine = CopyEngine(replace(OPTIONS, spool_dir=str(tmp_path / "spool")))  # on by default...
    assert engine.spool_by_default
    result = copy_to_three(engine, source, repo, (src_reg, open_reg, token_reg), spool=False)  # ...off for this job
    slow = result.targets[2]
    assert slow.blobs_detached >= 1 and slow.detached_reason
    assert slow.detached_reason.endswith("; finished from a second source read"), slow.detached_reason
    assert slow.detached_reason.count("finished from") == 1, slow.detached_reason  # blobs detached at once
    reads = blob_reads(source)
    assert set(reads) == set(img.blobs) and max(reads.values()) == 2  # the detached blob(s) read twice...
    assert reads.total() == len(img.blobs) + slow.blobs_detached  # ...and only those
    assert not (tmp_path / "spool").exists()  # no spool file was ever made


def test_a_full_disk_and_a_blob_beyond_the_cap_fall_back_to_a_second_read(
    faults: list[FaultProxy],
    repo: str,
    src_reg: RegistryServer,
    open_reg: RegistryServer,
    token_reg: RegistryServer,
    tmp_path: Path,
) -> None:
    img = two_layers(src_reg, repo)
    source = proxy(faults, src_reg, "pass")
    spool = tmp_path / "spool"
    engine = CopyEngine(replace(OPTIONS, spool_dir=str(spool)))
    # 11 MiB of budget: the 12 MiB layer never fits; the 10 MiB one does, but the disk is full after 3 MiB
    engine.spool = disk = DiskFullBudget(spool, 11 * MiB, room=3 * MiB)
    result = copy_to_three(engine, source, repo, (src_reg, open_reg, token_reg), spool=None)
    slow = result.targets[2]
    assert disk.failed_writes == 1  # the 10 MiB layer's file, once (not written to again)
    assert slow.blobs_detached >= 1 and slow.detached_reason
    assert slow.detached_reason.endswith("; finished from a second source read"), slow.detached_reason
    assert slow.detached_reason.count("finished from") == 1, slow.detached_reason  # blobs detached at once
    reads = blob_reads(source)
    assert set(reads) == set(img.blobs) and max(reads.values()) == 2
    assert reads.total() == len(img.blobs) + slow.blobs_detached  # every detached blob read once more
    assert list(spool.iterdir()) == [] and disk.used == 0  # nothing left on disk, all room given back
    for t in result.targets:  # the disk's trouble is a log line, not the status
        assert t.error is None and t.retries == 0
        assert "Errno" not in (t.detached_reason or "") and "Traceback" not in (t.detached_reason or "")


def test_a_mirror_that_spools_reads_the_source_once(
    faults: list[FaultProxy], repo: str, src_reg: RegistryServer, open_reg: RegistryServer, tmp_path: Path
) -> None:
    img = two_layers(src_reg, repo)
    source = proxy(faults, src_reg, "pass")
    link = TcpProxy(src_reg.port, upload_rate=4 * MiB).start()  # the slow target: src_reg again, far away
    doc = tmp_path / "mirrors.yaml"
    doc.write_text(
        f"""\
version: 1
mirrors:
  - name: app
    source: 127.0.0.1:{source.port}/{repo}
    targets: [{open_reg.host}/fast, 127.0.0.1:{link.port}/slow]
    tags: {{list: [v1]}}
    referrers: false
    spool: true
"""
    )
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {"REGCAST_DETACH_AFTER": "0.3", "REGCAST_QUEUE_DEPTH": "2", "TMPDIR": str(temp)}
    try:
        r = regcast("-v", "sync", "--json", str(doc), env={**env, "REGCAST_SPOOL_DIR": ""})
    finally:
        link.stop()
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert "finishes blob" in r.stderr and "from the spool" in r.stderr  # the slow one was detached, fed from disk
    assert "from a second source read" not in r.stderr
    assert blob_reads(source) == Counter(dict.fromkeys(img.blobs, 1))
    assert list(temp.iterdir()) == []
    assert_same_image(src_reg.http(), repo, "v1", open_reg.http(), f"fast/{repo}", "v1")
    assert_same_image(src_reg.http(), repo, "v1", src_reg.http(), f"slow/{repo}", "v1")


def test_copy_spool_flags(
    faults: list[FaultProxy], repo: str, src_reg: RegistryServer, open_reg: RegistryServer, tmp_path: Path
) -> None:
    """``regcast copy --spool --spool-dir DIR``: one source read per blob; ``--no-spool`` beats the setting."""
    img = two_layers(src_reg, repo)
    spool = tmp_path / "spool"
    env = {"REGCAST_DETACH_AFTER": "0.3", "REGCAST_QUEUE_DEPTH": "2"}
    for flags, where, reads_at_most in (
        (["--spool", "--spool-dir", str(spool)], "from the spool", 1),
        (["--no-spool"], "from a second source read", 2),
    ):
        source = proxy(faults, src_reg, "pass")
        link = TcpProxy(src_reg.port, upload_rate=4 * MiB).start()
        slow = f"127.0.0.1:{link.port}/{repo}-slow{reads_at_most}"
        try:
            r = regcast(
                "-v",
                "copy",
                *flags,
                f"127.0.0.1:{source.port}/{repo}:v1",
                f"{open_reg.host}/{repo}-fast{reads_at_most}:v1",  # new each round: nothing there yet
                slow,
                env={**env, "REGCAST_SPOOL_DIR": str(tmp_path / "setting")},
            )
        finally:
            link.stop()
        assert r.returncode == 0, r.stderr
        assert "finishes blob" in r.stderr and where in r.stderr, r.stderr
        reads = blob_reads(source)
        assert set(reads) == set(img.blobs) and max(reads.values()) == reads_at_most, reads
        assert_same_image(src_reg.http(), repo, "v1", src_reg.http(), f"{repo}-slow{reads_at_most}", "v1")
    assert list(spool.iterdir()) == []  # --spool-dir used, and emptied
    assert not (tmp_path / "setting").exists()  # REGCAST_SPOOL_DIR lost to --spool-dir, then to --no-spool
