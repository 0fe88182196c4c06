"""Every push-notification format read into ``PushEvent``; signatures checked every way a sender signs."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json

import pytest

from regcast.triggers.envelopes import Action, EnvelopeError, PushEvent, parse_envelope
from regcast.triggers.signature import signed_with

DIGEST = "sha256:" + "c" * 64
MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


def parse(doc: object, **headers: str) -> list[PushEvent]:
    return parse_envelope(json.dumps(doc).encode(), headers)


def test_distribution_envelope_manifest_blob_and_pull() -> None:
    events = parse(
        {
            "events": [
                {
                    "action": "push",
                    "timestamp": "2026-11-29T10:00:00.123456789Z",
                    "target": {"mediaType": MANIFEST, "digest": DIGEST, "repository": "team/app", "tag": "v1"},
                },
                {
                    "action": "push",
                    "target": {
                        "mediaType": "application/octet-stream",
                        "digest": DIGEST,
                        "repository": "team/app",
                        "url": "http://r/v2/team/app/blobs/" + DIGEST,
                    },
                },
                {"action": "pull", "target": {"mediaType": MANIFEST, "digest": DIGEST, "repository": "team/app"}},
                {"action": "push", "target": {"mediaType": MANIFEST, "digest": DIGEST, "repository": "team/app"}},
            ]
        }
    )
    assert events[0] == PushEvent(
        Action.PUSH, "team/app", "v1", DIGEST, MANIFEST, True, dt.datetime(2026, 11, 29, 10, 0, 0, 123456, dt.UTC)
    )
    assert [e.actionable for e in events] == [True, False, False, False]
    assert [e.why_ignored() for e in events[1:]] == ["a blob, not a manifest", "not a push or delete", "no tag"]


def test_distribution_delete_by_digest_is_actionable() -> None:
    (event,) = parse({"events": [{"action": "delete", "target": {"digest": DIGEST, "repository": "a/b"}}]})
    assert event.action is Action.DELETE
    assert event.actionable


def test_harbor_webhook_and_its_cloudevent() -> None:
    data = {"resources": [{"digest": DIGEST, "tag": "1.0"}], "repository": {"namespace": "lib", "name": "nginx"}}
    (plain,) = parse({"type": "PUSH_ARTIFACT", "occur_at": 1764410400, "event_data": data})
    assert (plain.action, plain.repository, plain.tag, plain.digest) == (Action.PUSH, "lib/nginx", "1.0", DIGEST)
    assert plain.at == dt.datetime(2025, 11, 29, 10, 0, tzinfo=dt.UTC)
    (ce,) = parse({"specversion": "1.0", "type": "harbor.artifact.pushed", "id": "1", "data": data})
    assert (ce.action, ce.repository, ce.tag) == (Action.PUSH, "lib/nginx", "1.0")
    (deleted,) = parse({"type": "DELETE_ARTIFACT", "event_data": data})
    assert deleted.action is Action.DELETE


def test_docker_hub_webhook_has_no_digest_and_official_images_get_library() -> None:
    (event,) = parse({"push_data": {"tag": "latest", "pushed_at": 1417566161}, "repository": {"repo_name": "nginx"}})
    assert (event.repository, event.tag, event.digest) == ("library/nginx", "latest", None)


def test_github_package_event() -> None:
    body = {
        "action": "published",
        "package": {
            "name": "App",
            "namespace": "Org",
            "package_type": "CONTAINER",
            "package_version": {"version": DIGEST, "container_metadata": {"tag": {"name": "v2", "digest": DIGEST}}},
        },
    }
    (event,) = parse(body)
    assert (event.action, event.repository, event.tag, event.digest) == (Action.PUSH, "org/app", "v2", DIGEST)
    body["package"]["package_type"] = "npm"  # type: ignore[index]
    assert not parse(body)[0].actionable


def test_cloudevents_binary_mode_batch_and_acr_shape() -> None:
    data = {"target": {"mediaType": MANIFEST, "digest": DIGEST, "repository": "x/y", "tag": "t"}}
    (binary,) = parse(data, **{"ce-type": "Microsoft.ContainerRegistry.ImagePushed", "ce-specversion": "1.0"})
    assert (binary.action, binary.repository, binary.tag) == (Action.PUSH, "x/y", "t")
    batch = parse(
        [{"specversion": "1.0", "type": "com.example.image.deleted", "data": {"repository": "x/y", "tag": "t"}}]
    )
    assert batch[0].action is Action.DELETE


@pytest.mark.parametrize(
    "body",
    [b"{nope", b'"a string"', b'{"hello": 1}', b"[" * 100_000 + b"]" * 100_000],
)
def test_bodies_in_no_known_format_are_envelope_errors(body: bytes) -> None:
    with pytest.raises(EnvelopeError):
        parse_envelope(body, {})


def test_signatures_every_way_and_none_other() -> None:
    body = b'{"events": []}'
    secret = "s3cret-value"
    mac = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    assert signed_with(secret, {"authorization": f"Bearer {secret}"}, {}, body)
    assert signed_with(secret, {"authorization": f"bearer  {secret} "}, {}, body)
    assert signed_with(secret, {"authorization": secret}, {}, body)
    assert signed_with(secret, {"x-hub-signature-256": mac}, {}, body)
    assert signed_with(secret, {}, {"token": secret}, body)
    assert not signed_with(secret, {}, {}, body)
    assert not signed_with(secret, {"authorization": "Bearer s3cret-valu"}, {}, body)
    assert not signed_with(secret, {"authorization": f"Basic {secret}"}, {}, body)
    assert not signed_with(secret, {"x-hub-signature-256": mac}, {}, body + b" ")
    assert not signed_with(secret, {"x-hub-signature-256": mac.replace("sha256=", "sha1=")}, {}, body)
