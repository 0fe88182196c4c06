"""The outbound policy: every spelling of a forbidden host is seen through, every address checked."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from regcast._exceptions import OutboundRefused
from regcast.registry.guards import AddressRefused, OutboundPolicy, address_problem, canonical_host, url_host

HOSTILE_METADATA_URLS = [
    "http://169.254.169.254/latest",
    "http://0xa9fea9fe/",
    "http://0xA9FEA9FE./",
    "http://0xa9.0xfe.0xa9.0xfe/",
    "http://2852039166/",
    "http://0251.0376.0251.0376/",
    "http://169.254.43518/",
    "http://169\u3002254\u3002169\u3002254/",  # ideographic full stops
    "http://\uff11\uff16\uff19.\uff12\uff15\uff14.\uff11\uff16\uff19.\uff12\uff15\uff14/",  # fullwidth digits
    "http://\uff10xa9fea9fe/",
    "http://metadata.google.internal\u3002/computeMetadata/v1/",  # trailing ideographic full stop
    "http://METADATA.google.internal./",
    "http://\uff4d\uff45\uff54\uff41\uff44\uff41\uff54\uff41.google.internal/",
    "http://[::ffff:169.254.169.254]/",
    "http://[::ffff:a9fe:a9fe]/",
    "http://[64:ff9b::a9fe:a9fe]/",  # NAT64
    "http://[2002:a9fe:a9fe::1]/",  # 6to4
    "http://[fe80::1]/",
    "http://[fd00:ec2::254]/",
    "http://100.100.100.200/",
    "http://0.0.0.0:5000/",
    "http://0/",
    "http://[::]/",
]


@pytest.mark.parametrize("url", HOSTILE_METADATA_URLS)
def test_every_spelling_of_a_forbidden_host_is_refused(url: str) -> None:
    policy = OutboundPolicy()
    assert policy.problem(url) is not None, url
    with pytest.raises(OutboundRefused):
        policy.check_url(url)
    with pytest.raises(OutboundRefused):
        policy.check_url(url, "auth")


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("0xa9fea9fe", "169.254.169.254"),
        ("2852039166", "169.254.169.254"),
        ("0251.0376.0251.0376", "169.254.169.254"),
        ("127.1", "127.0.0.1"),
        ("Registry.Example.", "registry.example"),
        ("[::1]", "::1"),
        ("deadbeef", "deadbeef"),
    ],
)
def test_canonical_host(text: str, canonical: str) -> None:
    assert canonical_host(text) == canonical


def test_url_host_uses_the_http_stacks_idna() -> None:
    assert url_host("https://b\u00fccher.example:8443/v2/") == ("xn--bcher-kva.example", 8443, "https")


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:5000/v2/", "http://[::1]:5000/", "http://10.0.0.8/", "http://localhost/"]
)
def test_loopback_and_private_allowed_unless_blocked(url: str) -> None:
    assert OutboundPolicy().problem(url) is None
    assert "REGCAST_BLOCK_PRIVATE" in (OutboundPolicy(block_private=True).problem(url) or "")


@pytest.mark.parametrize(
    "ip",
    ["169.254.169.254", "::ffff:169.254.169.254", "64:ff9b::a9fe:a9fe", "0.1.2.3", "fe80::1%1", "224.0.0.1"],
)
def test_socket_factory_refuses_the_resolved_address(ip: str) -> None:
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with pytest.raises(AddressRefused, match="refused by the outbound policy"):
        OutboundPolicy().socket_factory((family, socket.SOCK_STREAM, 6, "", (ip, 80)))


def test_socket_factory_allows_loopback_and_refuses_it_when_blocked() -> None:
    sock = OutboundPolicy().socket_factory((socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 80)))
    sock.close()
    with pytest.raises(AddressRefused):
        OutboundPolicy(block_private=True).socket_factory(
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 80))
        )


def test_nat64_of_a_public_address_is_allowed() -> None:
    assert address_problem(ipaddress.ip_address("64:ff9b::808:808")) is None  # 8.8.8.8, text only: no traffic


def test_allow_lists_cover_every_kind_of_request() -> None:
    policy = OutboundPolicy(registries=("reg.example:5000", "*.corp"), auth_hosts=("auth.example",))
    assert policy.problem("http://reg.example:5000/v2/") is None
    assert policy.problem("https://x.corp/v2/") is None
    assert "not in REGCAST_ALLOWED_REGISTRIES" in (policy.problem("https://auth.example/token") or "")
    assert policy.problem("https://auth.example/token", "auth") is None
    assert "or REGCAST_ALLOWED_AUTH_HOSTS" in (policy.problem("https://evil.example/token", "auth") or "")
    assert policy.problem("https://reg.example:5001/v2/") is not None
    assert policy.problem("file:///etc/passwd") is not None
