"""What a service job costs beside its copy (#17): the POST's source check reuses its connection,
nothing is encrypted when there is nothing secret (the POST's jobs and a mirror run's), and sealed
credentials still work.

Counted where it happens: new TCP connections at a proxy in front of the source registry, and the
``secrets`` column of the job's row.
"""

from __future__ import annotations

import secrets
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import images
from tests.support.proxy import TcpProxy
from tests.support.registry import RegistryServer
from tests.support.service import Service, basicauth, source
from tests.support.verify import assert_same_image


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, ca_bundle: Path) -> Iterator[Service]:
    svc = Service(tmp_path_factory.mktemp("service"), {"REGCAST_CA_BUNDLE": str(ca_bundle)}).start()
    yield svc
    svc.stop()


def _sealed(service: Service, job_id: str) -> bytes | None:
    with sqlite3.connect(service.directory / "regcast.db") as db:
        row = db.execute("SELECT secrets FROM jobs WHERE id = ?", (job_id,)).fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


def test_second_submission_opens_no_connection_to_the_source(
    service: Service, repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    images.image().push(src_reg.http(), repo, "v1")
    proxy = TcpProxy(src_reg.port).start()
    try:
        src = {"endpoint": f"http://127.0.0.1:{proxy.port}/v2", "image": repo, "ref": "v1"}

        def job(dest: str) -> tuple[str, int]:
            opened = proxy.connections
            job_id = service.submit({"source": src, "targets": [{"endpoint": open_reg.endpoint, "image": dest}]})
            assert service.wait(job_id)["value"] == "FINISHED"
            return job_id, proxy.connections - opened

        first, first_connections = job(f"{repo}/a")
        assert first_connections >= 1
        _second, second_connections = job(f"{repo}/b")  # the check's and the job's connections, both kept
        assert second_connections == 0
        assert_same_image(src_reg.http(), repo, "v1", open_reg.http(), f"{repo}/b", "v1")
        assert _sealed(service, first) is None  # no auth, no hook: nothing to encrypt
    finally:
        proxy.stop()


def test_credentials_are_still_sealed_and_used(
    service: Service, repo: str, src_reg: RegistryServer, basic_reg: RegistryServer
) -> None:
    images.image().push(src_reg.http(), repo, "v1")
    auth = basicauth(basic_reg)
    target = {"endpoint": basic_reg.endpoint, "auth": auth}
    job_id = service.submit({"source": source(src_reg, repo), "targets": [target]})
    assert service.wait(job_id)["value"] == "FINISHED"
    sealed = _sealed(service, job_id)
    assert sealed is not None
    assert auth["basicauth"]["password"].encode() not in sealed
    assert_same_image(src_reg.http(), repo, "v1", basic_reg.http(), repo, "v1")


def test_a_mirror_run_without_credentials_stores_no_ciphertext_and_copies_anonymously(
    service: Service, repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    images.image().push(src_reg.http(), repo, "v1")
    name = f"anon-{secrets.token_hex(3)}"
    doc = f"""\
version: 1
mirrors:
  - name: {name}
    source: {src_reg.host}/{repo}
    targets: [{open_reg.host}/{name}]
    tags: {{list: [v1]}}
"""
    r = service.http.post("/api/mirrors", content=doc, headers={"Content-Type": "application/yaml"})
    assert r.status_code == 201, r.text
    r = service.http.post(f"/api/mirrors/{name}/run")
    assert r.status_code == 202, r.text
    run_id = r.json()["id"]
    deadline = time.monotonic() + 120
    run: dict[str, Any] = {}
    while time.monotonic() < deadline and run.get("state") not in ("FINISHED", "FAILED"):
        time.sleep(0.2)
        run = next(x for x in service.http.get(f"/api/mirrors/{name}/runs").json()["runs"] if x["id"] == run_id)
    assert run["state"] == "FINISHED", run
    assert len(run["jobs"]) == 1
    assert _sealed(service, run["jobs"][0]) is None  # no credentials in the document: nothing encrypted
    assert service.status(run["jobs"][0])["value"] == "FINISHED"
    assert_same_image(src_reg.http(), repo, "v1", open_reg.http(), f"{name}/{repo}", "v1")
