"""Issue #9: every request shape the seed accepted works, and the status tells the truth per target.

Bodies come from the seed's README template and its ``example/`` request (``tests/data/``), with
only the placeholders filled in, and go to a real ``regcast serve`` over HTTP.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import images
from tests.support.faults import FaultProxy
from tests.support.registries import BASIC_USERS
from tests.support.registry import RegistryServer
from tests.support.service import Service, basicauth, flask_body, source
from tests.support.verify import assert_same_image

DATA = Path(__file__).parent.parent / "data"
USER, PASSWORD = next(iter(BASIC_USERS.items()))
SEED_KEYS = ["value", "started_at", "finished_endpoints", "skipped_clusters", "finished_at"]
ABSENT = object()
TOKEN = "fidelity-api-token-123"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, ca_bundle: Path) -> Iterator[Service]:
    svc = Service(tmp_path_factory.mktemp("fidelity"), {"REGCAST_CA_BUNDLE": str(ca_bundle)}).start()
    yield svc
    svc.stop()


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    svc = Service(tmp_path_factory.mktemp("strict"), {"REGCAST_STRICT_REQUESTS": "true", "REGCAST_API_TOKENS": TOKEN})
    svc.http.headers["Authorization"] = f"Bearer {TOKEN}"
    svc.start()
    yield svc
    svc.stop()


def seed_template() -> dict[str, Any]:
    return dict(json.loads((DATA / "seed_readme_template.json").read_text()))


def template_auth(token_part_empty: bool = True) -> dict[str, Any]:
    """The README's auth block as users fill it for a basic-auth registry: the token part left empty."""
    auth = dict(seed_template()["source"]["auth"])
    if token_part_empty:
        auth.update(url="", token_type="", header="", json="")
    auth["basicauth"] = {"user": USER, "password": PASSWORD}
    return auth


