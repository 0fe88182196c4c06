"""Retry policy as one immutable value (in the spirit of urllib3's Retry and stamina).

Only requests that can be sent again as they are (idempotent methods, or a body held in
memory) are retried here. A streamed upload that broke is never re-sent into the same session:
the engine opens a new one (or resumes a download with Range).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from regcast._exceptions import RegistryResponseError, RegistryUnreachable

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5  # tries per request, the first included
    backoff: float = 0.5  # first wait; doubles each try
    max_backoff: float = 20.0
    max_total: float = 300.0  # never spend longer than this waiting on one request
    max_retry_after: float = 120.0  # a registry's Retry-After is honoured up to this
    jitter: float = 0.25  # +- fraction of each wait
    statuses: frozenset[int] = field(default=RETRY_STATUSES)

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before try ``attempt + 1`` (``attempt`` counts from 1)."""
        if retry_after is not None:
            return float(min(max(retry_after, 0.0), self.max_retry_after))
        base = min(self.backoff * 2 ** (attempt - 1), self.max_backoff)
        return float(max(0.0, base * (1 + random.uniform(-self.jitter, self.jitter))))

    def may_retry(self, method: str, attempt: int, waited: float, next_wait: float, *, throttled: bool = False) -> bool:
        """Another try allowed? 429 waits (``throttled``) do not use up attempts, only time."""
        if method.upper() not in IDEMPOTENT and method.upper() != "POST":
            return False
        if waited + next_wait > self.max_total:
            return False
        return throttled or attempt < self.attempts

    @classmethod
    def none(cls) -> RetryPolicy:
        return cls(attempts=1)


def is_transient(exc: BaseException) -> bool:
    """A fault that may pass by itself (timeout, connection, 408/429/5xx), so trying later can help."""
    if isinstance(exc, TimeoutError):
        return True
    if isinstance(exc, RegistryUnreachable):
        return exc.transient
    if isinstance(exc, RegistryResponseError):
        return exc.status in RETRY_STATUSES or exc.status >= 500
    return False
