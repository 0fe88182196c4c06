"""Push-triggered mirroring: a real distribution registry notifies a running regcast of its pushes.

The source registry's ``notifications`` endpoint points at ``POST /api/events/src`` of a real
``regcast serve``; regcast reaches the source through a counting proxy, so the tests can say
which requests a push cost the source (never its tag list).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from regcast.registry.referrers import TAG_LIST_PAGE
from tests.support import images
from tests.support.faults import FaultProxy
from tests.support.registries import Registries
from tests.support.registry import RegistryServer
from tests.support.service import Service
from tests.support.verify import assert_same_image

SECRET = "events-" + secrets.token_hex(8)
REPO = "team/app"


class Setup:
    def __init__(self, svc: Service, source: RegistryServer, proxy: FaultProxy, targets: list[RegistryServer]) -> None:
        self.svc, self.source, self.proxy, self.targets = svc, source, proxy, targets

    def runs(self) -> list[dict[str, Any]]:
        r = self.svc.http.get("/api/mirrors/app/runs")
        assert r.status_code == 200, r.text
        return list(r.json()["runs"])

    def push_runs(self) -> list[dict[str, Any]]:
        return [r for r in self.runs() if r["trigger"] == "push"]

    def wait_runs(self, n: int, timeout: float = 90) -> list[dict[str, Any]]:
        """Until ``n`` push runs exist and every one has ended."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            runs = self.push_runs()
            if len(runs) >= n and all(r["finished_at"] for r in runs):
                return runs
            time.sleep(0.2)
        raise AssertionError(f"push runs: {self.push_runs()}\n{self.svc.output()[-3000:]}")

    def post(self, body: dict[str, Any], secret: str = SECRET, **headers: str) -> httpx.Response:
        return self.svc.http.post(
            "/api/events/src",
            content=json.dumps(body),
            headers={
                "Content-Type": "application/vnd.docker.distribution.events.v1+json",
                "Authorization": f"Bearer {secret}",
                **headers,
            },
        )


def _document(
    proxy: FaultProxy,
    targets: list[RegistryServer] | list[str],
    prune: bool = False,
    latest: int | None = None,
    listed: list[str] | None = None,
) -> str:
    host = f"127.0.0.1:{proxy.port}"
    hosts = [t if isinstance(t, str) else t.host for t in targets]
    keep = f"\n      latest: {latest}" if latest else ""
    rules = f"list: {json.dumps(listed)}" if listed else f"allow: ['^v\\d+(\\.\\d+\\.\\d+)?$']{keep}"
    return f"""
version: 1
registries:
  - host: "{host}"
    events:
      name: src
      secret: {SECRET}
mirrors:
  - name: app
    source: {host}/{REPO}
    targets: [{", ".join(hosts)}]
    tags:
      {rules}
    prune: {"true" if prune else "false"}
"""


@pytest.fixture
def setup(tmp_path: Path, registries: Registries) -> Iterator[Setup]:
    # regcast first (its port is then taken), so the source's notifications can point at it
    svc = Service(tmp_path / "svc", {"REGCAST_SECRET_KEY": "push-events-test-key-0123456789abcdef"}).start()
    name = f"notifying-{secrets.token_hex(3)}"
    source = RegistryServer(
        name,
        registries.base / name,
        notify=(f"{svc.url}/api/events/src", {"Authorization": f"Bearer {SECRET}"}),
    ).start()
    registries.started.append(source)
    proxy = FaultProxy(source.port).start()
    targets = [registries.open(f"push-target-{i}-{secrets.token_hex(3)}") for i in range(2)]
    try:
        doc = _document(proxy, targets)
        r = svc.http.post("/api/mirrors", content=doc, headers={"Content-Type": "application/yaml"})
        assert r.status_code == 201, r.text
        yield Setup(svc, source, proxy, targets)
    finally:
        svc.stop()
        proxy.stop()


def _manifest_event(tag: str | None, digest: str, media_type: str = images.OCI_MANIFEST) -> dict[str, Any]:
    target: dict[str, Any] = {"mediaType": media_type, "digest": digest, "repository": REPO, "size": 10}
    if tag:
        target["tag"] = tag
    return {
        "id": secrets.token_hex(8),
        "action": "push",
        "timestamp": "2026-11-29T10:00:00.123456789Z",
        "target": target,
    }


def test_a_pushed_tag_reaches_every_target_without_listing_tags(setup: Setup) -> None:
    img = images.image().push(setup.source.http(), REPO, "v1")
    runs = setup.wait_runs(1)
    assert len(runs) == 1
    assert runs[0]["state"] == "FINISHED", runs
    assert runs[0]["images_selected"] == 1
    assert runs[0]["lag_seconds"] is not None and runs[0]["pushed_at"]
    for t in setup.targets:
        assert_same_image(setup.source.http(), REPO, "v1", t.http(), REPO, "v1")
        assert t.http().get_manifest(REPO, "v1").content == img.root.raw
    paths = [path for _method, path, _h in setup.proxy.seen]
    # no tag walk: the only listing is referrer discovery's one page, which says which referrer tags
    # exist (issue 17: one GET instead of the tag-schema GET and three cosign HEADs)
    discovery = f"/v2/{REPO}/tags/list?n={TAG_LIST_PAGE}"
    assert not [p for p in paths if "/tags/list" in p and p != discovery]
    assert [p for p in paths if p.startswith(f"/v2/{REPO}/manifests/v1")]  # the digest was read at the source


