"""``regcast sync FILE``: a 12-tag source, 3 real targets (open, htpasswd+TLS, token), requests counted."""

from __future__ import annotations

import json
import secrets
import tarfile
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.support import images
from tests.support.cli import regcast
from tests.support.faults import FaultProxy
from tests.support.registries import BASIC_USERS, TOKEN_USERS
from tests.support.registry import RegistryServer
from tests.support.verify import assert_same_image

TAGS = ["1.0.0", "1.4.0", "1.4.2", "v1.5.0", "1.9.9", "2.0.0", "2.0.0-rc.1", "1.5.0-rc.1", "latest", "stable", "1.4"]
MULTI = "v2.1.0"  # the multi-arch one
ALL = sorted([*TAGS, MULTI])

CASES: dict[str, tuple[dict[str, Any] | None, list[str]]] = {
    "all": (None, ALL),
    "list": ({"list": ["stable", "1.4"]}, ["1.4", "stable"]),
    "allow": ({"allow": [r"^v"]}, ["v1.5.0", MULTI]),
    "deny": ({"deny": ["rc", r"^\d+\.\d+$"]}, sorted(set(ALL) - {"2.0.0-rc.1", "1.5.0-rc.1", "1.4"})),
    "semver": ({"semver": ">=1.4 <2"}, ["1.4.0", "1.4.2", "1.9.9", "v1.5.0"]),
    "latest": ({"latest": 2}, ["2.0.0", MULTI]),
    "combined": (
        {"allow": [r"^v?\d+\.\d+\.\d+"], "deny": ["^v"], "semver": "^1", "latest": 2, "list": ["latest"]},
        ["1.4.2", "1.9.9", "latest"],
    ),
}


@pytest.fixture(scope="module")
def source(registries: Any) -> tuple[RegistryServer, str]:
    """One source repository with the 12 tags (read only by the tests)."""
    reg = registries.open("mirror-source")
    repo = f"team/app-{secrets.token_hex(3)}"
    http = reg.http()
    base = images.layer_bytes(3000)
    for tag in TAGS:
        images.image([base, images.layer_bytes(1500)]).push(http, repo, tag)
    images.multi_platform().push(http, repo, MULTI)
    return reg, repo


@pytest.fixture
def proxy(source: tuple[RegistryServer, str], faults: list[FaultProxy]) -> FaultProxy:
    p = FaultProxy(source[0].port).start()
    faults.append(p)
    return p


def registries_block(basic_reg: RegistryServer, token_reg: RegistryServer) -> list[dict[str, Any]]:
    tuser, tpw = next(iter(TOKEN_USERS.items()))
    return [
        {"host": basic_reg.host, "username": "${BASIC_USER}", "password": "${BASIC_PASS}"},
        {"host": token_reg.host, "username": tuser, "password": tpw},
    ]


def write_doc(tmp_path: Path, mirrors: list[dict[str, Any]], regs: list[dict[str, Any]]) -> Path:
    path = tmp_path / f"mirrors-{secrets.token_hex(3)}.yaml"
    path.write_text(json.dumps({"version": 1, "registries": regs, "mirrors": mirrors}))
    return path


def sync(path: Path, ca_bundle: Path, *args: str) -> tuple[int, dict[str, Any], str]:
    user, pw = next(iter(BASIC_USERS.items()))
    r = regcast(
        "sync", "--ca-bundle", str(ca_bundle), "--json", *args, str(path), env={"BASIC_USER": user, "BASIC_PASS": pw}
    )
    assert "Traceback" not in r.stderr, r.stderr
    return r.returncode, json.loads(r.stdout) if r.stdout.strip() else {}, r.stderr


def errors(report: dict[str, Any]) -> list[Any]:
    return [(m["name"], m["error"], [i["error"] for i in m["images"] if i["error"]]) for m in report.get("mirrors", [])]


