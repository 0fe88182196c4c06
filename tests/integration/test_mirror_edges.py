"""Mirror-set documents as an outside tester writes them (CONTRACT section 4)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from regcast.mirrors.document import DocumentError, load_document
from regcast.mirrors.select import mirror_selects
from tests.support import images
from tests.support.cli import regcast
from tests.support.images import signed_image
from tests.support.registry import RegistryServer, free_port


def tags_at(reg: RegistryServer, repo: str) -> list[str]:
    r = reg.http().client.get(f"{repo}/tags/list")
    return sorted(r.json().get("tags") or []) if r.status_code == 200 else []


def test_referrers_false_leaves_signatures_behind_even_when_every_tag_is_selected(
    tmp_path: Path, repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    signed_image(src_reg, repo)  # v1, its cosign .sig tag, the <alg>-<hex> fallback index, an SBOM's
    assert len(tags_at(src_reg, repo)) == 4
    doc = {
        "version": 1,
        "mirrors": [
            {"name": "with", "source": f"{src_reg.host}/{repo}", "targets": [f"{open_reg.host}/with"]},
            {
                "name": "without",
                "source": f"{src_reg.host}/{repo}",
                "targets": [f"{open_reg.host}/without"],
                "referrers": False,
            },
        ],
    }
    path = tmp_path / "mirrors.json"
    path.write_text(json.dumps(doc))
    plan = regcast("sync", str(path), "--dry-run", "--json")
    planned = {m["name"]: sorted(i["tag"] for i in m["images"]) for m in json.loads(plan.stdout)["mirrors"]}
    assert planned["without"] == ["v1"]  # the referrer tags were selected as images of their own
    done = regcast("sync", str(path))
    assert done.returncode == 0, done.stderr
    assert tags_at(open_reg, f"without/{repo}") == ["v1"]
    assert tags_at(open_reg, f"with/{repo}") == tags_at(src_reg, repo)


def test_a_push_of_a_signature_tag_is_not_a_mirror_image_with_referrers_false() -> None:
    sig = "sha256-" + "ab" * 32 + ".sig"
    text = "version: 1\nmirrors:\n  - {name: m, source: reg.example/app, targets: [dst.example], referrers: %s}\n"
    for referrers, selected in (("true", True), ("false", False)):
        doc = load_document(text % referrers, {})
        assert mirror_selects(doc, doc.mirrors[0], "reg.example", "app", sig) is selected
        assert mirror_selects(doc, doc.mirrors[0], "reg.example", "app", "v1") is True


def test_unquoted_numbers_and_booleans_in_yaml_are_named_with_the_fix() -> None:
    text = (
        "version: 1\n"
        "mirrors:\n"
        "  - name: on\n"  # YAML 1.1: the boolean true
        "    source: reg.example/app\n"
        "    targets: [dst.example]\n"
        "    tags: {list: [1.10]}\n"  # the number 1.1: a tag '1.10' could never be meant
    )
    with pytest.raises(DocumentError) as caught:
        load_document(text, {})
    assert str(caught.value).split("; ") == [
        "line 3: mirrors[0].name: expected text, but YAML read a boolean here: put the value in quotes",
        "line 6: mirrors[0].tags.list[0]: expected text, but YAML read a number here: put the value in quotes",
    ]


def test_a_layout_as_a_mirror_source_is_refused_saying_what_a_layout_is_for() -> None:
    text = "version: 1\nmirrors:\n  - {name: m, source: 'oci-archive:/srv/site.tar', targets: [dst.example]}\n"
    with pytest.raises(DocumentError) as caught:
        load_document(text, {})
    assert "line 3: mirrors[0].source: 'oci-archive:/srv/site.tar': a mirror's source is a registry repository" in str(
        caught.value
    )  # was: invalid registry host 'oci-archive:'


def test_a_target_registry_down_fails_that_target_only_and_the_others_of_each_image_are_synced(
    tmp_path: Path, repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    images.image([images.layer_bytes(1200)]).push(src_reg.http(), repo, "1.0.0")
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    doc = {
        "version": 1,
        "target_groups": {"prod": [f"{open_reg.host}/up", dead]},
        "mirrors": [
            {"name": "app", "source": f"{src_reg.host}/{repo}", "repository": "moved/app", "targets": ["@prod"]}
        ],
    }
    path = tmp_path / "mirrors.json"
    path.write_text(json.dumps(doc))
    plan = regcast("sync", str(path), "--dry-run", "--json")
    assert plan.returncode == 1, plan.stderr
    (image,) = json.loads(plan.stdout)["mirrors"][0]["images"]
    assert [(t["target"], t["action"]) for t in image["targets"]] == [
        (f"{open_reg.host}/up/moved/app", "copy"),  # was: failed, for the other target's connection error
        (f"{dead}/moved/app", "failed"),
    ]
    assert tags_at(open_reg, "up/moved/app") == []  # a dry run copies nothing
    done = regcast("sync", str(path), "--json")
    assert done.returncode == 1, done.stderr  # not every image is in every target
    report = json.loads(done.stdout)
    (image,) = report["mirrors"][0]["images"]
    up, down = image["targets"]
    assert (up["state"], up["error"]) == ("copied", None)
    assert down["state"] == "failed" and f"GET http://{dead}/v2/: connection failed" in down["error"]
    assert (report["ok"], report["totals"]["copied"], report["totals"]["failed"]) == (False, 1, 1)
    assert tags_at(open_reg, "up/moved/app") == ["1.0.0"]
