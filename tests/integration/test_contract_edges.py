"""CONTRACT.md's edges as an outside tester probes them: HEAD, trailing slashes, tag+digest references.

A real ``regcast serve`` and the real ``regcast`` executable against real registries.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import images
from tests.support.registry import RegistryServer
from tests.support.service import Service, source

UNKNOWN_JOB = '{"status": "error", "msg": "job with id not found"}'


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    svc = Service(tmp_path_factory.mktemp("service")).start()
    yield svc
    svc.stop()


def test_head_answers_as_get_without_a_body(
    service: Service, repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    """The seed (Flask) answered HEAD on every GET route; FastAPI alone answers 405."""
    images.image().push(src_reg.http(), repo, "v1")
    job_id = service.submit({"source": source(src_reg, repo), "targets": [{"endpoint": open_reg.endpoint}]})
    service.wait(job_id)
    got = service.http.get(f"/api/distribute/image/{job_id}")
    head = service.http.head(f"/api/distribute/image/{job_id}")
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-type"] == "application/json"
    assert head.headers["content-length"] == got.headers["content-length"]
    missing = service.http.head("/api/distribute/image/no-such-job")
    assert missing.status_code == 404
    assert missing.headers["content-length"] == str(len(UNKNOWN_JOB))
    assert service.http.head("/healthz").status_code == 200


def test_a_trailing_slash_names_the_same_route(
    service: Service, repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    """No 307 to an absolute URL (a POST behind a proxy does not survive it): the route answers."""
    images.image().push(src_reg.http(), repo, "v1")
    body = {"source": source(src_reg, repo), "targets": [{"endpoint": open_reg.endpoint}]}
    r = service.http.post("/api/distribute/image/", json=body)
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    service.wait(job_id)
    slash = service.http.get(f"/api/distribute/image/{job_id}/")
    assert slash.status_code == 200
    assert slash.json()["value"] == "FINISHED"
    missing = service.http.get("/api/distribute/image/no-such-job/")
    assert missing.status_code == 404
    assert missing.text == UNKNOWN_JOB