def tags_at(reg: RegistryServer, repo: str) -> list[str]:
    http = reg.http()
    r = http.client.get(f"{repo}/tags/list", headers=http._auth(repo))
    return sorted(r.json().get("tags") or []) if r.status_code == 200 else []


def source_requests(proxy: FaultProxy) -> list[tuple[str, str]]:
    return [(m, p) for m, p, _h in proxy.seen if p != "/v2/"]


def test_each_filter_selects_exactly_and_targets_hold_exactly_those(
    tmp_path: Path,
    source: tuple[RegistryServer, str],
    proxy: FaultProxy,
    open_reg: RegistryServer,
    basic_reg: RegistryServer,
    token_reg: RegistryServer,
    ca_bundle: Path,
) -> None:
    src_reg, repo = source
    run = secrets.token_hex(3)
    targets = [open_reg, basic_reg, token_reg]
    mirrors = []
    for name, (rules, _expected) in CASES.items():
        m: dict[str, Any] = {
            "name": name,
            "source": f"127.0.0.1:{proxy.port}/{repo}",
            "repository": f"sel-{run}/{name}",
            "targets": [t.host for t in targets],
        }
        if rules is not None:
            m["tags"] = rules
        mirrors.append(m)
    path = write_doc(tmp_path, mirrors, registries_block(basic_reg, token_reg))

    code, plan, err = sync(path, ca_bundle, "--dry-run")
    assert code == 1, (err, errors(plan))  # images to copy: not every one is in every target yet
    assert plan["ok"] is False
    for m in plan["mirrors"]:
        assert [i["tag"] for i in m["images"]] == CASES[m["name"]][1], m["name"]
    assert not [p for _m, p in source_requests(proxy) if "/blobs/" in p], "a dry run read a blob"
    for reg in targets:
        assert tags_at(reg, f"sel-{run}/all") == []  # nothing written by the dry run

    code, report, err = sync(path, ca_bundle)
    assert code == 0, err
    assert report["ok"] is True
    for name, (_rules, expected) in CASES.items():
        for reg in targets:
            assert tags_at(reg, f"sel-{run}/{name}") == expected, (name, reg.name)
    for tag in CASES["combined"][1] + [MULTI]:
        for reg in targets:
            assert_same_image(src_reg.http(), repo, tag, reg.http(), f"sel-{run}/all", tag)


def test_second_pass_reads_no_manifest_and_no_blob_and_immutable_costs_nothing(
    tmp_path: Path,
    source: tuple[RegistryServer, str],
    proxy: FaultProxy,
    open_reg: RegistryServer,
    basic_reg: RegistryServer,
    token_reg: RegistryServer,
    ca_bundle: Path,
) -> None:
    _src_reg, repo = source
    prefix = f"second-{secrets.token_hex(3)}"
    mirror = {
        "name": "app",
        "source": f"127.0.0.1:{proxy.port}/{repo}",
        "targets": [f"{open_reg.host}/{prefix}", f"{basic_reg.host}/{prefix}", f"{token_reg.host}/{prefix}"],
        "tags": {"semver": ">=1.4 <3", "list": ["stable"]},
        "immutable": [r"^1\.4\.\d+$"],
    }
    path = write_doc(tmp_path, [mirror], registries_block(basic_reg, token_reg))
    code, first, err = sync(path, ca_bundle)
    assert code == 0, err
    assert first["totals"]["copied"] == 3 * 7
    assert first["totals"]["moved"] > 0

    proxy.seen.clear()
    code, second, err = sync(path, ca_bundle)
    assert code == 0, err
    assert second["totals"]["copied"] == 0
    assert second["totals"]["moved"] == 0
    assert second["totals"]["up_to_date"] == 3 * 7
    seen = source_requests(proxy)
    assert [p for m, p in seen if m == "GET" and "/manifests/" in p] == []
    assert [p for _m, p in seen if "/blobs/" in p] == []
    # immutable tags present at every target: no request at all for them
    assert [p for _m, p in seen if p.endswith(("/manifests/1.4.0", "/manifests/1.4.2"))] == []
    heads = sorted(p.rsplit("/", 1)[1] for m, p in seen if m == "HEAD" and "/manifests/" in p)
    assert heads == ["1.9.9", "2.0.0", "stable", "v1.5.0", MULTI]


