"""Prometheus metrics: one ``Metrics`` value per process, fed by the registry client and the worker.

Counters and histograms live in the process that did the work; job counts by state, the queue
depth and the oldest queued job are read from the job store at scrape time (``StoreCollector``),
so every replica answers the same numbers for them. With ``PROMETHEUS_MULTIPROC_DIR`` set (several
uvicorn workers), prometheus-client keeps values in files there and ``render`` merges them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from regcast._exceptions import JobError

if TYPE_CHECKING:
    from regcast.jobs.store import JobStore
    from regcast.transfer.progress import TargetStatus

log = logging.getLogger("regcast.ops")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
JOB_STATES = ("QUEUED", "RUNNING", "FINISHED", "FAILED", "CANCELLED")
DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, float("inf"))
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, float("inf"))


def status_class(status: int | None) -> str:
    """``2xx``..``5xx``, or ``error`` when no HTTP answer came (connection, TLS, timeout)."""
    return f"{status // 100}xx" if status else "error"


def retry_reason(status: int | None) -> str:
    """A small fixed set of reasons, so the label stays low-cardinality."""
    if status is None:
        return "connection"
    if status == 429:
        return "throttled"
    if status == 401:
        return "token_expired"
    if status == 408:
        return "timeout"
    return "server_error" if status >= 500 else "refused"


class Metrics:
    """Every regcast metric, registered in its own ``CollectorRegistry`` (no process-wide state)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.jobs_finished = Counter(
            "regcast_jobs_finished_total", "Jobs that ended, by outcome.", ["outcome"], registry=r
        )
        self.job_duration = Histogram(
            "regcast_job_duration_seconds",
            "From a job's first claim to its end.",
            ["outcome"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.target_duration = Histogram(
            "regcast_target_duration_seconds",
            "One target's copy within a job, by its final state.",
            ["state"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.source_bytes = Counter(
            "regcast_source_read_bytes_total", "Blob bytes read from source registries.", ["registry"], registry=r
        )
        self.target_bytes = Counter(
            "regcast_target_written_bytes_total", "Blob bytes uploaded to target registries.", ["registry"], registry=r
        )
        self.blobs = Counter(
            "regcast_blobs_total", "Blobs per target by outcome: present, mounted or uploaded.", ["outcome"], registry=r
        )
        self.referrers = Counter("regcast_referrers_copied_total", "Referrer manifests copied.", registry=r)
        self.retries = Counter(
            "regcast_retries_total", "Requests and transfers retried, by reason.", ["reason"], registry=r
        )
        self.requests = Counter(
            "regcast_registry_requests_total",
            "Requests sent to registries, by registry, method and status class.",
            ["registry", "method", "status_class"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "regcast_registry_request_duration_seconds",
            "Time to a registry's response headers.",
            ["registry", "method"],
            buckets=REQUEST_BUCKETS,
            registry=r,
        )
        self.rate_limit = Gauge(
            "regcast_registry_rate_limit_remaining",
            "The last RateLimit-Remaining a registry announced.",
            ["registry"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.push_events = Counter(
            "regcast_push_events_total",
            "Registry push notifications received, by outcome (matched, duplicate, ignored, unauthorized, malformed).",
            ["outcome"],
            registry=r,
        )
        self.push_lag = Histogram(
            "regcast_push_sync_lag_seconds",
            "From a tag's push at the source to in sync at every target of its mirror.",
            buckets=(0.5, 1, 2, 5, 10, 30, 60, 300, 1800, float("inf")),
            registry=r,
        )
        self.notifications = Counter(
            "regcast_notifications_total", "Notification deliveries, by outcome.", ["outcome"], registry=r
        )
        # the children of requests and request_seconds per (registry, method, status): the same objects
        # labels() answers (metrics are never removed); as many as the label sets themselves
        self._request_children: dict[tuple[str, str, int | None], tuple[Counter, Histogram]] = {}

    # -- the registry client's observer --------------------------------------------------------
    def request(self, registry: str, method: str, status: int | None, seconds: float) -> None:
        """Every registry request: its two children looked up once per (registry, method, status), not
        through ``labels()`` (a lock, label checks and a tuple per call) each time (issue 17)."""
        children = self._request_children.get((registry, method, status))
        if children is None:
            children = (
                self.requests.labels(registry, method, status_class(status)),
                self.request_seconds.labels(registry, method),
            )
            self._request_children[(registry, method, status)] = children
        children[0].inc()
        children[1].observe(seconds)

    def retry(self, status: int | None) -> None:
        self.retries.labels(retry_reason(status)).inc()

    def remaining(self, registry: str, left: int) -> None:
        self.rate_limit.labels(registry).set(left)

    def bytes_read(self, registry: str, n: int) -> None:
        self.source_bytes.labels(registry).inc(n)

    def event(self, outcome: str, n: int = 1) -> None:
        if n:
            self.push_events.labels(outcome).inc(n)

    # -- the worker ------------------------------------------------------------------------------
    def target_done(self, registry: str, status: TargetStatus, seconds: float | None) -> None:
        """One target ended (its final state): bytes written, blobs by outcome, its duration."""
        if status.bytes_uploaded:
            self.target_bytes.labels(registry).inc(status.bytes_uploaded)
        for outcome, n in (
            ("present", status.blobs_present),
            ("mounted", status.blobs_mounted),
            ("uploaded", status.blobs_uploaded),
        ):
            if n:
                self.blobs.labels(outcome).inc(n)
        if status.referrers:
            self.referrers.inc(status.referrers)
        if seconds is not None:
            self.target_duration.labels(status.state.value).observe(seconds)

    def job_done(self, outcome: str, seconds: float | None) -> None:
        self.jobs_finished.labels(outcome).inc()
        if seconds is not None:
            self.job_duration.labels(outcome).observe(seconds)

    def render(self, store: JobStore | None = None) -> bytes:
        """The text exposition: this process (or every process, in multiprocess mode) plus the store's gauges."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        else:
            registry = self.registry
        text = generate_latest(registry)
        if store is not None:
            try:
                extra = CollectorRegistry()
                extra.register(StoreCollector(store.queue_stats, lambda: mirror_run_counts(store)))
                text += generate_latest(extra)
            except JobError as exc:  # the process's own metrics still answer: an outage is when they matter
                log.warning("metrics: the database's gauges left out: %s", exc)
        return text


class StoreCollector(Collector):
    """Gauges read from the job store at scrape time: the same on every replica."""

    def __init__(
        self,
        stats: Callable[[], tuple[dict[str, int], float | None, int]],
        mirror_runs: Callable[[], dict[str, int]] = dict,
    ) -> None:
        self.stats = stats
        self.mirror_runs = mirror_runs

    def collect(self) -> Iterable[Metric]:
        counts, oldest, running = self.stats()
        jobs = GaugeMetricFamily("regcast_jobs", "Jobs in the store, by state.", labels=["state"])
        for state in JOB_STATES:
            jobs.add_metric([state], counts.get(state, 0))
        yield jobs
        yield GaugeMetricFamily("regcast_queue_depth_jobs", "Jobs waiting to be claimed.", counts.get("QUEUED", 0))
        yield GaugeMetricFamily(
            "regcast_oldest_queued_job_age_seconds", "Age of the oldest queued job (0 when none).", oldest or 0.0
        )
        runs = CounterMetricFamily("regcast_mirror_runs", "Mirror set runs that ended, by outcome.", labels=["outcome"])
        for state, n in self.mirror_runs().items():
            runs.add_metric([state.lower()], n)
        yield runs
        yield GaugeMetricFamily("regcast_transfers_in_flight", "Targets being copied now (all replicas).", running)


def mirror_run_counts(store: JobStore) -> dict[str, int]:
    """Ended mirror runs by state, from the database (every replica answers the same)."""
    from regcast.mirrors.store import MirrorStore

    return {state.value: n for state, n in MirrorStore(store.db).ended_runs().items()}
