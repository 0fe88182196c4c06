"""What every registry request pays in regcast's own Python (issue 17: CPU per small job).

Each check counts the work that used to be done again per request (a host normalised and its
address parsed, a metric's labels looked up, a URL split) and asserts the answers stay the same.
"""

from __future__ import annotations

import asyncio
import urllib.parse
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from yarl import URL

from regcast._exceptions import OutboundRefused
from regcast.ops.metrics import Metrics
from regcast.registry import guards
from regcast.registry.auth import Credentials
from regcast.registry.authenticator import Authenticator
from regcast.registry.client import with_query
from regcast.registry.guards import VERDICTS_KEPT, OutboundPolicy, check_followed_url


@pytest.fixture
def host_checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every host the outbound policy really judges (normalised text, address parsed)."""
    judged: list[str] = []
    real = guards.host_problem

    def counting(host: str, block_private: bool = False) -> str | None:
        judged.append(host)
        return real(host, block_private)

    monkeypatch.setattr(guards, "host_problem", counting)
    return judged


def test_a_policy_judges_each_origin_once(host_checks: list[str]) -> None:
    policy = OutboundPolicy()
    for i in range(20):
        assert policy.problem(f"http://127.0.0.1:5000/v2/repo/blobs/uploads/{i}?_state=x") is None
        url = f"http://127.0.0.1:5000/v2/repo/blobs/uploads/{i}"
        assert check_followed_url(url, came_from=url, registry="r", what="upload Location", policy=policy) == url
    assert host_checks == ["127.0.0.1"]


def test_a_kept_verdict_is_the_same_answer_per_allow_list(host_checks: list[str]) -> None:
    policy = OutboundPolicy(registries=("reg.example",), auth_hosts=("auth.example",))
    for _ in range(3):
        assert "not in REGCAST_ALLOWED_REGISTRIES" in (policy.problem("https://auth.example/token") or "")
        assert policy.problem("https://auth.example/token", "auth") is None
        assert "is a link-local/metadata address" in (policy.problem("http://0xa9fea9fe/") or "")
        assert "is a link-local/metadata address" in (policy.problem("http://169.254.169.254/x") or "")
        assert policy.problem("https://reg.example:443/v2/") is None  # another origin: its own verdict
    assert sorted(host_checks) == sorted(["auth.example"] * 2 + ["169.254.169.254"] * 2 + ["reg.example"])


def test_kept_verdicts_are_bounded_and_not_part_of_equality() -> None:
    policy = OutboundPolicy(registries=("*.example",))
    for i in range(VERDICTS_KEPT + 10):
        assert policy.problem(f"https://r{i}.example/v2/") is None
    assert len(policy._verdicts) <= VERDICTS_KEPT
    fresh = OutboundPolicy(registries=("*.example",))
    assert policy == fresh
    assert hash(policy) == hash(fresh)


class _Request:
    def __init__(self, url: str) -> None:
        self.url = URL(url)
        self.method = "GET"


def test_the_middleware_judges_the_url_aiohttp_parsed_once_per_origin(host_checks: list[str]) -> None:
    guard = OutboundPolicy().middleware("registry")
    sent: list[str] = []

    async def handler(request: Any) -> str:
        sent.append(str(request.url))
        return "answer"

    async def run() -> None:
        for i in range(5):
            assert await guard(_Request(f"http://127.0.0.1:5000/v2/r/manifests/{i}"), handler) == "answer"
        for _ in range(2):
            with pytest.raises(OutboundRefused) as refused:
                await guard(_Request("http://[::ffff:169.254.169.254]/latest"), handler)
            # the message as before (yarl writes the mapped address in hex)
            assert str(refused.value) == "refusing GET to this host: ::ffff:a9fe:a9fe is a link-local/metadata address"

    asyncio.run(run())
    assert len(sent) == 5
    assert host_checks == ["127.0.0.1", "::ffff:a9fe:a9fe"]


def test_request_metrics_look_their_labels_up_once(monkeypatch: pytest.MonkeyPatch) -> None:
    m = Metrics()
    m.request("r:1", "GET", 200, 0.01)
    m.request("r:1", "HEAD", 404, 0.01)
    m.request("r:1", "GET", None, 0.01)

    def no_lookup(*_: object) -> None:
        raise AssertionError("labels() looked up again")

    monkeypatch.setattr(m.requests, "labels", no_lookup)
    monkeypatch.setattr(m.request_seconds, "labels", no_lookup)
    m.request("r:1", "GET", 200, 0.02)
    m.request("r:1", "HEAD", 404, 0.02)
    m.request("r:1", "GET", None, 0.02)
    sample = m.registry.get_sample_value
    assert sample("regcast_registry_requests_total", {"registry": "r:1", "method": "GET", "status_class": "2xx"}) == 2
    assert sample("regcast_registry_requests_total", {"registry": "r:1", "method": "HEAD", "status_class": "4xx"}) == 2
    assert sample("regcast_registry_requests_total", {"registry": "r:1", "method": "GET", "status_class": "error"}) == 2
    assert sample("regcast_registry_request_duration_seconds_count", {"registry": "r:1", "method": "GET"}) == 4


def test_credentials_go_to_their_own_host_without_splitting_its_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    split: list[str] = []
    real = urllib.parse.urlsplit

    def counting(url: str) -> Any:
        split.append(url)
        return real(url)

    monkeypatch.setattr("regcast.registry.authenticator.urlsplit", counting)
    auth = Authenticator("Reg.Example:5000", Credentials("u", "p"), None)
    auth.remember('Basic realm="r"')
    basic = Credentials("u", "p").basic_header()

    async def header(url: str) -> str | None:
        async def no_fetch(*_: object) -> bytes:
            raise AssertionError("no token for Basic")

        return await auth.header(("repository:a:pull",), url, "https://Reg.Example:5000", no_fetch)

    assert asyncio.run(header("https://Reg.Example:5000/v2/a/blobs/sha256:00")) == basic
    assert asyncio.run(header("http://Reg.Example:5000/v2/a/manifests/v1")) == basic
    assert split == []
    # anything else is still judged by its netloc, as before: case aside, only this host gets them
    assert asyncio.run(header("https://reg.example:5000/v2/a/tags/list")) == basic
    assert asyncio.run(header("https://Reg.Example:5000@evil.example/v2/")) is None
    assert asyncio.run(header("https://Reg.Example:50000/v2/")) is None
    assert asyncio.run(header("https://evil.example/Reg.Example:5000/")) is None
    assert len(split) == 4


# a Location as distribution 2.8 answers an upload POST (its _state is base64 with an escaped '=')
LOCATION = (
    "http://127.0.0.1:5000/v2/probe/x/blobs/uploads/45d6bbce-56e4-40bf-8ce0-f1e6d6a762db?_state="
    "O0vQJBgunp4Mv3jLhtq9BhsFszSvnz-aSAh19Dd8xh17Ik5hbWUiOiJwcm9iZS94IiwiVVVJRCI6IjQ1ZDZiYmNlLTU2ZTQtNDBiZi04"
    "Y2UwLWYxZTZkNmE3NjJkYiIsIk9mZnNldCI6MCwiU3RhcnRlZEF0IjoiMjAyNi0xMS0yOVQxNToyMTozMC41OTg2ODMwMTRaIn0%3D"
)


def _with_query_as_before(url: str, **params: str) -> str:
    parts = urllib.parse.urlsplit(url)
    pairs = urllib.parse.parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    query = urllib.parse.urlencode(pairs, safe=":/")
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def test_an_upload_location_is_not_decoded_and_quoted_again(monkeypatch: pytest.MonkeyPatch) -> None:
    digest = "sha256:" + "ab" * 32
    expected = _with_query_as_before(LOCATION, digest=digest)

    def no_decoding(*_: object, **__: object) -> None:
        raise AssertionError("the query was decoded")

    monkeypatch.setattr("regcast.registry.client.parse_qsl", no_decoding)
    assert with_query(LOCATION, digest=digest) == expected
    assert with_query("http://r/v2/a/blobs/uploads/", mount=digest, **{"from": "b/c"}) == (
        f"http://r/v2/a/blobs/uploads/?mount={digest}&from=b/c"
    )


@given(
    st.text(alphabet="ab_.~:/+-%=&;#?é 3DF20AC7e", max_size=16),
    st.text(alphabet="sha256:abc d&=+/é", max_size=8),
)
def test_with_query_writes_every_query_as_before(query: str, value: str) -> None:
    url = f"http://r:5000/v2/a/blobs/uploads/u?{query}"
    assert with_query(url, digest=value) == _with_query_as_before(url, digest=value)
    assert with_query(url, n="1", last=value) == _with_query_as_before(url, n="1", last=value)
