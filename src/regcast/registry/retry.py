"""Retry policy as one immutable value, in the spirit of urllib3's ``Retry``.

A request starts with the configured policy; each failure calls ``increment()``, which returns
the policy for the next try (its ``wait`` is the pause before it) or raises the error when the
request must not be tried again. Whether an error is worth another try is the error's own
property (``is_retryable``); this value only counts tries and time.

Only requests that can be sent again as they are (idempotent methods, or a body held in memory)
are retried by the client. A streamed upload that broke is never re-sent into the same session:
the engine opens a new one (or resumes a download with Range).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from regcast._exceptions import Failure, RateLimited, RegistryResponseError, RegistryUnreachable, is_retryable

RETRYABLE_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "POST"})  # POST: an upload start, no body


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5  # tries per request, the first included
    backoff: float = 0.5  # first wait; doubles each try
    max_backoff: float = 20.0
    max_total: float = 300.0  # never spend longer than this waiting on one request
    max_retry_after: float = 120.0  # a registry's Retry-After is honoured up to this
    jitter: float = 0.25  # +- fraction of each wait
    # tries of one request that may time out (connect, request or read timeout, an upload's stall): a server
    # that let the same request time out twice is not answering, and waiting out request_timeout five times
    # made a stalled registry a five-minute hang. Progress between (``progressed``) starts the count again.
    timeouts: int = 2
    # the progress of one request: retries made, seconds waited, the pause before the next try
    retries: int = 0
    waited: float = 0.0
    wait: float = 0.0
    timed_out: int = 0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before try ``attempt + 1`` (``attempt`` counts from 1)."""
        if retry_after is not None:
            return float(min(max(retry_after, 0.0), self.max_retry_after))
        base = min(self.backoff * 2 ** (attempt - 1), self.max_backoff)
        return float(max(0.0, base * (1 + random.uniform(-self.jitter, self.jitter))))

    def increment(self, method: str, error: BaseException) -> RetryPolicy:
        """The policy for the next try after ``error``; raises ``error`` when there is none.

        A 429 does not use up tries, only time (``max_total``): the registry said when to come back. Any
        other answer's Retry-After (a 503 in maintenance) is waited at least the backoff of that try: a
        ``Retry-After: 0`` or a past date must not spend the tries on immediate re-sends.
        """
        if not is_retryable(error) or method.upper() not in RETRYABLE_METHODS:
            raise error
        timed_out = self.timed_out
        if isinstance(error, RegistryUnreachable) and error.failure is Failure.TIMEOUT:
            timed_out += 1
            if timed_out >= self.timeouts:
                raise error
        retry_after = error.retry_after if isinstance(error, RegistryResponseError) else None
        wait = self.delay(self.retries + 1, retry_after)
        if retry_after is not None and not isinstance(error, RateLimited):  # it uses up a try: not sooner
            wait = max(wait, self.delay(self.retries + 1))
        if self.waited + wait > self.max_total:
            raise error
        if not isinstance(error, RateLimited) and self.retries + 1 >= self.attempts:
            raise error
        return replace(self, retries=self.retries + 1, waited=self.waited + wait, wait=wait, timed_out=timed_out)

    def progressed(self) -> RetryPolicy:
        """The policy after the request made progress (a download resumed and read more, an upload took
        bytes before it broke): a later timeout is not the same stall again."""
        return replace(self, timed_out=0)

    @classmethod
    def none(cls) -> RetryPolicy:
        return cls(attempts=1)
