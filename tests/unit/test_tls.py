"""TLS trust (registry/tls.py): one context per bundle, system CAs read on first use, aiohttp's own left empty."""

from __future__ import annotations

import ssl
import subprocess
import sys
from pathlib import Path

import pytest
import trustme

from regcast.registry.tls import trust


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
