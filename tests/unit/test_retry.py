"""RetryPolicy.increment, parse_retry_after and the one retryability decision, without a network."""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import aiohttp
import pytest
from aiohttp.client_reqrep import ConnectionKey

from regcast._exceptions import (
    AuthenticationFailed,
    DigestMismatch,
    Failure,
    InvalidInput,
    ManifestTooLarge,
    NotFound,
    ProtocolViolation,
    RateLimited,
    RegistryResponseError,
    RegistryUnreachable,
    TokenRejected,
    is_retryable,
)
from regcast.registry._transport import parse_retry_after, translate_errors
from regcast.registry.retry import RetryPolicy

STEADY = RetryPolicy(attempts=3, backoff=1.0, max_backoff=4.0, max_total=100.0, jitter=0.0)


def unreachable(failure: Failure = Failure.CONNECT) -> RegistryUnreachable:
    return RegistryUnreachable("registry r: GET u: down", registry="r", failure=failure)


def answered(status: int, retry_after: float | None = None) -> RegistryResponseError:
    kind = {401: AuthenticationFailed, 404: NotFound, 429: RateLimited}.get(status, RegistryResponseError)
    return kind(f"answered {status}", status=status, method="GET", retry_after=retry_after)


def test_increment_counts_tries_and_doubles_the_wait() -> None:
    first = STEADY.increment("GET", unreachable())
    assert (first.retries, first.wait, first.waited) == (1, 1.0, 1.0)
    second = first.increment("GET", unreachable())
    assert (second.retries, second.wait, second.waited) == (2, 2.0, 3.0)
    assert STEADY.retries == 0  # a value: the configured policy is never changed


def test_increment_raises_the_error_when_tries_run_out() -> None:
    retry = STEADY.increment("GET", unreachable()).increment("GET", unreachable())
    last = unreachable()
    with pytest.raises(RegistryUnreachable) as info:
        retry.increment("GET", last)
    assert info.value is last


def test_a_second_timeout_ends_the_request_unless_it_progressed_between() -> None:
    """Waiting out request_timeout five times made a stalled registry a five-minute hang; other failures
    between the two timeouts do not reset the count, progress (a resumed download read more) does."""
    policy = RetryPolicy(attempts=5, backoff=0.0, jitter=0.0)
    once = policy.increment("GET", unreachable(Failure.TIMEOUT)).increment("GET", unreachable())
    second = unreachable(Failure.TIMEOUT)
    with pytest.raises(RegistryUnreachable) as info:
        once.increment("GET", second)
    assert info.value is second
    resumed = once.progressed().increment("GET", unreachable(Failure.TIMEOUT))
    assert resumed.retries == 3


def test_increment_raises_when_the_total_wait_would_pass_the_cap() -> None:
    tight = RetryPolicy(attempts=10, backoff=30.0, max_backoff=30.0, max_total=50.0, jitter=0.0)
    once = tight.increment("GET", unreachable())
    with pytest.raises(RegistryUnreachable):
        once.increment("GET", unreachable())


@pytest.mark.parametrize(
    "failure", [Failure.TLS_HANDSHAKE, Failure.CERTIFICATE, Failure.NAME_NOT_FOUND, Failure.INVALID_URL]
)
def test_permanent_failures_are_never_retried(failure: Failure) -> None:
    with pytest.raises(RegistryUnreachable):
        STEADY.increment("GET", unreachable(failure))


def test_a_streamed_patch_is_never_retried() -> None:
    with pytest.raises(RegistryUnreachable):
        STEADY.increment("PATCH", unreachable())


def test_retry_after_sets_the_wait_and_429_uses_no_tries() -> None:
    retry = STEADY
    for _ in range(10):  # far more than three tries: a 429 only spends time
        retry = retry.increment("GET", answered(429, retry_after=2.0))
    assert retry.retries == 10
    assert retry.wait == 2.0
    assert retry.waited == 20.0


def test_retry_after_is_capped() -> None:
    retry = RetryPolicy(max_retry_after=5.0, jitter=0.0).increment("GET", answered(503, retry_after=3600.0))
    assert retry.wait == 5.0


