"""CONTRACT.md's edges as an outside tester probes them: HEAD, trailing slashes, tag+digest references.

A real ``regcast serve`` and the real ``regcast`` executable against real registries.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import images
from tests.support.cli import regcast
from tests.support.registries import Registries
from tests.support.registry import RegistryServer
from tests.support.service import Service, source

REF_NAME = "org.opencontainers.image.ref.name"
UNKNOWN_JOB = '{"msg":"job with id not found","status":"error"}\n'  # the seed's Flask jsonify layout


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    svc = Service(tmp_path_factory.mktemp("service")).start()
    yield svc
    svc.stop()


@pytest.fixture(scope="module")
def v6_reg(registries: Registries) -> RegistryServer:
    """A registry listening on IPv6 loopback only: reached as [::1]:port."""
    return registries.open("ipv6", address="::1")


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


def test_a_source_with_tag_and_digest_lands_under_its_tag(
    repo: str, src_reg: RegistryServer, open_reg: RegistryServer, tmp_path: Path
) -> None:
    """``app:v1@sha256:...`` is read by digest; a DST without tag or digest keeps the source's tag (v1)."""
    img = images.image().push(src_reg.http(), repo, "v1")
    src = f"{src_reg.host}/{repo}:v1@{img.digest}"
    layout = tmp_path / "layout"
    r = regcast("copy", src, f"{open_reg.host}/{repo}", f"oci:{layout}")
    assert r.returncode == 0, r.stderr
    assert open_reg.http().get_manifest(repo, "v1").content == img.root.raw
    assert any(line.startswith(f"ok {open_reg.host}/{repo}:v1 {img.digest} ") for line in r.stdout.splitlines())
    index = json.loads((layout / "index.json").read_text())
    assert [(e["digest"], e["annotations"][REF_NAME]) for e in index["manifests"]] == [(img.digest, "v1")]


