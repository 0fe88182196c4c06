"""Settings: built once from flags and ``REGCAST_*`` environment variables (flags win), then passed down.

``Settings`` is the one declaration of every knob: type, default, bounds (``knob``) and the checks of
``__post_init__``. ``config_source.py`` reads the environment into it; pydantic validates only what is
not plainly valid there (a copy's start-up does not import it: issue 17, docs/decisions.md "Start-up").
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, TypeVar

from regcast._exceptions import ConfigError
from regcast.registry.session import READ_CHUNK

if TYPE_CHECKING:
    from regcast.registry.client import ClientOptions
    from regcast.registry.guards import OutboundPolicy
    from regcast.registry.retry import RetryPolicy
    from regcast.transfer.engine import TransferOptions

T = TypeVar("T")


class Bounds(NamedTuple):
    """A numeric knob's range (pydantic's ``ge``/``gt``/``le``), kept in the field's metadata."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None

    def holds(self, v: float) -> bool:
        return (
            (self.ge is None or v >= self.ge) and (self.gt is None or v > self.gt) and (self.le is None or v <= self.le)
        )


def knob(
    default: T, *, ge: float | None = None, gt: float | None = None, le: float | None = None, secret: bool = False
) -> T:
    """A setting's default and bounds; ``secret`` keeps it out of ``repr``."""
    field: Any = dataclasses.field(default=default, repr=not secret, metadata={"bounds": Bounds(ge, gt, le)})
    return field  # type: ignore[no-any-return]


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Every knob of regcast (``REGCAST_<NAME>``; unknown ``REGCAST_*`` variables are ignored).

    Built by ``load_settings`` from the environment; built directly it holds its arguments, checked by
    ``__post_init__`` but not converted (tests and ``dataclasses.replace``).
    """

    host: str = "127.0.0.1"
    port: int = knob(5001, ge=1, le=65535)
    database_url: str = "sqlite:///regcast.db"
    secret_key: str | None = knob(None, secret=True)
    secret_key_file: str | None = None  # the key in a file (a mounted secret), as REGCAST_API_TOKENS_FILE
    ca_bundle: str | None = None

    # transfer
    blobs_in_flight: int = knob(4, ge=1, le=64)
    small_blobs_in_flight: int = knob(16, ge=1, le=256)  # blobs up to 1 MiB, beside the large ones
    connections_per_registry: int = knob(16, ge=1, le=256)
    chunk_size: int = knob(READ_CHUNK, ge=16 * 1024, le=64 * 1024 * 1024)
    queue_depth: int = knob(8, ge=1, le=256)
    detach_after: float = knob(1.0, ge=0)  # lagging this long leaves the shared stream (0: never); decisions.md
    spool_dir: str | None = None  # detached targets read a blob's on-disk copy here, not the source again
    spool_max_bytes: int = knob(1024**3, ge=0)  # spool files at once; a blob that does not fit is re-read
    connect_timeout: float = knob(20.0, gt=0)
    read_timeout: float = knob(120.0, gt=0)
    request_timeout: float = knob(60.0, gt=0)

    # requests: retries of one request (connection errors, 408/429/5xx), Retry-After honoured up to a cap
    request_retries: int = knob(5, ge=1, le=50)
    request_backoff: float = knob(0.5, ge=0)
    request_backoff_max: float = knob(20.0, ge=0)
    request_retry_max_seconds: float = knob(300.0, ge=0)
    retry_after_max: float = knob(120.0, ge=0)

    # uploads: auto learns from refusals; chunk caps per registry host (GHCR refuses PATCH bodies over 4 MiB)
    upload_strategy: Literal["auto", "monolithic", "chunked"] = "auto"
    chunk_cap: int | None = knob(None, ge=1024 * 1024)
    chunk_caps: dict[str, int] = dataclasses.field(default_factory=lambda: {"ghcr.io": 4 * 1024 * 1024})

    # security
    api_tokens: str = knob("", secret=True)  # comma-separated bearer tokens; turns API auth on
    api_tokens_file: str | None = None  # one token per line
    allow_unauthenticated: bool = False  # listen beyond loopback without API tokens
    allowed_registries: str = ""  # comma-separated glob patterns of host[:port]; empty = any
    mirror_env: str = ""  # glob patterns of the variables a posted mirror document may read; empty = any but REGCAST_*
    allowed_auth_hosts: str = ""  # token servers allowed besides the registries (same form)
    block_private: bool = False  # refuse loopback and private addresses as well (guards.py)
    allowed_origins: str = ""  # browser Origins allowed besides the service's own (comma-separated)
    allowed_hosts: str = ""  # Host header values allowed besides loopback names when without API tokens
    strict_requests: bool = False  # an unknown key in a job request is a 400, not a warning

    # streams: an upload whose target reads nothing this long is cut off (that target alone, retried); a
    # download under min_throughput bytes/s over the same window is cut and resumed
    progress_timeout: float = knob(120.0, gt=0)
    known_blob_seconds: float = knob(30.0, ge=0)  # a blob this process confirmed is trusted without a HEAD
    min_throughput: int = knob(1024, ge=0)

    # one source graph (a hostile source cannot grow memory without bound)
    max_graph_manifest_bytes: int = knob(64 * 1024 * 1024, ge=4 * 1024 * 1024)
    max_graph_children: int = knob(1000, ge=1)
    max_graph_blobs: int = knob(10_000, ge=1)

    # service
    jobs_in_flight: int = knob(4, ge=1, le=256)
    max_targets: int = knob(100, ge=1, le=10_000)
    max_body_bytes: int = knob(1024 * 1024, ge=1024)
    poll_interval: float = knob(1.0, gt=0)
    heartbeat_interval: float = knob(2.0, gt=0)
    stale_after: float = knob(10.0, gt=0)  # a worker silent this long (database clock) is dead
    db_timeout: float = knob(5.0, gt=0)  # bound on every database call (frozen database included)
    shutdown_grace: float = knob(20.0, ge=0)  # how long a stopping worker keeps retrying final writes
    health_port: int = knob(5002, ge=0, le=65535)  # `regcast worker`'s /healthz, /readyz (0: off)
    max_attempts: int = knob(3, ge=1, le=100)
    retry_backoff: float = knob(2.0, ge=0)

    # operations (ops/): metrics, logs, notifications, retention, progress lines
    metrics_public: bool = False  # /metrics without a bearer token (scrapers on a trusted network)
    log_format: Literal["text", "json"] = "text"
    notify_url: str | None = knob(None, secret=True)  # service-wide webhook: every job's end is POSTed here
    notify_secret: str | None = knob(None, secret=True)
    notify_events: str = "finished,failed,cancelled"
    notify_attempts: int = knob(5, ge=1, le=50)
    notify_backoff: float = knob(1.0, ge=0)
    notify_timeout: float = knob(10.0, gt=0)
    job_retention: str = "30d"  # finished jobs older than this are deleted; 0 keeps them forever
    progress_interval: float = knob(10.0, gt=0)  # seconds between progress lines when not on a terminal

    def __post_init__(self) -> None:
        """The checks no type or bound says; a ``postgres://`` URL in SQLAlchemy's form (psycopg 3)."""
        try:
            parse_duration(self.job_retention)
        except ValueError as exc:
            raise ValueError(f"job_retention: {exc}") from None
        if self.stale_after < 2 * self.heartbeat_interval:
            raise ValueError("stale_after must be at least twice heartbeat_interval")
        url = self.database_url
        if url.startswith("postgres://"):
            url = "postgresql://" + url[len("postgres://") :]
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url[len("postgresql://") :]
        object.__setattr__(self, "database_url", url)  # frozen: set once, here

    def retention(self) -> dt.timedelta | None:
        """REGCAST_JOB_RETENTION as a duration; None means keep forever."""
        seconds = parse_duration(self.job_retention)
        return dt.timedelta(seconds=seconds) if seconds else None

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

    @property
    def mirror_env_patterns(self) -> tuple[str, ...]:
        return split_list(self.mirror_env)

    def outbound_policy(self) -> OutboundPolicy:
        from regcast.registry.guards import OutboundPolicy

        return OutboundPolicy(self.registry_patterns, split_list(self.allowed_auth_hosts), self.block_private)

    def retry_policy(self) -> RetryPolicy:
        from regcast.registry.retry import RetryPolicy

        return RetryPolicy(
            attempts=self.request_retries,
            backoff=self.request_backoff,
            max_backoff=self.request_backoff_max,
            max_total=self.request_retry_max_seconds,
            max_retry_after=self.retry_after_max,
        )

    def client_options(self, verify_tls: bool = True, host: str = "") -> ClientOptions:
        from regcast.registry.client import ClientOptions

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
        from regcast.transfer.engine import TransferOptions
        from regcast.transfer.plan import GraphLimits

        return TransferOptions(
            blobs_in_flight=self.blobs_in_flight,
            small_blobs_in_flight=self.small_blobs_in_flight,
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
    from regcast.config_source import read_settings

    return read_settings({k: v for k, v in overrides.items() if v is not None})
