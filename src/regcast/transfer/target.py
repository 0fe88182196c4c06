"""What one copy is asked to do and what it answers: options, targets, the result (``engine.py`` runs it)."""

from __future__ import annotations

from dataclasses import dataclass, field

from regcast.registry.session import READ_CHUNK
from regcast.transfer.plan import GraphLimits, SourceGraph
from regcast.transfer.progress import TargetState, TargetStatus
from regcast.transfer.repository import Repository

# Why a target was SKIPPED (its tag exists and overwrite is off): the tag holds the source digest, or not.
SKIP_UP_TO_DATE = "up-to-date"
SKIP_TAG_DIFFERS = "tag-differs"


@dataclass(frozen=True)
class TransferOptions:
    blobs_in_flight: int = 4
    # small blobs (up to ``pipeline_below``) at once, beside the large ones: each is a few round trips
    # of little work, so with 4 the registries wait on the chain (GET || POST, then PUT), not on bytes
    small_blobs_in_flight: int = 16
    queue_depth: int = 8
    chunk_size: int = READ_CHUNK  # with queue_depth: a blob's fan-out holds about depth x this, lagging or not
    checks_in_flight: int = 16
    detach_after: float = 1.0  # seconds a target may hold a blob's shared stream back (0: never detach)
    spool_dir: str | None = None  # where spool files go; set: jobs spool unless they say no (issue 19)
    spool_max_bytes: int = 1024**3  # spool files of the process at once; a blob beyond it is read again
    graph_limits: GraphLimits = field(default_factory=GraphLimits)
    progress_timeout: float | None = 120.0  # a target that reads nothing of its upload this long is cut off
    # blobs up to this size: upload sessions opened while the source is read, no HEAD in a repository without tags
    pipeline_below: int = 1024**2
    # seconds a blob this process put or confirmed in a repository is trusted there without a HEAD (0: always
    # HEAD); a manifest PUT answered BLOB_UNKNOWN forgets the repository's and checks its blobs again once
    known_blob_seconds: float = 30.0


@dataclass(eq=False)  # identity: targets are dict keys and set members
class Target:
    """Where one copy goes: a repository and the ref the root is pushed to."""

    key: str
    repo: Repository
    ref: str
    overwrite: bool = False
    status: TargetStatus = field(init=False)

    def __post_init__(self) -> None:
        self.status = TargetStatus(self.key)

    @property
    def location(self) -> str:
        return self.repo.location


@dataclass
class CopyResult:
    source_digest: str
    targets: list[TargetStatus]
    graph: SourceGraph | None = None  # None when no target needed a copy (nothing was planned)

    @property
    def ok(self) -> bool:
        return all(t.state in (TargetState.FINISHED, TargetState.SKIPPED) for t in self.targets)