def test_a_tag_outside_the_filters_does_not_move_and_blob_events_are_ignored(setup: Setup) -> None:
    images.image().push(setup.source.http(), REPO, "latest")
    images.image().push(setup.source.http(), REPO, "v2")  # delivered after latest's events: same queue
    runs = setup.wait_runs(1)
    assert [r["state"] for r in runs] == ["FINISHED"]
    for t in setup.targets:
        assert t.http().get_manifest(REPO, "latest").status_code == 404
        assert t.http().get_manifest(REPO, "v2").status_code == 200
    layer = "sha256:" + "a" * 64
    target = {
        "mediaType": images.OCI_LAYER,
        "digest": layer,
        "repository": REPO,
        "url": f"http://x/v2/{REPO}/blobs/{layer}",
    }
    blob = {"id": "b1", "action": "push", "target": target}
    r = setup.post({"events": [blob]})
    assert r.status_code == 202
    expected = {"status": "success", "events": 1, "matched": 0, "duplicates": 0, "ignored": 1, "pruned": 0, "runs": []}
    assert r.json() == expected
    # the lag is observed by the run's watcher, which polls the run on its own backoff: it may see the
    # run finished a moment after the API did, so wait for it (no timing assumed, only an upper bound)
    deadline = time.monotonic() + 60
    metrics = setup.svc.http.get("/metrics").text
    while "regcast_push_sync_lag_seconds_count 1.0" not in metrics and time.monotonic() < deadline:
        time.sleep(0.2)
        metrics = setup.svc.http.get("/metrics").text
    assert 'regcast_push_events_total{outcome="ignored"}' in metrics
    assert "regcast_push_sync_lag_seconds_count 1.0" in metrics


def test_the_same_event_delivered_three_times_gives_one_job(setup: Setup) -> None:
    img = images.image().push(setup.source.http(), REPO, "v3")
    event = {"events": [_manifest_event("v3", img.digest)]}
    answers = [setup.post(event) for _ in range(3)]
    assert [a.status_code for a in answers] == [202, 202, 202]
    runs = setup.wait_runs(1)
    time.sleep(1.0)  # the registry's own delivery of the same push may still come: it must change nothing
    runs = setup.wait_runs(1)
    assert len(runs) == 1, runs
    assert runs[0]["state"] == "FINISHED", (runs, setup.svc.output()[-4000:])
    assert len(runs[0]["jobs"]) == 1, (runs, setup.svc.output()[-4000:])
    assert sum(a.json()["duplicates"] for a in answers) >= 2
    for t in setup.targets:
        assert_same_image(setup.source.http(), REPO, "v3", t.http(), REPO, "v3")


def test_a_tag_pushed_back_to_its_previous_digest_is_copied_again(setup: Setup) -> None:
    """A rollback (v6: a, then b, then a again) is a push like any other: the third push's key was
    taken by the first, so the targets kept b while the source held a again."""
    http = setup.source.http()
    a = images.image().push(http, REPO, "v6")
    assert [r["state"] for r in setup.wait_runs(1)] == ["FINISHED"]
    images.image().push(http, REPO, "v6")
    assert [r["state"] for r in setup.wait_runs(2)] == ["FINISHED"] * 2
    http.push_manifest(REPO, "v6", a.root.raw, a.root.media_type)  # rolled back
    assert [r["state"] for r in setup.wait_runs(3)] == ["FINISHED"] * 3
    for t in setup.targets:
        assert t.http().get_manifest(REPO, "v6").content == a.root.raw


def test_unsigned_wrong_or_unknown_deliveries_are_401_and_garbage_is_400(setup: Setup) -> None:
    event = {"events": [_manifest_event("v7", "sha256:" + "b" * 64)]}
    assert setup.post(event, secret="wrong").status_code == 401
    r = setup.svc.http.post("/api/events/src", content=json.dumps(event))
    assert r.status_code == 401
    assert r.json() == {"status": "error", "msg": "unauthorized: unknown events source or wrong secret"}
    r = setup.svc.http.post(
        "/api/events/other", content=json.dumps(event), headers={"Authorization": f"Bearer {SECRET}"}
    )
    assert r.status_code == 401
    r = setup.post({"events": "nope"}, **{"Content-Type": "application/json"})
    assert r.status_code == 400
    r = setup.svc.http.post("/api/events/src", content=b"{not json", headers={"Authorization": f"Bearer {SECRET}"})
    assert r.status_code == 400 and r.json()["msg"].startswith("Failed to parse data:")
    assert setup.push_runs() == []


