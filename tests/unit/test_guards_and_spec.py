from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from regcast._exceptions import InvalidInput, OutboundRefused, ProtocolViolation
from regcast.jobs.spec import DistributeRequest, describe_validation, parse_request
from regcast.registry.auth import TokenCache
from regcast.registry.guards import check_followed_url, check_registry_allowed, is_metadata_address


@pytest.mark.parametrize(
    "host",
    [
        "169.254.169.254",
        "[fe80::1]",
        "fd00:ec2::254",
        "metadata.google.internal",
        "::ffff:169.254.169.254",
        "100.100.100.200",
    ],
)
def test_metadata_addresses(host: str) -> None:
    assert is_metadata_address(host)


@pytest.mark.parametrize("host", ["127.0.0.1", "10.1.2.3", "registry.example", "::1", None, ""])
def test_ordinary_addresses(host: str | None) -> None:
    assert not is_metadata_address(host)


def test_followed_urls() -> None:
    ok = check_followed_url("https://s3.example/x?sig=1", came_from="https://reg/v2/", registry="reg", what="redirect")
    assert ok.startswith("https://s3.example")
    for bad, origin in [
        ("http://s3.example/x", "https://reg/v2/"),
        ("http://169.254.169.254/", "http://reg/v2/"),
        ("file:///etc/passwd", "http://reg/v2/"),
        ("gopher://x/", "http://reg/"),
    ]:
        with pytest.raises((ProtocolViolation, OutboundRefused)):
            check_followed_url(bad, came_from=origin, registry="reg", what="redirect")


def test_allow_list() -> None:
    check_registry_allowed("reg.example:5000", ())
    check_registry_allowed("reg.example:5000", ("*.example:5000",))
    check_registry_allowed("ghcr.io", ("ghcr.io", "*.internal"))
    check_registry_allowed("a.b.internal:443", ("*.internal",))
    for host, patterns in [("evil.example", ("ghcr.io",)), ("169.254.169.254", ()), ("ghcr.io.evil", ("ghcr.io",))]:
        with pytest.raises(InvalidInput):
            check_registry_allowed(host, patterns)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda c: (
        st.lists(c, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "source",
                    "targets",
                    "endpoint",
                    "image",
                    "ref",
                    "auth",
                    "basicauth",
                    "user",
                    "password",
                    "overwrite",
                    "verify_tls",
                    "platforms",
                    "url",
                    "token_type",
                    "header",
                    "json",
                    "x",
                ]
            ),
            c,
            max_size=6,
        )
    ),
    max_leaves=25,
)


@settings(max_examples=300)
@given(json_values)
def test_request_schema_rejects_cleanly(doc: object) -> None:
    """Any JSON: either a valid request or a ValidationError whose message names a field."""
    try:
        DistributeRequest.model_validate(doc)
    except ValidationError as exc:
        msg = describe_validation(exc)
        assert msg
        assert ":" in msg
        assert "\n" not in msg


def test_public_part_has_no_credentials() -> None:
    req = DistributeRequest.model_validate(
        {
            "source": {
                "endpoint": "http://r/v2",
                "image": "a",
                "ref": "v1",
                "auth": {"basicauth": {"user": "u", "password": "Sekr1t-pw"}},
            },
            "targets": [
                {
                    "endpoint": "https://t/v2",
                    "auth": {
                        "url": "https://t/token",
                        "header": {"X-Key": "Sekr1t-hdr"},
                        "json": {"secret": "Sekr1t-json"},
                    },
                }
            ],
        }
    )
    public = json.dumps(req.public())
    assert "Sekr1t" not in public
    assert '"auth": true' in public
    assert "Sekr1t-hdr" in json.dumps(req.sealed_auth())


@pytest.mark.parametrize(("asked", "chosen"), [(None, None), ("", None), (True, True), (False, False)])
def test_a_job_chooses_its_spool_or_leaves_it_to_the_process(asked: object, chosen: bool | None) -> None:
    body = {"source": {"endpoint": "http://r/v2", "image": "a", "ref": "v1"}, "targets": [{"endpoint": "http://t/v2"}]}
    req, warnings = parse_request({**body, "spool": asked})
    assert req.spool is chosen and warnings == []
    assert req.public().get("spool", None) is chosen
    assert "spool" not in parse_request(body)[0].public()  # a request without it is stored as before
    with pytest.raises(InvalidInput, match=r"^spool: Input should be a valid boolean"):
        parse_request({**body, "spool": "perhaps"})


def test_an_identity_token_is_credentials_sealed_and_never_public() -> None:
    """A mirror job's Docker config ``identitytoken`` (ACR) travels in the sealed auth block only."""
    auth = {"basicauth": {"user": "00000000-0000-0000-0000-000000000000", "identitytoken": "refresh-secret"}}
    body = {"source": {"endpoint": "https://a.example/v2", "image": "x", "ref": "v1", "auth": auth}}
    request, warnings = parse_request({**body, "targets": [{"endpoint": "https://b.example/v2"}]})
    assert warnings == []
    assert request.source.auth is not None
    creds = request.source.auth.credentials()
    assert creds is not None
    assert creds.identity_token == "refresh-secret"
    assert request.sealed_auth()["source"]["basicauth"]["identitytoken"] == "refresh-secret"
    assert "refresh-secret" not in json.dumps(request.public())
    assert "refresh-secret" not in repr(request)


def test_a_request_printed_shows_no_password_token_header_or_json_body() -> None:
    """Whatever prints a parsed job request (a log line, an exception's repr) shows none of its secrets."""
    basic = {"basicauth": {"user": "u", "password": "pw-secret-1"}}
    token = {
        "url": "https://auth.example/token?api_key=url-secret-4",
        "header": {"Authorization": "Basic hdr-secret-2"},
        "json": {"k": "json-secret-3"},
    }
    body = {
        "source": {"endpoint": "https://a.example/v2", "image": "x", "ref": "v1", "auth": basic},
        "targets": [{"endpoint": "https://b.example/v2", "auth": token}],
        "notify": {"url": "https://hooks.example/services/hook-secret-5", "secret": "sign-secret-6"},
    }
    request, _warnings = parse_request(body)
    auth = request.targets[0].auth
    assert auth is not None
    seed_auth = auth.seed_auth()
    cache = TokenCache()
    cache.put(("realm", "svc", ()), "token-secret-7", 1e18)
    shown = repr(request) + str(request) + repr(seed_auth) + repr(cache)
    for secret in ("pw-secret-1", "hdr-secret-2", "json-secret-3", "url-secret-4", "hook-secret-5", "sign-secret-6"):
        assert secret not in shown
    assert "token-secret-7" not in shown


@pytest.mark.parametrize("endpoint", ["ftp://bob:Pw0rdLeak@reg/v2", "bob:Pw0rdLeak@reg.example:5000/v2"])
def test_a_400_for_an_endpoint_with_a_password_does_not_echo_it(endpoint: str) -> None:
    raw = {"source": {"endpoint": endpoint, "image": "a", "ref": "v1"}, "targets": [{"endpoint": "http://r/v2"}]}
    with pytest.raises(InvalidInput) as info:
        parse_request(raw)
    assert str(info.value).startswith("source.endpoint: invalid endpoint URL '")
    assert "Pw0rdLeak" not in str(info.value)
