from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime as dt
import json
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from regcast._exceptions import ProtocolViolation
from regcast.registry.auth import (
    Challenge,
    Credentials,
    SeedAuth,
    TokenCache,
    parse_token_answer,
    parse_www_authenticate,
    token_request,
)
from regcast.registry.authenticator import Authenticator


def test_bearer_challenge() -> None:
    [ch] = parse_www_authenticate(
        'Bearer realm="https://auth.example/token",service="registry.example",'
        'scope="repository:samalba/my-app:pull,push"'
    )
    assert ch.scheme == "bearer"
    assert ch.realm == "https://auth.example/token"
    assert ch.params["scope"] == "repository:samalba/my-app:pull,push"


def test_odd_spacing_quoting_and_several_challenges() -> None:
    chs = parse_www_authenticate(
        'Basic realm="x y", Bearer  realm=https://a/t , service="s\\"q",error=insufficient_scope'
    )
    assert [c.scheme for c in chs] == ["basic", "bearer"]
    assert chs[0].params == {"realm": "x y"}
    assert chs[1].params == {"realm": "https://a/t", "service": 's"q', "error": "insufficient_scope"}


def test_bearer_is_chosen_over_basic_whatever_the_order() -> None:
    auth = Authenticator("r.example", Credentials("u", "p"), None)
    ch = auth.remember('Basic realm="gateway", Bearer realm="https://auth.example/token",service="r"')
    assert ch is not None and ch.scheme == "bearer" and ch.realm == "https://auth.example/token"
    assert auth.remember('Basic realm="only"') == Challenge("basic", {"realm": "only"})
    assert auth.remember("Negotiate abc") is None
    assert auth.challenge == Challenge("basic", {"realm": "only"})  # an unusable answer forgets nothing


@given(st.text(max_size=200))
def test_www_authenticate_never_crashes_and_schemes_are_clean(text: str) -> None:
    for ch in parse_www_authenticate(text):
        assert ch.scheme
        assert ch.scheme == ch.scheme.lower()
        assert not set(ch.scheme) & {" ", ","}


_TOKEN = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=10)
_VALUE = st.text(alphabet='abcdefghijklmnopqrstuvwxyz0123456789:/._- ,="\\', max_size=30)


@given(st.lists(st.tuples(_TOKEN, st.dictionaries(_TOKEN, _VALUE, max_size=4)), min_size=1, max_size=3))
def test_www_authenticate_reads_back_what_was_written(challenges: list[tuple[str, dict[str, str]]]) -> None:
    def quoted(v: str) -> str:
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'

    header = ", ".join(
        scheme.capitalize() + (" " + ",".join(f"{k}={quoted(v)}" for k, v in params.items()) if params else "")
        for scheme, params in challenges
    )
    parsed = parse_www_authenticate(header)
    assert [(c.scheme, c.params) for c in parsed] == [(s, p) for s, p in challenges]


def test_scopes_with_host_port_repositories_kept_whole() -> None:
    ch = Challenge("bearer", {"realm": "https://auth.example/token", "service": "svc"})
    req = token_request(ch, ("repository:host:5000/x:pull", "repository:a/b:pull,push"), None, "reg.example")
    assert req.params == [
        ("service", "svc"),
        ("scope", "repository:host:5000/x:pull"),
        ("scope", "repository:a/b:pull,push"),
    ]


def test_credentials_only_to_safe_realms() -> None:
    creds = Credentials("u", "p")
    https_other = Challenge("bearer", {"realm": "https://auth.example/token"})
    http_same = Challenge("bearer", {"realm": "http://reg.example:8080/token"})
    http_other = Challenge("bearer", {"realm": "http://evil.example/token"})
    assert token_request(https_other, (), creds, "reg.example").basic == creds
    assert token_request(http_same, (), creds, "reg.example:8080", "http://reg.example:8080/v2/").basic == creds
    # same host, another port or scheme: another origin, so plain http never carries the password (issue 10 item 7)
    assert token_request(http_same, (), creds, "reg.example", "http://reg.example/v2/").basic is None
    assert token_request(http_same, (), creds, "reg.example:8080", "https://reg.example:8080/v2/").basic is None
    assert token_request(http_other, (), creds, "reg.example").basic is None
    loopback = Challenge("bearer", {"realm": "http://127.0.0.1:9000/token"})
    assert token_request(loopback, (), creds, "127.0.0.1:5000", "http://127.0.0.1:5000/v2/").basic == creds
    with pytest.raises(ProtocolViolation):
        token_request(Challenge("bearer", {"realm": "file:///etc/passwd"}), (), creds, "reg.example")