def test_dry_run_predicts_exactly_what_the_pass_moves(
    tmp_path: Path,
    source: tuple[RegistryServer, str],
    proxy: FaultProxy,
    open_reg: RegistryServer,
    basic_reg: RegistryServer,
    token_reg: RegistryServer,
    ca_bundle: Path,
) -> None:
    _src_reg, repo = source
    prefix = f"predict-{secrets.token_hex(3)}"
    mirror = {
        "name": "app",
        "source": f"127.0.0.1:{proxy.port}/{repo}",
        "targets": [f"{open_reg.host}/{prefix}", f"{open_reg.host}/{prefix}-b", f"{token_reg.host}/{prefix}"],
        "tags": {"allow": [r"^1\.4", "^v2"]},
        "overwrite": False,
    }
    # one target already holds one tag, another holds a different image under a tag (skipped: overwrite off)
    images.image().push(open_reg.http(), f"{prefix}-b/{repo}", "1.4.0")
    path = write_doc(tmp_path, [mirror], registries_block(basic_reg, token_reg))
    code, plan, err = sync(path, ca_bundle, "--dry-run")
    assert code == 1, (err, errors(plan))  # copies ahead (and a skip): the pass's own status, told ahead
    code, report, err = sync(path, ca_bundle)
    assert code == 3, err  # the skipped target: not every image is everywhere
    code, _after, err = sync(path, ca_bundle, "--dry-run")
    assert code == 3, err  # only the skip is left: told as the pass tells it
    predicted = {
        (i["tag"], t["target"]): (t["action"], t["bytes"]) for i in plan["mirrors"][0]["images"] for t in i["targets"]
    }
    moved = {
        (i["tag"], t["target"]): (t["state"], t["moved"]) for i in report["mirrors"][0]["images"] for t in i["targets"]
    }
    assert set(predicted) == set(moved)
    assert len(predicted) == 3 * 4
    words = {"copy": "copied", "up-to-date": "up-to-date", "skip": "skipped"}
    for key, (action, size) in predicted.items():
        assert moved[key] == (words[action], size), key
    assert predicted[("1.4.0", f"{open_reg.host}/{prefix}-b/{repo}")] == ("skip", 0)
    assert plan["totals"]["bytes"] == report["totals"]["moved"] > 0


class PaginatingProxy(FaultProxy):
    """Answers ``tags/list`` in pages (``n``, ``last``, ``Link: <...>; rel="next"``) as Docker Hub and
    distribution 3 do; distribution 2.8 behind it ignores ``n``."""

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.method != "GET" or not request.path.endswith("/tags/list"):
            return await super()._handle(request)
        self.seen.append((request.method, request.path_qs, dict(request.headers)))
        assert self._session
        async with self._session.get(self.upstream + request.path) as up:
            tags = sorted((await up.json())["tags"])
        n, last = int(request.query.get("n", "1000")), request.query.get("last")
        rest = [t for t in tags if last is None or t > last]
        page, more = rest[:n], len(rest) > n
        headers = {"Link": f'<{request.path}?n={n}&last={page[-1]}>; rel="next"'} if more else {}
        return web.json_response({"name": request.path, "tags": page}, headers=headers)


