"""TLS trust (registry/tls.py): one context per bundle, system CAs read on first use, aiohttp's own left empty."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
import trustme

from regcast.registry.tls import Trust, trust


def test_ca_bundle_adds_to_the_system_cas(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    system, extra = trustme.CA(), trustme.CA()
    system_file, extra_file = tmp_path / "system.pem", tmp_path / "extra.pem"
    system.cert_pem.write_to_path(str(system_file))
    extra.cert_pem.write_to_path(str(extra_file))
    monkeypatch.setenv("SSL_CERT_FILE", str(system_file))  # what the system store holds here
    ctx = trust(str(extra_file))
    assert isinstance(ctx, ssl.SSLContext)
    assert ctx.verify_mode is ssl.CERT_REQUIRED
    assert ctx.check_hostname
    assert len(ctx.get_ca_certs()) == 2  # the system's CA and the bundle's, not the bundle's alone


def test_one_context_per_bundle_version(tmp_path: Path) -> None:
    """Clients share the context (the CA file is read once), until the bundle file changes."""
    bundle = tmp_path / "extra.pem"
    trustme.CA().cert_pem.write_to_path(str(bundle))
    first = trust(str(bundle))
    assert trust(str(bundle)) is first
    assert trust(None) is trust(None)
    assert trust(None) is not first
    trustme.CA().cert_pem.write_to_path(str(bundle), append=True)  # rotated: another size
    assert trust(str(bundle)) is not first
    with pytest.raises(FileNotFoundError):  # a missing bundle fails when the client opens, as before
        trust(str(tmp_path / "missing.pem"))


@pytest.mark.parametrize(
    "module",
    [
        "regcast.registry._transport",
        "regcast.registry.blobs",
        "regcast.registry.client",
        "regcast.registry.limits",
        "regcast.registry.manifests",
        "regcast.registry.request",
        "regcast.registry.session",
        "regcast.ops.notify",
    ],
)
def test_aiohttp_is_imported_without_reading_the_ca_file(module: str) -> None:
    """Whichever module brings aiohttp in first, its import-time contexts read no CA file (~21 ms each)
    and the system's CAs are not read before a TLS connection needs them."""
    code = (
        f"import {module}, aiohttp.connector as c, regcast.registry.tls as t; "
        "print(c._SSL_CONTEXT_VERIFIED.cert_store_stats()['x509_ca'], "
        "t.trust(None)._system_loaded, t.trust(None).cert_store_stats()['x509_ca'] > 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["0", "False", "True"]


def test_no_module_imports_aiohttp_but_through_tls() -> None:
    """A module importing aiohttp itself, if imported first, would bring back its two CA file reads."""
    src = Path(__file__).resolve().parents[2] / "src" / "regcast"
    direct = [
        f"{path.relative_to(src)}: {line}"
        for path in src.rglob("*.py")
        if path.name != "tls.py"
        for line in path.read_text().splitlines()
        if line.startswith(("import aiohttp", "from aiohttp"))  # indented ones: TYPE_CHECKING blocks
    ]
    assert direct == []


PLAIN_HTTP_ANSWER = b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"


async def _serve_and_connect(ctx: ssl.SSLContext, server_ssl: ssl.SSLContext | None) -> None:
    """One connection from ``ctx`` (as aiohttp makes it: asyncio's SSL protocol over a memory BIO) to a
    loopback server speaking TLS with ``server_ssl``, or plain HTTP (distribution's answer to a ClientHello)."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if server_ssl is None:
            await reader.read(1)
            writer.write(PLAIN_HTTP_ANSWER)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=server_ssl)
    port = server.sockets[0].getsockname()[1]
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="localhost")
        writer.close()
    finally:
        server.close()


def _server_context(ca: trustme.CA) -> ssl.SSLContext:
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server)
    return server


def _system_store(monkeypatch: pytest.MonkeyPatch, cafile: Path, capath: Path) -> Trust:
    """A fresh context whose system CAs are ``cafile`` and the hashed directory ``capath`` (as OpenSSL reads them)."""
    monkeypatch.setenv("SSL_CERT_FILE", str(cafile))
    monkeypatch.setenv("SSL_CERT_DIR", str(capath))
    return Trust(ssl.PROTOCOL_TLS_CLIENT)


def test_an_https_attempt_at_plain_http_reads_no_ca(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The HTTPS attempt at a loopback registry (as docker does) fails on its first answer: no CA read (~21 ms)."""
    ca_file = tmp_path / "system.pem"
    trustme.CA().cert_pem.write_to_path(str(ca_file))
    ctx = _system_store(monkeypatch, ca_file, tmp_path)
    with pytest.raises(ssl.SSLError):
        asyncio.run(_serve_and_connect(ctx, None))
    assert not ctx._system_loaded
    assert ctx.cert_store_stats()["x509_ca"] == 1  # a look at the store still reads them


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_system_cas_are_read_when_a_certificate_comes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version: ssl.TLSVersion
) -> None:
    """A server certificate from a system CA verifies; one from an unknown CA is refused, as before."""
    system, unknown = trustme.CA(), trustme.CA()
    ca_file = tmp_path / "system.pem"
    system.cert_pem.write_to_path(str(ca_file))
    ctx = _system_store(monkeypatch, ca_file, tmp_path)
    ctx.maximum_version = version
    asyncio.run(_serve_and_connect(ctx, _server_context(system)))
    assert ctx._system_loaded
    fresh = _system_store(monkeypatch, ca_file, tmp_path)
    fresh.maximum_version = version
    with pytest.raises(ssl.SSLCertVerificationError):
        asyncio.run(_serve_and_connect(fresh, _server_context(unknown)))


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl rehash makes the hashed links")
def test_a_ca_in_the_hashed_directory_verifies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SSL_CERT_DIR (OpenSSL's lookup by subject hash, read at verification) is part of the system CAs."""
    system, unknown = trustme.CA(), trustme.CA()
    capath, empty = tmp_path / "certs", tmp_path / "empty.pem"
    capath.mkdir()
    empty.write_text("")
    system.cert_pem.write_to_path(str(capath / "system.pem"))
    subprocess.run(["openssl", "rehash", str(capath)], check=True, capture_output=True)
    assert any(p.suffix == ".0" for p in capath.iterdir())
    asyncio.run(_serve_and_connect(_system_store(monkeypatch, empty, capath), _server_context(system)))
    with pytest.raises(ssl.SSLCertVerificationError):
        asyncio.run(_serve_and_connect(_system_store(monkeypatch, empty, capath), _server_context(unknown)))