def test_token_answers() -> None:
    assert parse_token_answer(json.dumps({"token": "t", "expires_in": 300}).encode(), now=0) == ("t", 295.0)
    assert parse_token_answer(json.dumps({"access_token": "a", "expires_in": 10}).encode(), now=0)[1] == 55.0
    assert parse_token_answer(b'{"token": "t"}', now=100)[1] == 155.0
    for bad in (b"<html>", b"[]", b'{"token": ""}', b'{"expires_in": 3}'):
        with pytest.raises(ProtocolViolation):
            parse_token_answer(bad)


def test_token_cache_slots_and_expiry() -> None:
    cache = TokenCache()
    ch = Challenge("bearer", {"realm": "r", "service": "s"})
    k1, k2 = TokenCache.key(ch, ("a",)), TokenCache.key(ch, ("b", "a"))
    cache.put(k1, "one", 100)
    cache.put(k2, "two", 100)
    assert cache.get(k1, now=50) == "one"
    assert cache.get(k2, now=50) == "two"
    assert TokenCache.key(ch, ("a", "b")) == k2
    assert cache.get(k1, now=101) is None


def test_credentials_repr_hides_password() -> None:
    assert "hunter2" not in repr(Credentials("u", "hunter2"))
    assert Credentials.parse("u:p:with:colons") == Credentials("u", "p:with:colons")


def test_seed_token_fetched_again_after_a_401_even_under_a_bearer_challenge() -> None:
    """The seed's token is all a seed-auth client sends, and it outlives a job (pool.py): a 401 drops it."""
    fetched: list[str] = []

    async def fetch(url: str, *_: object) -> bytes:
        fetched.append(url)
        return json.dumps({"token": f"t{len(fetched)}"}).encode()

    auth = Authenticator("reg.example", None, SeedAuth(url="https://auth.example/token"))
    auth.remember('Bearer realm="https://auth.example/token",service="reg"')

    async def header() -> str | None:
        return await auth.header(
            ("repository:a:pull",), "https://reg.example/v2/a/tags/list", "https://reg.example", fetch
        )

    assert asyncio.run(header()) == "Bearer t1"
    assert asyncio.run(header()) == "Bearer t1"  # kept while accepted
    auth.rejected(
        'Bearer realm="https://auth.example/token",service="reg",error="invalid_token"', ("repository:a:pull",)
    )
    assert asyncio.run(header()) == "Bearer t2"
    assert fetched == ["https://auth.example/token"] * 2


@pytest.mark.parametrize(
    ("host", "base", "url", "sent"),
    [
        ("reg.example:443", "https://reg.example:443/v2/", "https://reg.example/v2/a/blobs/uploads/u", True),
        ("reg.example", "https://reg.example/v2/", "https://reg.example:443/v2/a/blobs/uploads/u", True),
        ("reg.example", "https://reg.example/v2/", "https://REG.example/v2/a/blobs/uploads/u", True),
        ("reg.example", "https://reg.example/v2/", "https://reg.example:5000/v2/a/blobs/uploads/u", False),
        ("reg.example", "https://reg.example/v2/", "https://s3.example/bucket/blob?X-Amz-Signature=x", False),
        ("reg.example:443", "https://reg.example:443/v2/", "https://reg.example.evil/v2/x", False),
    ],
)
def test_credentials_follow_the_registry_host_whatever_its_port_spelling(
    host: str, base: str, url: str, sent: bool
) -> None:
    """An endpoint written with its default port and the Locations it hands out without it (or the other
    way round) are one server: the upload gets the registry's credentials; another host never does."""
    auth = Authenticator(host, Credentials("u", "p"), None)
    auth.remember('Basic realm="r"')

    async def no_fetch(*_: object) -> bytes:
        raise AssertionError("no token server here")

    header = asyncio.run(auth.header(("repository:a:pull,push",), url, base, no_fetch))
    assert (header == Credentials("u", "p").basic_header()) is sent