def test_tag_listing_follows_pagination(source: tuple[RegistryServer, str], faults: list[FaultProxy]) -> None:
    import asyncio

    from regcast.mirrors.tags import list_tags
    from regcast.registry.client import RegistryClient
    from regcast.registry.reference import endpoint_for_registry

    reg, repo = source
    proxy = PaginatingProxy(reg.port).start()
    faults.append(proxy)

    async def go() -> list[str]:
        async with RegistryClient(endpoint_for_registry(f"127.0.0.1:{proxy.port}"), read_only=True) as client:
            return await list_tags(client, repo, page_size=5)

    assert sorted(asyncio.run(go())) == ALL
    pages = [p for m, p, _h in proxy.seen if m == "GET" and "/tags/list" in p]
    assert pages == [
        f"/v2/{repo}/tags/list?n=5",
        f"/v2/{repo}/tags/list?n=5&last={ALL[4]}",
        f"/v2/{repo}/tags/list?n=5&last={ALL[9]}",
    ]


def test_concurrent_tag_listings_of_one_repository_walk_the_pages_once(
    source: tuple[RegistryServer, str], faults: list[FaultProxy]
) -> None:
    """Two mirror runs' clients of one pool entry (the worker's ConnectionPools) list the same
    repository at once: the pages are walked once; a listing after that walk ended walks them again."""
    import asyncio

    from regcast.mirrors.tags import list_tags
    from regcast.registry.client import ClientOptions
    from regcast.registry.pool import ConnectionPools
    from regcast.registry.reference import endpoint_for_registry

    reg, repo = source
    proxy = PaginatingProxy(reg.port).start()
    faults.append(proxy)

    async def go() -> tuple[list[str], list[str], list[str]]:
        pools = ConnectionPools()
        endpoint = endpoint_for_registry(f"127.0.0.1:{proxy.port}")
        first, second = (pools.client(endpoint, options=ClientOptions(), read_only=True) for _ in range(2))
        try:
            await first.ping()  # settled for the entry: neither listing waits on a ping of its own
            a, b = await asyncio.gather(list_tags(first, repo, page_size=5), list_tags(second, repo, page_size=5))
            a.append("mine")  # each caller owns its list
            return a, b, await list_tags(second, repo, page_size=5)
        finally:
            await first.close()
            await second.close()
            await pools.close()

    a, b, later = asyncio.run(go())
    assert sorted(a) == sorted([*ALL, "mine"])
    assert sorted(b) == ALL
    assert sorted(later) == ALL
    pages = [p for m, p, _h in proxy.seen if m == "GET" and "/tags/list" in p]
    walk = [
        f"/v2/{repo}/tags/list?n=5",
        f"/v2/{repo}/tags/list?n=5&last={ALL[4]}",
        f"/v2/{repo}/tags/list?n=5&last={ALL[9]}",
    ]
    assert pages == walk + walk  # the concurrent pair once, the later listing once: nothing kept


def test_a_bad_document_exits_2_naming_the_line_and_nothing_is_copied(tmp_path: Path, open_reg: RegistryServer) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "version: 1\n"
        "registries:\n"
        f"  - host: {open_reg.host}\n"
        "    username: me\n"
        "    password: ${SURELY_NOT_SET_42}\n"
        "mirrors:\n"
        f"  - {{name: a, source: {open_reg.host}/x, targets: [{open_reg.host}/y], tags: {{allow: ['(']}}}}\n"
    )
    r = regcast("sync", str(path))
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert "line 5: registries[0].password: environment variable SURELY_NOT_SET_42 is not set" in r.stderr
    r = regcast("sync", str(path), env={"SURELY_NOT_SET_42": "pw"})
    assert r.returncode == 2
    assert "line 7: mirrors[0].tags.allow[0]: invalid regular expression" in r.stderr
    path.write_bytes(b"version: 1\nmirrors:\n  - {name: a, source: reg.example/x\xff, targets: [reg.example/y]}\n")
    r = regcast("sync", "--dry-run", str(path))  # not UTF-8: bad input as well, not a failed pass (1)
    assert (r.returncode, r.stderr) == (2, f"error: {path}: document: not UTF-8 text (byte 55)\n")