def test_github_style_hmac_and_harbor_style_header_are_accepted(setup: Setup) -> None:
    import hashlib
    import hmac

    img = images.image().push(setup.source.http(), REPO, "v4")
    harbor = {
        "type": "PUSH_ARTIFACT",
        "occur_at": int(time.time()),
        "event_data": {"resources": [{"digest": img.digest, "tag": "v4"}], "repository": {"repo_full_name": REPO}},
    }
    body = json.dumps(harbor).encode()
    sig = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    r = setup.svc.http.post("/api/events/src", content=body, headers={"X-Hub-Signature-256": sig})
    assert r.status_code == 202, r.text
    r = setup.svc.http.post("/api/events/src", content=body, headers={"Authorization": SECRET})
    assert r.status_code == 202
    assert r.json()["duplicates"] == 1
    setup.wait_runs(1)
    for t in setup.targets:
        assert_same_image(setup.source.http(), REPO, "v4", t.http(), REPO, "v4")


def test_deletes_prune_only_when_the_mirror_says_so(setup: Setup) -> None:
    img = images.image().push(setup.source.http(), REPO, "v5")
    setup.wait_runs(1)
    gone = {"digest": img.digest, "repository": REPO, "mediaType": images.OCI_MANIFEST}
    delete = {"events": [{"id": "d1", "action": "delete", "target": gone}]}
    r = setup.post(delete)
    assert r.status_code == 202 and r.json()["pruned"] == 0
    for t in setup.targets:
        assert t.http().get_manifest(REPO, "v5").status_code == 200
    doc = _document(setup.proxy, setup.targets, prune=True)
    assert setup.svc.http.post("/api/mirrors", content=doc).status_code == 201
    r = setup.post(delete)
    assert r.status_code == 202 and r.json()["pruned"] == 2, r.text
    for t in setup.targets:
        assert t.http().get_manifest(REPO, "v5").status_code == 404


def test_a_mirror_of_listed_tags_alone_copies_and_prunes_only_those(setup: Setup) -> None:
    """``tags: {list: [...]}`` selects those tags only (a pass reads no tag list for it); a push or a
    delete of any other tag was taken as selected: copied to the targets, and pruned there."""
    doc = _document(setup.proxy, setup.targets, prune=True, listed=["v1"])
    assert setup.svc.http.post("/api/mirrors", content=doc).status_code == 201
    other = images.image().push(setup.source.http(), REPO, "v9")
    listed = images.image().push(setup.source.http(), REPO, "v1")  # delivered after v9's events: same queue
    assert [r["state"] for r in setup.wait_runs(1)] == ["FINISHED"]
    for t in setup.targets:
        assert t.http().get_manifest(REPO, "v9").status_code == 404
        assert t.http().get_manifest(REPO, "v1").content == listed.root.raw
        other.push(t.http(), REPO, "v9")  # a tag the mirror does not manage, put there by someone else
    gone = {"digest": other.digest, "repository": REPO, "mediaType": images.OCI_MANIFEST, "tag": "v9"}
    r = setup.post({"events": [{"id": "d9", "action": "delete", "target": gone}]})
    assert r.status_code == 202 and r.json()["pruned"] == 0, r.text
    for t in setup.targets:
        assert t.http().get_manifest(REPO, "v9").status_code == 200


def _pings(proxy: FaultProxy) -> int:
    """``GET /v2/`` requests seen: a client without a settled ping from the shared pools sends one."""
    return sum(1 for method, path, _h in proxy.seen if method == "GET" and path == "/v2/")


def test_push_listings_and_prunes_reuse_the_workers_connection_pools(setup: Setup) -> None:
    target = FaultProxy(setup.targets[0].port).start()  # counts what reaches the target
    try:
        # latest N (semver tags): each push lists the source's tags before it takes its run
        doc = _document(setup.proxy, [f"127.0.0.1:{target.port}"], prune=True, latest=5)
        assert setup.svc.http.post("/api/mirrors", content=doc).status_code == 201
        first = images.image().push(setup.source.http(), REPO, "v1.0.0")
        assert [r["state"] for r in setup.wait_runs(1)] == ["FINISHED"]
        source_pings, target_pings, seen = _pings(setup.proxy), _pings(target), len(setup.proxy.seen)
        assert source_pings >= 1  # the pools are warm now
        assert target_pings >= 1

        images.image().push(setup.source.http(), REPO, "v1.1.0")
        assert [r["state"] for r in setup.wait_runs(2)] == ["FINISHED", "FINISHED"]
        assert_same_image(setup.source.http(), REPO, "v1.1.0", setup.targets[0].http(), REPO, "v1.1.0")
        assert [p for _m, p, _h in setup.proxy.seen[seen:] if "/tags/list" in p]  # the listing was sent
        assert _pings(setup.proxy) == source_pings  # ... on the pooled clients, as the plan and the job

        gone = {"digest": first.digest, "repository": REPO, "mediaType": images.OCI_MANIFEST}
        r = setup.post({"events": [{"id": "d1", "action": "delete", "target": gone}]})
        assert r.status_code == 202 and r.json()["pruned"] == 1, r.text
        assert setup.targets[0].http().get_manifest(REPO, "v1.0.0").status_code == 404
        assert _pings(target) == target_pings  # the prune's DELETE went over the run's pooled client
    finally:
        target.stop()