def _jwt(claims: dict[str, object]) -> str:
    def part(obj: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    return f"{part({'alg': 'ES256'})}.{part(claims)}.c2ln"


@pytest.mark.parametrize("skew", [-3600.0, 0.0, 3600.0])
def test_a_jwt_lifetime_is_counted_on_the_token_servers_clock(skew: float) -> None:
    """A token server an hour behind (or ahead of) this machine: its 300 s token lasts 300 s here too,
    not 'already expired' (a token fetched per request) nor an hour more."""
    issued = time.time() + skew
    token = _jwt({"iat": int(issued), "exp": int(issued) + 300})
    _, expires_at = parse_token_answer(json.dumps({"token": token, "expires_in": 300}).encode(), now=1000.0)
    assert 1000.0 + 280 <= expires_at <= 1000.0 + 300
    short = _jwt({"iat": int(issued), "exp": int(issued) + 20})  # the token's own exp wins when sooner
    _, expires_at = parse_token_answer(json.dumps({"token": short, "expires_in": 300}).encode(), now=1000.0)
    assert 1000.0 + 10 <= expires_at <= 1000.0 + 20


def test_concurrent_requests_share_one_token_request_and_its_failure() -> None:
    auth = Authenticator("r.example", Credentials("u", "p"), None)
    auth.remember('Bearer realm="https://auth.example/token",service="r"')
    calls: list[str] = []

    async def fetch(url: str, *_: object) -> bytes:
        calls.append(url)
        await asyncio.sleep(0.01)
        if len(calls) == 1:
            raise ProtocolViolation("token server down")
        return json.dumps({"token": f"t{len(calls)}"}).encode()

    async def five() -> list[str | BaseException | None]:
        scopes = ("repository:a:pull",)
        asked = [
            auth.header(scopes, "https://r.example/v2/a/blobs/x", "https://r.example/v2/", fetch) for _ in range(5)
        ]
        return list(await asyncio.gather(*asked, return_exceptions=True))

    first = asyncio.run(five())
    assert len(calls) == 1 and all(isinstance(r, ProtocolViolation) for r in first)  # one request, one failure for all
    assert asyncio.run(five()) == ["Bearer t2"] * 5  # asked again (on another loop), once
    assert len(calls) == 2


@pytest.mark.parametrize(
    ("expires_in", "lifetime"),
    [("3600", 3600.0), (" 300 ", 300.0), ("soon", 60.0), (float("nan"), 60.0), ("NaN", 60.0), (True, 60.0)],
)
def test_an_odd_expires_in_is_a_number_or_the_default(expires_in: object, lifetime: float) -> None:
    """A number written as a string is that many seconds; NaN (which would never count as valid: a token
    asked for per request), text or a boolean is the spec's default."""
    body = json.dumps({"token": "t", "expires_in": expires_in}).encode()
    assert parse_token_answer(body, now=0) == ("t", lifetime - 5.0)


@pytest.mark.parametrize("skew", [-3600.0, 3600.0])
def test_a_jwt_without_iat_from_a_skewed_server_is_not_asked_for_per_request(skew: float) -> None:
    """A JWT without ``iat`` (its ``exp`` read against this machine's clock) from a token server an hour off:
    it looked expired on arrival, so every request asked for a new one. The answer's ``issued_at`` is the
    server's clock; without it, a token fresh from the server that looks expired means the clocks differ and
    ``expires_in`` counts."""
    server_now = time.time() + skew
    token = _jwt({"exp": int(server_now) + 300})
    issued = dt.datetime.fromtimestamp(server_now, dt.UTC).isoformat()
    answer = {"token": token, "issued_at": issued, "expires_in": 3600}
    _, expires_at = parse_token_answer(json.dumps(answer).encode(), now=1000.0)
    assert 1000.0 + 280 <= expires_at <= 1000.0 + 300  # exp - issued_at: its 300 s
    _, expires_at = parse_token_answer(json.dumps({"token": token, "expires_in": 300}).encode(), now=1000.0)
    if skew < 0:  # an exp in this machine's past: expires_in
        assert expires_at == 1000.0 + 295.0
    fetched: list[str] = []

    async def fetch(url: str, *_: object) -> bytes:
        fetched.append(url)
        return json.dumps({"token": token, "expires_in": 300}).encode()

    auth = Authenticator("r.example", Credentials("u", "p"), None)
    auth.remember('Bearer realm="https://auth.example/token",service="r"')

    async def five() -> None:
        for _ in range(5):
            await auth.header(("repository:a:pull",), "https://r.example/v2/a/blobs/x", "https://r.example/v2/", fetch)

    asyncio.run(five())
    assert len(fetched) == 1


def test_a_burst_of_401s_to_one_expired_token_asks_for_one_new_token() -> None:
    """Requests in flight together all come back 401 when their token expires; each dropped whatever was
    cached, the new token the first had just fetched included: a token request per request of the burst."""
    fetched: list[str] = []

    async def fetch(url: str, *_: object) -> bytes:
        fetched.append(url)
        return json.dumps({"token": f"t{len(fetched)}", "expires_in": 300}).encode()

    challenge = 'Bearer realm="https://auth.example/token",service="r",error="invalid_token"'
    scopes = ("repository:a:pull",)
    auth = Authenticator("r.example", Credentials("u", "p"), None)
    auth.remember(challenge)

    async def header() -> str | None:
        return await auth.header(scopes, "https://r.example/v2/a/blobs/x", "https://r.example/v2/", fetch)

    assert asyncio.run(header()) == "Bearer t1"
    auth.rejected(challenge, scopes, "Bearer t1")  # the first of four refused requests
    assert asyncio.run(header()) == "Bearer t2"
    for _ in range(3):  # the other three, each sent t1
        auth.rejected(challenge, scopes, "Bearer t1")
        assert asyncio.run(header()) == "Bearer t2"
    auth.rejected(challenge, scopes, "Bearer t2")  # the new one refused: dropped
    assert asyncio.run(header()) == "Bearer t3"
    assert len(fetched) == 3


def test_the_seed_token_is_fetched_once_for_requests_sent_together_and_after_a_burst_of_401s() -> None:
    fetched: list[str] = []

    async def fetch(url: str, *_: object) -> bytes:
        fetched.append(url)
        await asyncio.sleep(0.01)
        return json.dumps({"token": f"s{len(fetched)}"}).encode()

    auth = Authenticator("reg.example", None, SeedAuth(url="https://auth.example/token", token_type="JWT"))

    async def together() -> list[str | None]:
        asked = [
            auth.header(("repository:a:pull",), "https://reg.example/v2/a/blobs/x", "https://reg.example/v2/", fetch)
            for _ in range(5)
        ]
        return list(await asyncio.gather(*asked))

    assert asyncio.run(together()) == ["JWT s1"] * 5
    assert len(fetched) == 1
    for _ in range(5):
        auth.rejected(None, ("repository:a:pull",), "JWT s1")
    assert asyncio.run(together()) == ["JWT s2"] * 5
    assert len(fetched) == 2


def test_the_token_cache_of_a_long_lived_pool_entry_stays_bounded() -> None:
    """Tokens of repositories worked on long ago went nowhere (a busy pool entry is never closed): past the
    cap the expired ones go first, then the longest kept; the token in use stays."""
    cache = TokenCache()
    ch = Challenge("bearer", {"realm": "r", "service": "s"})
    now = time.monotonic()
    for i in range(3000):  # repositories of long ago: their tokens expired
        cache.put(TokenCache.key(ch, (f"repository:r{i}:pull",)), f"old{i}", now - 1)
    assert len(cache.secrets()) <= 1024
    for i in range(3000):  # more at once than any copy holds: the longest kept go
        cache.put(TokenCache.key(ch, (f"repository:n{i}:pull",)), f"new{i}", now + 10_000)
    assert len(cache.secrets()) <= 1024
    assert cache.get(TokenCache.key(ch, ("repository:n2999:pull",))) == "new2999"


@pytest.mark.parametrize(
    ("came_from", "url", "kept"),
    [
        ("https://auth.example/token", "https://auth.example/v2/token?x=1", True),
        ("http://auth.example/token", "https://auth.example/token", True),  # a proxy's upgrade, default ports
        ("http://auth.example:8080/token", "https://auth.example/token", False),
        ("https://auth.example/token", "https://auth.example:8443/token", False),
        ("https://auth.example/token", "https://login.example/token", False),
        ("https://auth.example/token", "https://auth.example.evil/token", False),
    ],
)
def test_a_token_requests_headers_follow_a_redirect_only_on_its_own_server(
    came_from: str, url: str, kept: bool
) -> None:
    from regcast.registry.request import Call, _hop

    call = Call(
        "GET", came_from, None, {"Authorization": "Basic dTpw"}, None, [("scope", "s")], None, True, True, "auth"
    )
    hop = _hop(call, came_from, url, 302)
    assert (hop.headers == {"Authorization": "Basic dTpw"}) is kept
    assert hop.params is None and hop.url == url  # the Location's query, not the realm's again
    seed = dataclasses.replace(call, json_body={"username": "u", "password": "pw-secret"})
    for status in (307, 308):  # the seed's `json` (credentials) goes on through 307/308 only to its own server
        assert (_hop(seed, came_from, url, status).json_body == seed.json_body) is kept
        assert (_hop(seed, came_from, url, status).headers == call.headers) is kept
    assert _hop(seed, came_from, url, 302).json_body is None


def test_a_token_servers_words_are_scrubbed_before_they_are_cut_short() -> None:
    """A secret straddling the 200th character was cut in two first, and its first part no longer matched."""
    from regcast.registry._transport import oci_error

    pw = "S3cr3t-pa55word-0123456789"
    body = json.dumps({"error": "invalid_grant", "error_description": "x" * 180 + " bad password " + pw}).encode()
    code, message = oci_error(body, (pw,))
    assert code == "invalid_grant"
    assert "S3cr" not in message and "REDACT" in message
    hub = json.dumps({"details": "y" * 190 + pw}).encode()
    assert "S3cr" not in oci_error(hub, (pw,))[1]


def test_the_seed_auth_json_values_count_as_secrets() -> None:
    """The seed's ``json`` body is the credential payload sent to its auth url: a token server echoing it in an
    error must not have it shown."""
    body = {"username": "svc", "password": "pw-secret-42", "grant_type": "password", "x": [1], "k": {"t": "tok9"}}
    seed = SeedAuth(url="https://auth.example/token", json_body=body)
    secrets = Authenticator("reg.example", None, seed).secrets()
    assert "pw-secret-42" in secrets and "tok9" in secrets
    assert "password" not in secrets and "svc" not in secrets  # keys, a grant type, a user: words errors use


@pytest.mark.parametrize(
    "answer",
    [
        b'{"token": "t", "expires_in": Infinity}',
        b'{"token": "t", "expires_in": "1e999"}',
        b'{"token": "t", "expires_in": 1' + b"0" * 400 + b"}",
    ],
    ids=["infinity", "string-1e999", "huge-int"],
)
def test_no_token_is_kept_as_valid_forever(answer: bytes) -> None:
    """A lifetime past a float (an OverflowError out of the registry layer, naming no registry) or infinite
    (a token never refreshed nor evicted) is the 24 h cap."""
    from regcast.registry.auth import MAX_TOKEN_LIFETIME

    assert parse_token_answer(answer, now=0) == ("t", MAX_TOKEN_LIFETIME - 5.0)


def test_a_jwt_whose_exp_is_past_a_float_is_read_by_its_expires_in() -> None:
    head = base64.urlsafe_b64encode(b'{"alg":"none"}').rstrip(b"=").decode()
    body = base64.urlsafe_b64encode(b'{"exp": 1' + b"0" * 400 + b"}").rstrip(b"=").decode()
    token = f"{head}.{body}.sig"
    assert parse_token_answer(json.dumps({"token": token, "expires_in": 300}).encode(), now=0) == (token, 295.0)


def test_a_realm_that_refused_the_oauth2_post_is_posted_to_again_after_a_while(monkeypatch: pytest.MonkeyPatch) -> None:
    """A POST refused (404 during an ingress reload, 405) sends the realm to GET, but not for good: an
    identity-token login cannot pass a GET (docker login's placeholder user), so a pool entry kept on GET
    would fail every later job until the process restarts."""
    from regcast._exceptions import RegistryResponseError
    from regcast.registry import authenticator

    sent: list[str] = []
    refuse = [True]

    async def fetch(
        url: str, headers: object, params: object, body: object, what: str, strict: bool, *form: object
    ) -> bytes:
        sent.append("POST" if form else "GET")
        if form and refuse[0]:
            raise RegistryResponseError("405", registry="r.example", status=405)
        return json.dumps({"token": f"t{len(sent)}", "expires_in": 300}).encode()

    auth = Authenticator("r.example", Credentials("<token>", "", identity_token="idt"), None)
    auth.remember('Bearer realm="https://auth.example/token",service="r"')

    async def token(scope: str) -> str | None:
        return await auth.header((scope,), "https://r.example/v2/a/blobs/x", "https://r.example/v2/", fetch)

    asyncio.run(token("repository:a:pull"))
    asyncio.run(token("repository:b:pull"))
    assert sent == ["POST", "GET", "GET"]  # refused once, then GET while the mark holds
    refuse[0] = False
    real = time.monotonic
    shift = authenticator.GET_ONLY_SECONDS + 1  # the clock moved on, for every reader of it
    monkeypatch.setattr(time, "monotonic", lambda: real() + shift)
    asyncio.run(token("repository:c:pull"))
    assert sent[3:] == ["POST"]


def test_a_get_refused_after_a_refused_post_sends_the_next_token_request_back_to_post() -> None:
    """A 404 during an ingress reload marked the realm GET-only; an identity-token login cannot pass a GET
    (docker login's placeholder user), so the GET's 401 lifts the mark: the next request POSTs again."""
    from regcast._exceptions import RegistryResponseError

    sent: list[str] = []

    async def fetch(
        url: str, headers: object, params: object, body: object, what: str, strict: bool, *form: object
    ) -> bytes:
        sent.append("POST" if form else "GET")
        if form and len(sent) == 1:
            raise RegistryResponseError("404", registry="r.example", status=404)
        if not form:
            raise RegistryResponseError("401", registry="r.example", status=401)
        return json.dumps({"token": "t", "expires_in": 300}).encode()

    auth = Authenticator("r.example", Credentials("<token>", "", identity_token="idt"), None)
    auth.remember('Bearer realm="https://auth.example/token",service="r"')

    async def token(scope: str) -> str | None:
        return await auth.header((scope,), "https://r.example/v2/a/blobs/x", "https://r.example/v2/", fetch)

    with pytest.raises(RegistryResponseError):
        asyncio.run(token("repository:a:pull"))
    assert asyncio.run(token("repository:b:pull")) == "Bearer t"
    assert sent == ["POST", "GET", "POST"]


def test_a_negative_lifetime_past_a_float_is_the_minimum() -> None:
    assert parse_token_answer(b'{"token": "t", "expires_in": -1' + b"0" * 400 + b"}", now=0) == ("t", 55.0)
