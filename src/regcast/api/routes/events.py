"""``POST /api/events/<name>``: registries' push notifications (open to the registry, signed with its secret).

A registry cannot send regcast's API token, so this route is outside the bearer check; it needs the
``events.secret`` of a stored mirror set instead (``triggers/signature.py`` lists the ways). Anything
unsigned, or for a name no mirror listens to, is a 401; a body in no known format a 400; never a 500.
"""

from __future__ import annotations

from fastapi import APIRouter, Path, Request

from regcast.api.responses import SeedJSON, error
from regcast.api.service import ServiceDep
from regcast.triggers.dispatch import PushTriggers, Unauthorized
from regcast.triggers.envelopes import EnvelopeError

router = APIRouter(tags=["events"])
NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"


def _triggers(service: object) -> PushTriggers:
    triggers = getattr(service, "triggers", None)
    assert isinstance(triggers, PushTriggers)
    return triggers


@router.post(
    "/api/events/{name}",
    status_code=202,
    openapi_extra={
        "requestBody": {
            "content": {
                "application/vnd.docker.distribution.events.v1+json": {"schema": {"type": "object"}},
                "application/json": {"schema": {"type": "object"}},
                "application/cloudevents+json": {"schema": {"type": "object"}},
            },
            "required": True,
        }
    },
    responses={
        400: {"description": "not a push notification regcast reads"},
        401: {"description": "unknown events source, or not signed with its secret"},
        503: {"description": "database unavailable"},
    },
)
async def receive(request: Request, service: ServiceDep, name: str = Path(pattern=NAME, max_length=100)) -> SeedJSON:
    """Push notifications of distribution, Harbor, Docker Hub, GitHub or CloudEvents: each pushed tag a
    mirror selects is copied to its targets once, however often the event is delivered."""
    if not service.ready.is_set():
        return error(503, "database unavailable")
    headers = {k.lower(): v for k, v in request.headers.items()}
    body = await request.body()
    triggers = _triggers(service)
    try:
        done = await triggers.receive(name, headers, dict(request.query_params), body)
    except Unauthorized:
        return error(401, "unauthorized: unknown events source or wrong secret")
    except EnvelopeError as exc:
        return error(400, f"Failed to parse data: {exc}")
    return SeedJSON(done.public(), status_code=202)


@router.get("/api/events")
async def summary(service: ServiceDep) -> SeedJSON:
    """Push events this process received, by outcome, and its last push-to-in-sync lag (the dashboard's)."""
    return SeedJSON(_triggers(service).summary())
