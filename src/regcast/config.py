"""Settings: built once from flags and ``REGCAST_*`` environment variables (flags win), then passed down."""

from __future__ import annotations

import datetime as dt
import logging
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from regcast._exceptions import ConfigError
from regcast.registry.client import ClientOptions
from regcast.registry.guards import OutboundPolicy
from regcast.registry.retry import RetryPolicy
from regcast.registry.session import READ_CHUNK
from regcast.transfer.engine import TransferOptions
from regcast.transfer.plan import GraphLimits

log = logging.getLogger("regcast")
SERVICE_LINK = re.compile(r"^(tcp|udp|sctp)://", re.IGNORECASE)


class Settings(BaseSettings):
    """Every knob of regcast. Unknown ``REGCAST_*`` variables are ignored."""

    model_config = SettingsConfigDict(env_prefix="REGCAST_", extra="ignore", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(5001, ge=1, le=65535)
    database_url: str = "sqlite:///regcast.db"
    secret_key: str | None = Field(None, repr=False)
    secret_key_file: str | None = None  # the key in a file (a mounted secret), as REGCAST_API_TOKENS_FILE
    ca_bundle: str | None = None

    # transfer
    blobs_in_flight: int = Field(4, ge=1, le=64)
    connections_per_registry: int = Field(16, ge=1, le=256)
    chunk_size: int = Field(READ_CHUNK, ge=16 * 1024, le=64 * 1024 * 1024)
    queue_depth: int = Field(8, ge=1, le=256)
    detach_after: float = Field(1.0, ge=0)  # lagging this long leaves the shared stream (0: never); decisions.md
    spool_dir: str | None = None  # detached targets read a blob's on-disk copy here, not the source again
    spool_max_bytes: int = Field(1024**3, ge=0)  # spool files at once; a blob that does not fit is re-read
    connect_timeout: float = Field(20.0, gt=0)
    read_timeout: float = Field(120.0, gt=0)
    request_timeout: float = Field(60.0, gt=0)

    # requests: retries of one request (connection errors, 408/429/5xx), Retry-After honoured up to a cap
    request_retries: int = Field(5, ge=1, le=50)
    request_backoff: float = Field(0.5, ge=0)
    request_backoff_max: float = Field(20.0, ge=0)
    request_retry_max_seconds: float = Field(300.0, ge=0)
    retry_after_max: float = Field(120.0, ge=0)

    # uploads: auto learns from refusals; chunk caps per registry host (GHCR refuses PATCH bodies over 4 MiB)
    upload_strategy: Literal["auto", "monolithic", "chunked"] = "auto"
    chunk_cap: int | None = Field(None, ge=1024 * 1024)
    chunk_caps: dict[str, int] = Field(default_factory=lambda: {"ghcr.io": 4 * 1024 * 1024})

    # security
    api_tokens: str = Field("", repr=False)  # comma-separated bearer tokens; turns API auth on
    api_tokens_file: str | None = None  # one token per line
    allow_unauthenticated: bool = False  # listen beyond loopback without API tokens
    allowed_registries: str = ""  # comma-separated glob patterns of host[:port]; empty = any
    allowed_auth_hosts: str = ""  # token servers allowed besides the registries (same form)
    block_private: bool = False  # refuse loopback and private addresses as well (guards.py)
    allowed_origins: str = ""  # browser Origins allowed besides the service's own (comma-separated)
    allowed_hosts: str = ""  # Host header values allowed besides loopback names when without API tokens
    strict_requests: bool = False  # an unknown key in a job request is a 400, not a warning

    # streams: an upload whose target reads nothing this long is cut off (that target alone, retried); a
    # download under min_throughput bytes/s over the same window is cut and resumed
    progress_timeout: float = Field(120.0, gt=0)
    known_blob_seconds: float = Field(30.0, ge=0)  # a blob this process confirmed is trusted without a HEAD
    min_throughput: int = Field(1024, ge=0)

    # one source graph (a hostile source cannot grow memory without bound)
    max_graph_manifest_bytes: int = Field(64 * 1024 * 1024, ge=4 * 1024 * 1024)
    max_graph_children: int = Field(1000, ge=1)
    max_graph_blobs: int = Field(10_000, ge=1)

    # service
    jobs_in_flight: int = Field(4, ge=1, le=256)
    max_targets: int = Field(100, ge=1, le=10_000)
    max_body_bytes: int = Field(1024 * 1024, ge=1024)
    poll_interval: float = Field(1.0, gt=0)
    heartbeat_interval: float = Field(2.0, gt=0)
    stale_after: float = Field(10.0, gt=0)  # a worker silent this long (database clock) is dead
    db_timeout: float = Field(5.0, gt=0)  # bound on every database call (frozen database included)
    shutdown_grace: float = Field(20.0, ge=0)  # how long a stopping worker keeps retrying final writes
    health_port: int = Field(5002, ge=0, le=65535)  # `regcast worker`'s /healthz, /readyz (0: off)
    max_attempts: int = Field(3, ge=1, le=100)
    retry_backoff: float = Field(2.0, ge=0)

    # operations (ops/): metrics, logs, notifications, retention, progress lines
    metrics_public: bool = False  # /metrics without a bearer token (scrapers on a trusted network)
    log_format: Literal["text", "json"] = "text"
    notify_url: str | None = Field(None, repr=False)  # service-wide webhook: every job's end is POSTed here
    notify_secret: str | None = Field(None, repr=False)
    notify_events: str = "finished,failed,cancelled"
    notify_attempts: int = Field(5, ge=1, le=50)
    notify_backoff: float = Field(1.0, ge=0)
    notify_timeout: float = Field(10.0, gt=0)
    job_retention: str = "30d"  # finished jobs older than this are deleted; 0 keeps them forever
    progress_interval: float = Field(10.0, gt=0)  # seconds between progress lines when not on a terminal

    @field_validator("job_retention")
    @classmethod
    def _retention(cls, v: str) -> str:
        parse_duration(v)
        return v

    @field_validator("port", "health_port", mode="before")
    @classmethod
    def _not_a_service_link(cls, v: Any, info: ValidationInfo) -> Any:
        """Kubernetes sets ``REGCAST_PORT=tcp://10.96.0.12:5001`` for a Service named regcast: not ours."""
        if isinstance(v, str) and SERVICE_LINK.match(v.strip()):
            default = cls.model_fields[info.field_name or "port"].default
            log.warning(
                "ignoring REGCAST_%s=%s: a Kubernetes service link, not a port; using %s",
                (info.field_name or "port").upper(),
                v,
                default,
            )
            return default
        return v

    @model_validator(mode="after")
    def _liveness(self) -> Settings:
        if self.stale_after < 2 * self.heartbeat_interval:
            raise ValueError("stale_after must be at least twice heartbeat_interval")
        return self

    def retention(self) -> dt.timedelta | None:
        """REGCAST_JOB_RETENTION as a duration; None means keep forever."""
        seconds = parse_duration(self.job_retention)
        return dt.timedelta(seconds=seconds) if seconds else None

    @field_validator("database_url")
    @classmethod
    def _normalise_db(cls, v: str) -> str:
        if v.startswith("postgres://"):
            v = "postgresql://" + v[len("postgres://") :]
        if v.startswith("postgresql://"):
            v = "postgresql+psycopg://" + v[len("postgresql://") :]
        return v

    def tokens(self) -> tuple[str, ...]:
        """API bearer tokens from REGCAST_API_TOKENS and REGCAST_API_TOKENS_FILE."""
        found = [t.strip() for t in self.api_tokens.split(",") if t.strip()]
        if self.api_tokens_file:
            try:
                lines = Path(self.api_tokens_file).read_text().splitlines()
            except OSError as exc:
                raise ConfigError(
                    f"cannot read REGCAST_API_TOKENS_FILE {self.api_tokens_file}: {exc.strerror}"
                ) from None
            found += [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
        return tuple(found)

    def encryption_key(self) -> str | None:
        """REGCAST_SECRET_KEY, else the first line of REGCAST_SECRET_KEY_FILE, else None (a key file is made)."""
        if self.secret_key or not self.secret_key_file:
            return self.secret_key
        try:
            key = Path(self.secret_key_file).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read REGCAST_SECRET_KEY_FILE {self.secret_key_file}: {exc.strerror}") from None
        if len(key) < 16:
            raise ConfigError(f"REGCAST_SECRET_KEY_FILE {self.secret_key_file} holds under 16 characters")
        return key

    @property
    def registry_patterns(self) -> tuple[str, ...]:
        return split_list(self.allowed_registries)

    def outbound_policy(self) -> OutboundPolicy:
        return OutboundPolicy(self.registry_patterns, split_list(self.allowed_auth_hosts), self.block_private)

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            attempts=self.request_retries,
            backoff=self.request_backoff,
            max_backoff=self.request_backoff_max,
            max_total=self.request_retry_max_seconds,
            max_retry_after=self.retry_after_max,
        )

    def client_options(self, verify_tls: bool = True, host: str = "") -> ClientOptions:
        return ClientOptions(
            verify_tls=verify_tls,
            ca_bundle=self.ca_bundle,
            max_connections=self.connections_per_registry,
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            request_timeout=self.request_timeout,
            chunk_size=self.chunk_size,
            retry=self.retry_policy(),
            upload_strategy=self.upload_strategy,
            chunk_cap=self.chunk_caps.get(host.lower().split(":")[0], self.chunk_cap) if host else self.chunk_cap,
            policy=self.outbound_policy(),
            min_throughput=self.min_throughput,
            throughput_window=self.progress_timeout,
        )

    def transfer_options(self) -> TransferOptions:
        return TransferOptions(
            blobs_in_flight=self.blobs_in_flight,
            queue_depth=self.queue_depth,
            chunk_size=self.chunk_size,
            progress_timeout=self.progress_timeout,
            known_blob_seconds=self.known_blob_seconds,
            detach_after=self.detach_after,
            spool_dir=self.spool_dir or None,
            spool_max_bytes=self.spool_max_bytes,
            graph_limits=GraphLimits(self.max_graph_manifest_bytes, self.max_graph_children, self.max_graph_blobs),
        )

    @property
    def shared_database(self) -> bool:
        """A database several hosts may use (PostgreSQL), as opposed to a local SQLite file."""
        return not self.database_url.startswith("sqlite")

    @property
    def database_dir(self) -> Path:
        """Folder of the SQLite file (the key file lives beside it)."""
        if self.database_url.startswith("sqlite:///"):
            return Path(self.database_url[len("sqlite:///") :]).resolve().parent
        return Path.cwd()


def split_list(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split(",") if p.strip())


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """``30d``, ``12h``, ``90m``, ``45s``, ``2w`` or plain seconds."""
    v = text.strip().lower()
    try:
        seconds = float(v[:-1]) * _UNITS[v[-1]] if v and v[-1] in _UNITS else float(v)
    except ValueError:
        raise ValueError(f"not a duration: {text!r} (e.g. 30d, 12h, 90m, 3600)") from None
    if seconds < 0:
        raise ValueError(f"not a duration: {text!r} (negative)")
    return seconds


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment, with flags (``overrides`` not None) winning."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})