def test_readme_template_with_empty_token_part(
    service: Service, repo: str, basic_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    """Defect 1: ``{"url": "", ..., "basicauth": {...}}`` is the template's shape, accepted (basicauth wins)."""
    images.image().push(basic_reg.http(), repo, "v1")
    body = seed_template()
    body["source"].update(endpoint=basic_reg.endpoint, image=repo, ref="v1", auth=template_auth())
    body["targets"][0].update(endpoint=open_reg.endpoint, overwrite="", verify_tls="", auth="")
    r = service.http.post("/api/distribute/image", content=json.dumps(body))
    assert r.status_code == 201, r.text
    assert r.text == flask_body({"id": r.json()["id"], "msg": "Image sync started", "status": "success"})
    st = service.wait(r.json()["id"])
    assert st["value"] == "FINISHED", st
    assert st["in_sync"] is True, st
    assert st["finished_endpoints"] == [open_reg.endpoint]
    assert_same_image(basic_reg.http(), repo, "v1", open_reg.http(), repo, "v1")
    # the token part filled in but basicauth present: ignored, as the seed did (never fetched)
    body["source"]["auth"] = template_auth(token_part_empty=False)
    body["source"]["auth"].update(url="http://127.0.0.1:1/token", token_type="Bearer", header={"X-A": "b"})
    body["targets"][0]["overwrite"] = True
    st = service.wait(service.submit(body))
    assert st["value"] == "FINISHED", st
    assert st["in_sync"] is True, st


def test_seed_example_request(service: Service, repo: str, src_reg: RegistryServer, token_reg: RegistryServer) -> None:
    """The seed's ``example/example_request.json``: only the addresses changed to local ones."""
    images.image().push(src_reg.http(), repo, "v1")
    body = json.loads((DATA / "seed_example_request.json").read_text())
    ts = token_reg.token_server
    assert ts
    body["source"].update(endpoint=src_reg.endpoint, image=repo, ref="v1")
    body["source"]["auth"]["url"] = f"{ts.realm}?service={ts.service}&scope=repository:{repo}:pull"
    body["targets"][0]["endpoint"] = body["targets"][0]["endpoint"].replace("localhost:5000", src_reg.host)
    body["targets"][0]["image"] = f"{repo}/copy"
    asked = len(ts.requests)
    r = service.http.post("/api/distribute/image", content=json.dumps(body))
    assert r.status_code == 201, r.text
    st = service.wait(r.json()["id"])
    assert st["value"] == "FINISHED", st
    assert st["in_sync"] is True, st
    assert len(ts.requests) > asked  # the seed's token endpoint was used
    assert_same_image(src_reg.http(), repo, "v1", src_reg.http(), f"{repo}/copy", "v1")


# Every optional key of the template: (path, a present value that works against open registries).
OPTIONAL_KEYS: list[tuple[tuple[str | int, ...], Any]] = [
    (("source", "verify_tls"), True),
    (("source", "auth"), {"basicauth": {"user": USER, "password": PASSWORD}}),
    (("source", "auth", "url"), "http://127.0.0.1:1/token"),  # basicauth present: never fetched
    (("source", "auth", "token_type"), "JWT"),
    (("source", "auth", "header"), {"X-Seed": "1"}),
    (("source", "auth", "json"), {"seed": True}),
    (("source", "auth", "basicauth"), {"user": USER, "password": PASSWORD}),
    (("targets", 0, "overwrite"), True),
    (("targets", 0, "verify_tls"), True),
    (("targets", 0, "auth"), {"url": "", "basicauth": {"user": USER, "password": PASSWORD}}),
    (("targets", 0, "image"), "PLACEHOLDER-image"),
    (("targets", 0, "ref"), "walked"),
    (("platforms",), ["linux/amd64"]),
]
VARIANTS = {"absent": ABSENT, "null": None, "empty": "", "empty-object": {}, "present": "present"}


def _set(body: dict[str, Any], path: tuple[str | int, ...], value: Any) -> None:
    node: Any = body
    for p in path[:-1]:
        node = node[p]
    if value is ABSENT:
        node.pop(path[-1], None)
    else:
        node[path[-1]] = value


def test_template_walk_every_optional_key(
    service: Service, repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    """CONTRACT 2: each optional key absent, null, empty ("" and {}) and present: 201, and the copy is done."""
    images.image().push(src_reg.http(), repo, "v1")
    base = seed_template()
    base["source"].update(endpoint=src_reg.endpoint, image=repo, ref="v1", auth=template_auth())
    base["targets"][0].update(endpoint=open_reg.endpoint, overwrite=False, verify_tls=True, auth=template_auth())
    jobs: dict[str, str] = {}
    for path, present in OPTIONAL_KEYS:
        for name, value in VARIANTS.items():
            body = copy.deepcopy(base)
            if value == "present":
                value = f"{repo}/walked" if present == "PLACEHOLDER-image" else present
            _set(body, path, value)
            label = ".".join(map(str, path)) + "=" + name
            r = service.http.post("/api/distribute/image", content=json.dumps(body))
            assert r.status_code == 201, f"{label}: {r.text}"
            assert list(r.json()) == ["id", "msg", "status"], f"{label}: {r.text}"
            jobs[label] = r.json()["id"]
    for label, job in jobs.items():
        st = service.wait(job)
        assert st["value"] == "FINISHED", f"{label}: {st}"
        assert st["in_sync"] is True, f"{label}: {st}"
        (t,) = st["targets"]
        assert t["state"] in ("FINISHED", "SKIPPED"), f"{label}: {t}"
        if label.startswith("targets.0.overwrite=") and not label.endswith("present"):
            assert t["overwrite"] is False, label  # empty means absent: the seed's default
    assert_same_image(src_reg.http(), repo, "v1", open_reg.http(), repo, "v1")
    assert_same_image(src_reg.http(), repo, "v1", open_reg.http(), f"{repo}/walked", "v1")
    assert_same_image(src_reg.http(), repo, "v1", open_reg.http(), repo, "walked")


def test_overwrite_false_and_tag_exists_is_skipped_with_reason(
    service: Service, repo: str, src_reg: RegistryServer, open_reg: RegistryServer, token_reg: RegistryServer
) -> None:
    """Defects 2 and 3: the seed's rule whatever the digest; ``reason`` per target; ``in_sync`` tells the truth."""
    img = images.image().push(src_reg.http(), repo, "v1")
    other = images.image().push(open_reg.http(), repo, "v1")  # another digest under the tag
    img.push(src_reg.http(), f"{repo}/same", "v1")
    img.push(token_reg.http(), repo, "v1")  # the source digest already there
    job = service.submit(
        {
            "source": source(src_reg, repo),
            "targets": [
                {"endpoint": open_reg.endpoint, "overwrite": False},
                {"endpoint": token_reg.endpoint, "auth": basicauth(token_reg)},
                {"endpoint": src_reg.endpoint, "image": f"{repo}/new"},
            ],
        }
    )
    st = service.wait(job)
    assert st["value"] == "FINISHED"
    assert st["skipped_clusters"] == [open_reg.endpoint, token_reg.endpoint]
    assert st["finished_endpoints"] == [src_reg.endpoint]
    assert [(t["state"], t["reason"]) for t in st["targets"]] == [
        ("SKIPPED", "tag-differs"),
        ("SKIPPED", "up-to-date"),
        ("FINISHED", None),
    ]
    assert st["in_sync"] is False  # one target holds another digest
    assert open_reg.http().get_manifest(repo, "v1").content == other.root.raw
    job = service.submit(
        {
            "source": source(src_reg, repo),
            "targets": [{"endpoint": src_reg.endpoint, "image": f"{repo}/same"}, {"endpoint": src_reg.endpoint}],
        }
    )
    st = service.wait(job)
    assert st["skipped_clusters"] == [src_reg.endpoint, src_reg.endpoint]
    assert st["finished_endpoints"] == []
    assert [t["reason"] for t in st["targets"]] == ["up-to-date", "up-to-date"]
    assert st["in_sync"] is True


def test_unknown_fields_warned_or_refused_when_strict(
    service: Service, strict: Service, repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    """Defect 4: typos are named in ``warnings`` (and logged); strict mode makes them a 400."""
    images.image().push(src_reg.http(), repo, "v1")
    body: dict[str, Any] = {
        "source": {**source(src_reg, repo), "auth": {"basicauth": {"user": USER, "password": PASSWORD, "pw": 1}}},
        "targets": [{"endpoint": open_reg.endpoint, "overwite": True}],
        "imgae": "other",
        "issuer": "the seed's own field: accepted quietly",
    }
    r = service.http.post("/api/distribute/image", content=json.dumps(body))
    assert r.status_code == 201, r.text
    job = r.json()["id"]
    warnings = ["unknown field source.auth.basicauth.pw", "unknown field targets.0.overwite", "unknown field imgae"]
    assert r.text == flask_body({"id": job, "msg": "Image sync started", "status": "success", "warnings": warnings})
    assert service.wait(job)["value"] == "FINISHED"
    assert f"job {job}: {'; '.join(warnings)}" in service.output()
    r = strict.http.post("/api/distribute/image", content=json.dumps(body))
    assert r.status_code == 400
    assert r.json() == {
        "status": "error",
        "msg": "Failed to parse data: source.auth.basicauth.pw: unknown field (REGCAST_STRICT_REQUESTS is on)",
    }
    del body["imgae"], body["targets"][0]["overwite"], body["source"]["auth"]["basicauth"]["pw"]
    r = strict.http.post("/api/distribute/image", content=json.dumps(body))
    assert r.status_code == 201
    assert "warnings" not in r.json()


@pytest.mark.parametrize("bad", ["linux", "linux/amd64/v8/x", "linux/ amd64", "", "linux//v8", 5])
def test_bad_platforms_are_400_always(service: Service, strict: Service, bad: object) -> None:
    body = {
        "source": {"endpoint": "http://127.0.0.1:9/v2", "image": "a", "ref": "v1"},
        "targets": [{"endpoint": "http://127.0.0.1:9/v2"}],
        "platforms": ["linux/amd64", bad],
    }
    for svc in (service, strict):
        r = svc.http.post("/api/distribute/image", json=body)
        assert r.status_code == 400, r.text
        assert r.json()["msg"].startswith("Failed to parse data: platforms.1: ")


@pytest.mark.parametrize("status", [500, 429])
def test_transient_fault_at_submit_is_accepted_and_retried(
    service: Service,
    repo: str,
    src_reg: RegistryServer,
    open_reg: RegistryServer,
    faults: list[FaultProxy],
    status: int,
) -> None:
    """Defect 5: a 500/429 from the source's /v2/ during the POST's check is not a verdict: 201, then the copy."""
    images.image().push(src_reg.http(), repo, "v1")
    # the check meets the first fault; the worker plans again per the job policy (REGCAST_MAX_ATTEMPTS=2)
    proxy = FaultProxy(src_reg.port, "flaky", path="/v2/", status=status, count=2).start()
    faults.append(proxy)
    r = service.http.post(
        "/api/distribute/image",
        json={
            "source": {"endpoint": proxy.endpoint, "image": repo, "ref": "v1"},
            "targets": [{"endpoint": open_reg.endpoint}],
        },
    )
    assert r.status_code == 201, r.text
    assert list(r.json()) == ["id", "msg", "status"]
    assert proxy.events["flaky"] >= 1
    st = service.wait(r.json()["id"])
    assert st["value"] == "FINISHED", st
    assert st["in_sync"] is True, st
    assert proxy.events["flaky"] == 2
    assert_same_image(src_reg.http(), repo, "v1", open_reg.http(), repo, "v1")


def test_transient_fault_of_the_token_endpoint_at_submit(
    service: Service,
    repo: str,
    src_reg: RegistryServer,
    open_reg: RegistryServer,
    token_reg: RegistryServer,
    faults: list[FaultProxy],
) -> None:
    images.image().push(src_reg.http(), repo, "v1")
    ts = token_reg.token_server
    assert ts
    proxy = FaultProxy(ts.port, "flaky", path="/token", status=500, count=1).start()
    faults.append(proxy)
    url = f"http://127.0.0.1:{proxy.port}/token?service={ts.service}&scope=repository:{repo}:pull"
    r = service.http.post(
        "/api/distribute/image",
        json={
            "source": source(src_reg, repo, auth={"url": url, "token_type": "Bearer"}),
            "targets": [{"endpoint": open_reg.endpoint}],
        },
    )
    assert r.status_code == 201, r.text
    assert proxy.events["flaky"] == 1
    st = service.wait(r.json()["id"])
    assert st["value"] == "FINISHED", st
    assert st["in_sync"] is True, st


def test_404_only_when_the_source_says_so_and_names_it(service: Service, repo: str, src_reg: RegistryServer) -> None:
    r = service.http.post(
        "/api/distribute/image",
        json={"source": source(src_reg, repo, "nope"), "targets": [{"endpoint": src_reg.endpoint}]},
    )
    assert r.status_code == 404
    assert r.text == '{"msg":"Image not found","status":"error"}\n'  # the seed's body (Flask 1.1.2), byte for byte
    assert r.headers["X-Regcast-Registry"] == src_reg.host
    assert f"source {src_reg.host} has no {repo}:nope" in service.output()


def test_docs_work_offline_and_document_every_body(service: Service, strict: Service) -> None:
    """Defect 8: Swagger UI from the package, request and response schemas, the bearer scheme."""
    html = service.http.get("/docs").text
    urls = re.findall(r'(?:src|href)=["\']([^"\']+)', html) + re.findall(r"url: *['\"]([^'\"]+)", html)
    assert "/docs/static/swagger-ui-bundle.js" in urls
    assert "/openapi.json" in urls
    assert all(u.startswith("/") and not u.startswith("//") for u in urls), urls  # nothing from elsewhere
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        r = service.http.get(f"/docs/static/{asset}")
        assert r.status_code == 200
        assert len(r.content) > 10_000
    doc = service.http.get("/openapi.json").json()
    schemas = doc["components"]["schemas"]
    post = doc["paths"]["/api/distribute/image"]["post"]
    body = post["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/DistributeRequest"}
    assert {"source", "targets", "platforms"} <= set(schemas["DistributeRequest"]["properties"])

    def schema_of(op: dict[str, Any], code: str) -> dict[str, Any]:
        ref = op["responses"][code]["content"]["application/json"]["schema"]["$ref"]
        return dict(schemas[ref.rsplit("/", 1)[1]])

    assert "warnings" in schema_of(post, "201")["properties"]
    assert schema_of(post, "404")["properties"].keys() == {"status", "msg"}
    status = schema_of(doc["paths"]["/api/distribute/image/{job_id}"]["get"], "200")
    assert list(status["properties"])[:6] == [*SEED_KEYS, "in_sync"]
    target = schemas[status["properties"]["targets"]["items"]["$ref"].rsplit("/", 1)[1]]
    assert "reason" in target["properties"]
    assert set(target["properties"]) == {  # every key a target's status has (api/status.py), documented
        *("endpoint", "image", "ref", "overwrite", "state", "reason", "bytes_done", "bytes_total"),
        *("attempts", "retries", "error", "referrers", "referrers_left_out", "finished_at"),
        *("bytes_per_second", "detached", "waiting"),
    }
    assert "up-to-date" in json.dumps(target["properties"]["reason"])
    assert doc["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": doc["components"]["securitySchemes"]["bearer"]["description"],
    }
    # with tokens: every route but health says it needs the scheme
    assert "security" not in post
    guarded = strict.http.get("/openapi.json").json()
    assert guarded["paths"]["/api/distribute/image"]["post"]["security"] == [{"bearer": []}]
    assert "security" not in guarded["paths"]["/healthz"]["get"]
    assert strict.http.get("/docs/static/swagger-ui-bundle.js").status_code == 200


def test_platforms_matching_nothing_in_a_single_image_fail_the_job(
    service: Service, repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    """The API sibling of the CLI's --platform: never a silent copy of another platform."""
    img = images.image(arch="amd64").push(src_reg.http(), repo, "v1")
    job = service.submit(
        {"source": source(src_reg, repo), "targets": [{"endpoint": open_reg.endpoint}], "platforms": ["linux/arm64"]}
    )
    st = service.wait(job)
    assert st["value"] == "FAILED" and st["in_sync"] is False
    assert f"{img.digest} is an image for linux/amd64, not for platform linux/arm64" in st["error"]
    assert [t["state"] for t in st["targets"]] == ["FAILED"]
    assert open_reg.http().get_manifest(repo, "v1").status_code == 404


def test_a_missing_v2_api_is_not_image_not_found(
    service: Service, repo: str, src_reg: RegistryServer, faults: list[FaultProxy]
) -> None:
    """404 for /v2/ itself (a wrong endpoint) says nothing about the image: a 502 naming the registry."""
    proxy = FaultProxy(src_reg.port, "flaky", path="/v2/", status=404, count=100).start()
    faults.append(proxy)
    r = service.http.post(
        "/api/distribute/image",
        json={"source": {"endpoint": proxy.endpoint, "image": repo, "ref": "v1"}, "targets": [source(src_reg, repo)]},
    )
    assert r.status_code == 502, r.text
    assert r.json()["msg"].startswith(f"Source registry error: registry 127.0.0.1:{proxy.port}: checking the v2 API")


def test_no_targets_is_accepted_and_finished_as_the_seed_did(
    service: Service, repo: str, src_reg: RegistryServer
) -> None:
    """The seed loaded ``targets: []`` (a list, as its schema asked) and ran a job with nothing to do."""
    images.image().push(src_reg.http(), repo, "v1")
    r = service.http.post("/api/distribute/image", json={"source": source(src_reg, repo), "targets": []})
    assert r.status_code == 201, r.text
    assert r.text == flask_body({"id": r.json()["id"], "msg": "Image sync started", "status": "success"})
    st = service.wait(r.json()["id"])
    assert (st["value"], st["finished_endpoints"], st["skipped_clusters"]) == ("FINISHED", [], [])
    assert st["in_sync"] is True  # no target that does not hold it
    assert st["finished_at"]


def test_an_endpoint_named_twice_is_listed_once(
    service: Service, repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    """The seed passed over a target whose endpoint it had listed already: each endpoint once in its lists."""
    img = images.image().push(src_reg.http(), repo, "v1")
    target = {"endpoint": open_reg.endpoint, "overwrite": True}
    r = service.http.post("/api/distribute/image", json={"source": source(src_reg, repo), "targets": [target, target]})
    assert r.status_code == 201, r.text
    st = service.wait(r.json()["id"])
    assert st["value"] == "FINISHED", st
    assert st["finished_endpoints"] == [open_reg.endpoint]
    assert_same_image(src_reg.http(), repo, "v1", open_reg.http(), repo, "v1")
    assert img.digest
