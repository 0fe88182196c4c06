"""Response bodies as OpenAPI schemas (documentation only).

Routes render their bodies themselves (``SeedJSON``, the seed's byte layout); these models say
what those bodies hold, so ``/docs`` shows every field, ``in_sync``, ``warnings`` and the
per-target ``reason`` included.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class Accepted(BaseModel):
    """201: the job was queued."""

    id: str = Field(description="the job id (a UUID)")
    msg: Literal["Image sync started"]
    status: Literal["success"]
    warnings: list[str] | None = Field(
        None,
        description="only when a key was not understood, e.g. `unknown field targets.0.overwite` "
        "(REGCAST_STRICT_REQUESTS=true makes it a 400 instead)",
    )


class ErrorBody(BaseModel):
    """Every error: the seed's shape."""

    status: Literal["error"]
    msg: str = Field(description="`Failed to parse data: <field>: <why>`, `Image not found`, ...")


class SourceOut(BaseModel):
    endpoint: str
    image: str
    ref: str


class DetachedOut(BaseModel):
    blobs: int = Field(description="blobs this target finished from its own read (the spool or the source again)")
    reason: str | None = Field(description="why it was detached, and where it finished from")


class TargetOut(BaseModel):
    endpoint: str = Field(description="as the request wrote it")
    image: str
    ref: str
    overwrite: bool
    state: Literal["QUEUED", "RUNNING", "FINISHED", "SKIPPED", "FAILED", "CANCELLED"]
    reason: Literal["up-to-date", "tag-differs"] | None = Field(
        description="why SKIPPED (the tag existed and overwrite was false): it already held the source "
        "digest (`up-to-date`), or another one (`tag-differs`); null otherwise"
    )
    bytes_done: int
    bytes_total: int
    attempts: int
    retries: int
    error: str | None = Field(description="why FAILED: one line naming the registry, never a secret")
    referrers: int = Field(description="signatures, attestations and SBOMs copied to this target")
    referrers_left_out: list[str] = Field(description="referrers not copied, each with why")
    finished_at: str | None = Field(description="this target's own end: a fast target ends before a slow one")
    bytes_per_second: int | None = Field(description="this target's own average rate since the job started running")
    detached: DetachedOut | None = Field(
        description="set when this target lagged and left the shared source stream for some blobs"
    )
    waiting: str | None = Field(
        description="while a registry's rate limit (a 429's Retry-After, the RateLimit-Remaining gate) holds "
        "this target back: which registry, until when (UTC) and why, in one line; null otherwise",
    )


class JobStatus(BaseModel):
    """A job: the seed's five fields first, then regcast's."""

    value: Literal["QUEUED", "RUNNING", "FINISHED", "FAILED", "CANCELLED"]
    started_at: str = Field(description="ISO 8601 with microseconds and +00:00, set when the job was queued")
    finished_endpoints: list[str] = Field(description="targets the image was copied to")
    skipped_clusters: list[str] = Field(description="targets left alone: the tag existed and overwrite was false")
    finished_at: str | None
    in_sync: bool = Field(description="true only when the job finished and every target holds the source digest")
    id: str
    source: SourceOut
    source_digest: str | None
    platforms: list[str] | None
    spool: bool | None = Field(
        None,
        description="as the request asked: detached targets finish from an on-disk copy of the blob (true) "
        "or a second source read (false); null: the service's default (on when REGCAST_SPOOL_DIR is set)",
    )
    attempts: int
    cancel_requested: bool
    error: str | None
    running_at: str | None
    updated_at: str
    targets: list[TargetOut]
    mirror: dict[str, str] | None = Field(None, description="for a mirror run's copy: the mirror's name and run id")


class JobList(BaseModel):
    jobs: list[JobStatus]
    total: int
    limit: int
    offset: int


class Ok(BaseModel):
    status: Literal["ok"]