def test_a_target_with_tag_and_digest_is_pushed_to_its_tag_when_the_digest_matches(
    repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    img = images.image().push(src_reg.http(), repo, "v1")
    other = images.image().push(src_reg.http(), repo, "v2")
    ok = regcast("copy", f"{src_reg.host}/{repo}@{img.digest}", f"{open_reg.host}/{repo}:pinned@{img.digest}")
    assert ok.returncode == 0, ok.stderr
    assert open_reg.http().get_manifest(repo, "pinned").content == img.root.raw
    wrong = regcast("copy", f"{src_reg.host}/{repo}:v2", f"{open_reg.host}/{repo}:other@{img.digest}")
    assert wrong.returncode == 2
    assert "its digest must be the one SRC names" in wrong.stderr
    assert "Traceback" not in wrong.stderr
    assert open_reg.http().get_manifest(repo, "other").status_code == 404
    assert open_reg.http().get_manifest(repo, other.digest).status_code == 404


def test_unknown_routes_and_methods_answer_seed_style(service: Service) -> None:
    r = service.http.get("/api/no-such-route")
    assert r.status_code == 404
    assert r.text == '{"msg":"Not Found","status":"error"}\n'
    r = service.http.put("/api/distribute/image", json={})
    assert r.status_code == 405
    assert r.text == '{"msg":"Method Not Allowed","status":"error"}\n'
    assert r.headers["allow"] == "GET, HEAD, OPTIONS, POST"  # every route at the path, not the first one's
    # the seed's Flask answered OPTIONS on every route: 200, no body, its methods (FastAPI: 405)
    for path, allow in [
        ("/api/distribute/image", "GET, HEAD, OPTIONS, POST"),
        ("/api/distribute/image/", "GET, HEAD, OPTIONS, POST"),
        (f"/api/distribute/image/{uuid.uuid4()}", "DELETE, GET, HEAD, OPTIONS"),
        ("/api/mirrors", "GET, HEAD, OPTIONS, POST"),
    ]:
        r = service.http.options(path)
        assert (r.status_code, r.content, r.headers["allow"]) == (200, b"", allow), path
    assert service.http.options("/api/no-such-route").status_code == 404


def test_ipv6_loopback_registries_by_cli_and_api(
    service: Service, repo: str, src_reg: RegistryServer, open_reg: RegistryServer, v6_reg: RegistryServer
) -> None:
    """``[::1]:port`` in a reference and in a seed endpoint: plain HTTP (loopback), digests unchanged."""
    img = images.image(oci=True).push(src_reg.http(), repo, "v1")
    to6 = regcast("copy", f"{src_reg.host}/{repo}:v1", f"{v6_reg.host}/{repo}")
    assert to6.returncode == 0, to6.stderr
    assert v6_reg.host.startswith("[::1]:")
    assert v6_reg.http().get_manifest(repo, "v1").content == img.root.raw
    back = regcast("copy", f"{v6_reg.host}/{repo}:v1", f"{open_reg.host}/{repo}/from6")
    assert back.returncode == 0, back.stderr
    assert open_reg.http().get_manifest(f"{repo}/from6", "v1").content == img.root.raw
    endpoint = f"http://{v6_reg.host}/v2"
    job_id = service.submit(
        {"source": {"endpoint": endpoint, "image": repo, "ref": "v1"}, "targets": [{"endpoint": endpoint, "ref": "v2"}]}
    )
    status = service.wait(job_id)
    assert status["value"] == "FINISHED", status
    assert status["finished_endpoints"] == [endpoint]
    assert v6_reg.http().get_manifest(repo, "v2").content == img.root.raw


def test_uppercase_repository_names_are_refused_before_any_request(
    service: Service, repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    images.image().push(src_reg.http(), repo, "v1")
    body = {"source": source(src_reg, repo), "targets": [{"endpoint": open_reg.endpoint, "image": "Team/App"}]}
    r = service.http.post("/api/distribute/image", json=body)
    assert r.status_code == 400
    assert r.json()["msg"].startswith("Failed to parse data: targets.0.image: invalid repository name 'Team/App'")
    body = {"source": source(src_reg, repo.upper()), "targets": [{"endpoint": open_reg.endpoint}]}
    r = service.http.post("/api/distribute/image", json=body)
    assert r.status_code == 400
    assert r.json()["msg"].startswith("Failed to parse data: source.image: invalid repository name")
    cli = regcast("copy", f"{src_reg.host}/{repo}:v1", f"{open_reg.host}/{repo}/Upper")
    assert cli.returncode == 2
    assert "invalid repository name" in cli.stderr
    assert "Traceback" not in cli.stderr
    assert open_reg.http().get_manifest(repo, "v1").status_code == 404


@pytest.mark.parametrize(
    ("raw", "msg"),
    [
        (b'"a string"', "body: Input should be an object"),
        (b'{"source": null, "targets": [{"endpoint": "http://127.0.0.1:1/v2"}]}', "source: Input should be an object"),
        (b'{"source": {}, "targets": ["http://127.0.0.1:1/v2"]}', "source.endpoint: missing field"),
        (
            b'{"source": {"endpoint": "http://127.0.0.1:1/v2", "image": "a", "ref": "v1"}, "targets": [7]}',
            "targets.0: Input should be an object",
        ),
    ],
)
def test_a_body_of_the_wrong_shape_names_the_field_in_json_terms(service: Service, raw: bytes, msg: str) -> None:
    """Not pydantic's class names (``instance of SourceIn``): the user wrote JSON."""
    r = service.http.post("/api/distribute/image", content=raw)
    assert r.status_code == 400
    assert r.json() == {"status": "error", "msg": f"Failed to parse data: {msg}"}


def test_platform_with_the_default_variant_finds_a_buildx_entry_without_one(
    repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    """buildx lists ``linux/arm64``; users (and docker's own images) say ``linux/arm64/v8``: the same platform."""
    img = images.multi_platform(platforms=("linux/amd64", "linux/arm64")).push(src_reg.http(), repo, "v1")
    arm = img.children[1]
    r = regcast("copy", "--platform", "linux/arm64/v8", f"{src_reg.host}/{repo}:v1", f"{open_reg.host}/{repo}")
    assert r.returncode == 0, r.stderr
    assert open_reg.http().get_manifest(repo, "v1").content == arm.raw


def test_submit_sends_the_tag_of_a_source_with_tag_and_digest(
    service: Service, repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    """``regcast submit`` reads references as ``regcast copy`` does."""
    img = images.image().push(src_reg.http(), repo, "v1")
    src = f"{src_reg.host}/{repo}:v1@{img.digest}"
    r = regcast("submit", "--server", service.url, "--wait", src, f"{open_reg.host}/{repo}")
    assert r.returncode == 0, r.stderr
    assert open_reg.http().get_manifest(repo, "v1").content == img.root.raw
    pinned = regcast("submit", "--server", service.url, "--wait", src, f"{open_reg.host}/{repo}:p@{img.digest}")
    assert pinned.returncode == 0, pinned.stderr
    assert open_reg.http().get_manifest(repo, "p").content == img.root.raw
    other = images.image().push(src_reg.http(), repo, "v2")
    wrong = regcast(
        "submit", "--server", service.url, f"{src_reg.host}/{repo}:v2", f"{open_reg.host}/{repo}:w@{img.digest}"
    )
    assert wrong.returncode == 2
    assert "its digest must be the one SRC names" in wrong.stderr
    assert open_reg.http().get_manifest(repo, other.digest).status_code == 404


def test_a_planned_dry_run_reports_ok_only_when_every_image_is_already_everywhere(
    service: Service, repo: str, src_reg: RegistryServer, open_reg: RegistryServer, tmp_path: Path
) -> None:
    """``POST /api/mirrors/plan``: ``ok`` as ``regcast sync --dry-run --json`` says it (was always false)."""
    images.image().push(src_reg.http(), repo, "v1")
    doc = f"version: 1\nmirrors:\n  - name: app\n    source: {src_reg.host}/{repo}\n    targets: [{open_reg.host}/m]\n"
    path = tmp_path / "mirrors.yaml"
    path.write_text(doc)
    headers = {"Content-Type": "application/yaml"}
    before = service.http.post("/api/mirrors/plan", content=doc, headers=headers)
    assert before.status_code == 200, before.text
    assert before.json()["totals"]["copy"] == 1
    assert before.json()["ok"] is False
    assert json.loads(regcast("sync", "--dry-run", "--json", str(path)).stdout)["ok"] is False
    copied = regcast("sync", "--json", str(path))
    assert copied.returncode == 0, copied.stderr
    after = service.http.post("/api/mirrors/plan", content=doc, headers=headers)
    assert after.json()["totals"]["up_to_date"] == 1
    assert after.json()["ok"] is True
    assert json.loads(regcast("sync", "--dry-run", "--json", str(path)).stdout)["ok"] is True


def _docker_config(tmp_path: Path, auths: dict[str, dict[str, str]]) -> dict[str, str]:
    d = tmp_path / "docker-config-oauth"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"auths": auths}))
    return {"DOCKER_CONFIG": str(d)}


def test_a_docker_config_identity_token_takes_the_oauth2_refresh_token_flow(
    repo: str, src_reg: RegistryServer, token_reg: RegistryServer, tmp_path: Path
) -> None:
    """``docker login`` to ACR stores ``identitytoken`` beside a placeholder user: docker and skopeo
    POST it as an OAuth2 refresh token; a GET with the placeholder's Basic credentials is refused."""
    ts = token_reg.token_server
    assert ts is not None
    user = next(iter(token_reg.users))
    identity = f"refresh-{uuid.uuid4().hex}"
    ts.refresh_tokens[identity] = user
    placeholder = base64.b64encode(b"00000000-0000-0000-0000-000000000000:").decode()
    env = _docker_config(tmp_path, {token_reg.host: {"auth": placeholder, "identitytoken": identity}})
    img = images.image().push(src_reg.http(), repo, "v1")
    seen = len(ts.requests)
    r = regcast("copy", f"{src_reg.host}/{repo}:v1", f"{token_reg.host}/{repo}", env=env)
    assert r.returncode == 0, r.stderr
    assert token_reg.http().get_manifest(repo, "v1").content == img.root.raw
    asked = ts.requests[seen:]
    assert asked, "no token asked for"
    assert {a.get("method") for a in asked} == {"POST"}
    assert {a["user"] for a in asked} == {user}
    assert all(a["form"]["client_id"] == ["regcast"] for a in asked)  # type: ignore[index]
    assert identity not in r.stderr


def test_a_realm_without_the_oauth2_post_is_asked_with_get(
    repo: str, src_reg: RegistryServer, token_reg: RegistryServer, tmp_path: Path
) -> None:
    ts = token_reg.token_server
    assert ts is not None
    user, password = next(iter(token_reg.users.items()))
    env = _docker_config(tmp_path, {token_reg.host: {"username": user, "password": password, "identitytoken": "x"}})
    img = images.image().push(src_reg.http(), repo, "v1")
    ts.oauth = False
    try:
        r = regcast("copy", f"{src_reg.host}/{repo}:v1", f"{token_reg.host}/{repo}", env=env)
    finally:
        ts.oauth = True
    assert r.returncode == 0, r.stderr
    assert token_reg.http().get_manifest(repo, "v1").content == img.root.raw