def test_jitter_stays_within_its_fraction() -> None:
    policy = RetryPolicy(backoff=1.0, jitter=0.25)
    waits = {policy.increment("GET", unreachable()).wait for _ in range(200)}
    assert min(waits) >= 0.75
    assert max(waits) <= 1.25
    assert len(waits) > 1


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (answered(500), True),
        (answered(502), True),
        (answered(503), True),
        (answered(504), True),
        (answered(408), True),
        (answered(429), True),
        (answered(400), False),
        (answered(401), False),
        (answered(404), False),
        (answered(405), False),
        (answered(501), False),
        (TokenRejected("expired", status=401), True),
        (DigestMismatch("corrupt read"), True),
        (ProtocolViolation("no Location"), False),
        (ManifestTooLarge("5 MiB"), False),
        (InvalidInput("bad name"), False),
        (unreachable(Failure.CONNECT), True),
        (unreachable(Failure.TIMEOUT), True),
        (unreachable(Failure.DISCONNECTED), True),
        (unreachable(Failure.DNS_TEMPORARY), True),
        (unreachable(Failure.TLS_HANDSHAKE), False),
        (unreachable(Failure.CERTIFICATE), False),
        (unreachable(Failure.NAME_NOT_FOUND), False),
        (unreachable(Failure.INVALID_URL), False),
        (ConnectionResetError(), True),
        (TimeoutError(), True),
        (KeyError("a bug"), False),
    ],
)
def test_retryability_is_a_property_of_the_error(error: BaseException, retryable: bool) -> None:
    assert is_retryable(error) is retryable


def _dns_error(errno: int) -> aiohttp.ClientConnectorDNSError:
    key = ConnectionKey("registry.example", 443, True, True, None, None, None)
    return aiohttp.ClientConnectorDNSError(key, socket.gaierror(errno, "lookup failed"))


@pytest.mark.parametrize(
    ("raised", "failure"),
    [
        (_dns_error(socket.EAI_NONAME), Failure.NAME_NOT_FOUND),
        (_dns_error(socket.EAI_AGAIN), Failure.DNS_TEMPORARY),
        (aiohttp.InvalidURL("http://127.0.0.1:99999/v2/?token=s3cr3t"), Failure.INVALID_URL),
        (TimeoutError(), Failure.TIMEOUT),
        (aiohttp.ServerDisconnectedError(), Failure.DISCONNECTED),
    ],
)
def test_library_errors_become_one_line_with_their_kind_and_cause(raised: BaseException, failure: Failure) -> None:
    with (
        pytest.raises(RegistryUnreachable) as info,
        translate_errors("r:5000", "GET", "http://r:5000/v2/?token=s3cr3t"),
    ):
        raise raised
    assert info.value.failure is failure
    assert info.value.__cause__ is raised  # kept for debugging
    text = str(info.value)
    assert text.startswith("registry r:5000: GET ")
    assert "\n" not in text
    assert "s3cr3t" not in text


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), ("", None), ("3", 3.0), (" 2.5 ", 2.5), ("-4", 0.0), ("soon", None)],
)
def test_parse_retry_after_seconds(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_parse_retry_after_http_dates() -> None:
    later = datetime.now(UTC) + timedelta(seconds=90)
    seconds = parse_retry_after(format_datetime(later, usegmt=True))
    assert seconds is not None
    assert 80 <= seconds <= 91
    assert parse_retry_after(format_datetime(datetime.now(UTC) - timedelta(hours=1), usegmt=True)) == 0.0


@pytest.mark.parametrize("retry_after", [0.0, 0.2])
def test_a_503_waits_at_least_the_backoff_as_it_uses_up_a_try(retry_after: float) -> None:
    """A 503 with Retry-After: 0 (or a past date, parsed as 0) was re-sent at once, up to four times in a row
    against a registry in maintenance; a 429 still waits only what it was told (it spends no try)."""
    first = STEADY.increment("GET", answered(503, retry_after=retry_after))
    second = first.increment("GET", answered(503, retry_after=retry_after))
    assert (first.wait, second.wait) == (1.0, 2.0)
    assert second.retries == 2
    assert STEADY.increment("GET", answered(503, retry_after=3.0)).wait == 3.0  # a longer Retry-After wins
    assert STEADY.increment("GET", answered(429, retry_after=0.0)).wait == 0.0
