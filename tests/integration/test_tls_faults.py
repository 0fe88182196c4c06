"""Certificates that must not be trusted (an unknown CA, expired, issued for another name): with verification on,
one line naming the registry and why, through the CLI and a job, and never a retry (trying again cannot help)."""

from __future__ import annotations

import datetime as dt
import ssl
from pathlib import Path

import pytest
import trustme

from tests.support import images
from tests.support.cli import regcast
from tests.support.hostile import HostileServer, registry_serving, serve
from tests.support.registry import RegistryServer
from tests.support.service import Service

PAST = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
WHY = {
    "unknown-ca": "unable to get local issuer certificate",
    "expired": "certificate has expired",
    "other-name": "IP address mismatch, certificate is not valid for '127.0.0.1'.",
}


def tls_server(hostile: list[HostileServer], trusted: trustme.CA, fault: str) -> HostileServer:
    """A registry over HTTPS whose certificate has ``fault``; ``trusted`` is the CA the client trusts."""
    if fault == "unknown-ca":
        cert = trustme.CA().issue_cert("127.0.0.1")
    elif fault == "expired":
        cert = trusted.issue_cert("127.0.0.1", not_before=PAST, not_after=PAST + dt.timedelta(days=30))
    else:
        cert = trusted.issue_cert("registry.example")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    return serve(hostile, registry_serving({}), tls=context)


def untrusted_line(server: HostileServer, fault: str) -> str:
    return (
        f"registry 127.0.0.1:{server.port}: GET {server.url}/v2/: TLS certificate not trusted "
        f"([SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: {WHY[fault]} (_ssl.c:"
    )


@pytest.mark.parametrize("fault", sorted(WHY))
def test_an_untrusted_certificate_ends_the_cli_copy_in_one_line(
    fault: str, hostile: list[HostileServer], ca: tuple[trustme.CA, Path], open_reg: RegistryServer
) -> None:
    authority, bundle = ca
    src = tls_server(hostile, authority, fault)
    r = regcast("copy", "--ca-bundle", str(bundle), f"127.0.0.1:{src.port}/a/b:v1", f"{open_reg.host}/a/tls-{fault}")
    assert r.returncode == 1
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {untrusted_line(src, fault)}"), r.stderr
    assert "Traceback" not in r.stderr
    assert src.seen == []  # no request went over the refused connection, and no fallback to plain HTTP


@pytest.mark.parametrize("fault", ["expired"])
def test_a_job_target_with_an_untrusted_certificate_fails_alone_at_once(
    fault: str,
    tmp_path: Path,
    hostile: list[HostileServer],
    ca: tuple[trustme.CA, Path],
    repo: str,
    src_reg: RegistryServer,
    open_reg: RegistryServer,
) -> None:
    authority, bundle = ca
    images.image().push(src_reg.http(), repo, "v1")
    bad = tls_server(hostile, authority, fault)
    svc = Service(tmp_path, {"REGCAST_CA_BUNDLE": str(bundle)}).start()
    try:
        job = svc.submit(
            {
                "source": {"endpoint": src_reg.endpoint, "image": repo, "ref": "v1"},
                "targets": [{"endpoint": f"{bad.url}/v2"}, {"endpoint": open_reg.endpoint}],
            }
        )
        st = svc.wait(job)
    finally:
        svc.stop()
    assert st["value"] == "FAILED"
    failed, done = st["targets"]
    assert done["state"] == "FINISHED"
    assert failed["state"] == "FAILED" and failed["error"].startswith(untrusted_line(bad, fault))
    assert failed["attempts"] == 1 and failed["retries"] == 0  # permanent: neither the request nor the job again
    assert bad.seen == []