def test_text_output_plan_then_pass(
    tmp_path: Path, source: tuple[RegistryServer, str], open_reg: RegistryServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)  # as in CI: no terminal, no width asked for
    reg, repo = source
    prefix = f"text-{secrets.token_hex(3)}"
    mirror = {
        "name": "app",
        "source": f"{reg.host}/{repo}",
        "targets": [f"{open_reg.host}/{prefix}"],
        "tags": {"list": ["stable", "1.4"]},
    }
    path = write_doc(tmp_path, [mirror], [])
    r = regcast("sync", "--dry-run", str(path))
    assert r.returncode == 1, r.stderr  # 2 to copy: not in sync
    assert "2 image(s): 2 to copy, 0 up to date, 0 skipped, 0 failed" in r.stdout
    assert r.stdout.count("copy") >= 2
    # not a terminal (a CI log): every image and target whole, not cut to 80 columns ("127.0.0.1:4…")
    assert f"{reg.host}/{repo}:stable" in r.stdout and f"{reg.host}/{repo}:1.4" in r.stdout, r.stdout
    assert r.stdout.count(f"{open_reg.host}/{prefix}/{repo}") == 2, r.stdout
    r = regcast("sync", str(path))
    assert r.returncode == 0, r.stderr
    assert "2 copied, 0 failed" in r.stdout
    assert tags_at(open_reg, f"{prefix}/{repo}") == ["1.4", "stable"]
    r = regcast("sync", str(path))
    assert r.returncode == 0 and "0 to copy, 2 up to date" in r.stdout, r.stdout
    r = regcast("sync", "--dry-run", str(path))
    assert r.returncode == 0, r.stdout  # in sync: the check passes


def test_a_layout_target_holds_every_selected_tag_and_imports_byte_identical(
    tmp_path: Path, source: tuple[RegistryServer, str], open_reg: RegistryServer, ca_bundle: Path
) -> None:
    reg, repo = source
    archive = tmp_path / "site" / "mirror.tar"
    mirror = {
        "name": "carried",
        "source": f"{reg.host}/{repo}",
        "targets": [open_reg.host, f"oci-archive:{archive}"],
        "tags": {"list": ["1.4.2", MULTI]},
    }
    path = write_doc(tmp_path, [mirror], [])
    code, report, err = sync(path, ca_bundle)
    assert code == 0, (report, err)
    assert report["totals"]["copied"] == 4
    with tarfile.open(archive) as tar:
        index = json.loads(tar.extractfile("index.json").read())  # type: ignore[union-attr]
    names = sorted(m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"])
    assert names == ["1.4.2", MULTI]
    code, report, err = sync(path, ca_bundle)  # nothing changed: the layout answers its tags, nothing moves
    assert code == 0, (report, err)
    assert report["totals"]["copied"] == 0 and report["totals"]["up_to_date"] == 4
    for tag in ("1.4.2", MULTI):  # carried to a registry with no path to the source
        r = regcast("copy", f"oci-archive:{archive}:{tag}", f"{open_reg.host}/carried/{repo.rsplit('/', 1)[-1]}:{tag}")
        assert r.returncode == 0, r.stderr
        assert_same_image(reg.http(), repo, tag, open_reg.http(), f"carried/{repo.rsplit('/', 1)[-1]}", tag)


def test_layout_targets_are_checked_in_documents(tmp_path: Path) -> None:
    from regcast.mirrors.document import DocumentError, load_document

    base = "version: 1\nmirrors:\n  - name: a\n    source: reg.example/app\n    targets: ['{t}']\n"
    with pytest.raises(DocumentError, match="takes no tag"):
        load_document(base.format(t=f"oci-archive:{tmp_path}/x.tar:v1"), {})
    two = (
        base.format(t=f"oci:{tmp_path}/d")
        + f"  - name: b\n    source: reg.example/other\n    targets: ['oci:{tmp_path}/d/']\n"
    )
    with pytest.raises(DocumentError, match="already the target of mirror a"):
        load_document(two, {})
