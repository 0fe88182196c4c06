from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from regcast._exceptions import InvalidReference
from regcast.registry.reference import (
    Endpoint,
    Reference,
    endpoint_for_registry,
    is_loopback,
    parse_endpoint,
    parse_reference,
)

D = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("alpine", Reference("docker.io", "library/alpine", "latest")),
        ("alpine:3.20", Reference("docker.io", "library/alpine", "3.20")),
        ("docker.io/alpine", Reference("docker.io", "library/alpine", "latest")),
        ("index.docker.io/user/app:v1", Reference("docker.io", "user/app", "v1")),
        ("user/app", Reference("docker.io", "user/app", "latest")),
        ("localhost/app", Reference("localhost", "app", "latest")),
        ("localhost:5000/a/b/c:t", Reference("localhost:5000", "a/b/c", "t")),
        ("127.0.0.1:5000/a:b", Reference("127.0.0.1:5000", "a", "b")),
        ("ghcr.io/org/img@" + D, Reference("ghcr.io", "org/img", None, D)),
        ("ghcr.io/org/img:v1@" + D, Reference("ghcr.io", "org/img", "v1", D)),
        ("[::1]:5000/x:y", Reference("[::1]:5000", "x", "y")),
        ("reg.example:443/a.b/c__d/e-f:1.0_rc", Reference("reg.example:443", "a.b/c__d/e-f", "1.0_rc")),
    ],
)
def test_parse_reference(text: str, expected: Reference) -> None:
    assert parse_reference(text) == expected


def test_dst_without_tag_keeps_none() -> None:
    assert parse_reference("reg.example/a", default_tag=None).tag is None


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "UPPER/case",
        "a//b",
        "a/b:",
        "a/b:-x",
        "a@sha256:abc",
        "a@md5:" + "a" * 32,
        "http://reg/a",
        "reg.example/a/",
        "a/b:" + "x" * 129,
        "a/../b",
        "reg:99999999/a",
    ],
)
def test_parse_reference_rejects(bad: str) -> None:
    with pytest.raises(InvalidReference):
        parse_reference(bad)


@pytest.mark.parametrize(
    ("url", "endpoint"),
    [
        ("http://127.0.0.1:5000/v2", Endpoint("http", "127.0.0.1:5000")),
        ("https://reg.example/v2/", Endpoint("https", "reg.example")),
        ("https://reg.example", Endpoint("https", "reg.example")),
        ("https://reg.example/prefix/v2", Endpoint("https", "reg.example", "/prefix")),
        ("https://docker.io/v2", Endpoint("https", "registry-1.docker.io")),
    ],
)
def test_parse_endpoint(url: str, endpoint: Endpoint) -> None:
    assert parse_endpoint(url) == endpoint
    assert parse_endpoint(url).base.endswith("/v2/")


@pytest.mark.parametrize(
    "bad",
    [
        "ftp://x/v2",
        "reg.example/v2",
        "https://user:pw@reg/v2",
        "https:///v2",
        "https://reg/v2?x=1",
        "https://reg bad/v2",
    ],
)
def test_parse_endpoint_rejects(bad: str) -> None:
    with pytest.raises(InvalidReference):
        parse_endpoint(bad)


def test_loopback_and_scheme_choice() -> None:
    assert is_loopback("localhost:5000")
    assert is_loopback("127.0.0.5")
    assert is_loopback("[::1]:80")
    assert not is_loopback("10.0.0.1:5000")
    assert not is_loopback("reg.example")
    assert endpoint_for_registry("docker.io").host == "registry-1.docker.io"
    assert endpoint_for_registry("127.0.0.1:5000").fallback_http
    assert not endpoint_for_registry("reg.example").fallback_http
    assert endpoint_for_registry("reg.example", tls_verify=False).fallback_http


@given(st.text(max_size=300))
def test_parse_reference_never_crashes(text: str) -> None:
    try:
        ref = parse_reference(text)
    except InvalidReference:
        return
    assert ref.repository
    assert "/" not in ref.ref.replace("sha256:", "")


@given(
    st.from_regex(r"[a-z0-9]{1,10}(/[a-z0-9]{1,10}){0,3}", fullmatch=True),
    st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,20}", fullmatch=True),
)
def test_round_trip(path: str, tag: str) -> None:
    ref = parse_reference(f"reg.example:5000/{path}:{tag}")
    assert parse_reference(str(ref)) == ref


@pytest.mark.parametrize(
    "text", ["docker-archive:app.tar", "containers-storage:app", "docker-daemon:app:1", "dir:/tmp/x", "ostree:/r"]
)
def test_other_skopeo_transports_are_named_not_taken_for_docker_hub(text: str) -> None:
    # docker-archive:app.tar was docker.io/library/docker-archive:app.tar: a copy to Docker Hub
    with pytest.raises(InvalidReference, match=f"{text.split(':')[0]}: is not supported"):
        parse_reference(text)
    assert parse_reference("dir/app:1").repository == "dir/app"


@pytest.mark.parametrize("text", ["dir:1.0", "sif:latest", "tarball:v2@" + "sha256:" + "a" * 64, "ostree"])
def test_a_short_transport_name_followed_by_a_tag_is_a_docker_hub_image(text: str) -> None:
    # docker pull dir:1.0 is docker.io/library/dir:1.0; only dir:/path is skopeo's directory transport
    assert parse_reference(text).registry == "docker.io"
    with pytest.raises(InvalidReference, match="dir: is not supported"):
        parse_reference("dir:/tmp/x")
    with pytest.raises(InvalidReference, match="sif: is not supported"):
        parse_reference("sif:./image.sif")


@pytest.mark.parametrize("text", ["dir:5000/app:1", "docker-daemon:5000/x:1", "tarball:443/a/b"])
def test_a_host_named_like_a_transport_with_a_port_is_a_registry(text: str) -> None:
    ref = parse_reference(text)
    assert ref.registry == text.split("/", 1)[0]


@pytest.mark.parametrize(
    "bad",
    [
        "ftp://bob:Pw0rdLeak@reg/v2",
        "http://bob:Pw0rdLeak@[::1/v2",  # urlsplit refuses it: the echo is all the user gets
        "bob:Pw0rdLeak@reg.example:5000/v2",
        "https://bob:Pw0rdLeak@reg/v2?x=1",
        "http://bob:Pw0rdLeak@reg/v2",
    ],
)
def test_an_endpoint_with_a_password_is_refused_without_echoing_it(bad: str) -> None:
    with pytest.raises(InvalidReference) as info:
        parse_endpoint(bad)
    assert "Pw0rdLeak" not in str(info.value)
    assert "bob" not in str(info.value)


def test_a_reference_written_as_a_url_with_a_password_is_refused_without_echoing_it() -> None:
    with pytest.raises(InvalidReference) as info:
        parse_reference("https://bob:Pw0rdLeak@reg.example/team/app:v1")
    assert "Pw0rdLeak" not in str(info.value)
    assert "https://***@reg.example/team/app:v1" in str(info.value)
