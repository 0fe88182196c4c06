"""The ASGI app: the seed's two routes, kept byte-compatible, plus list, cancel and health.

Bodies are rendered with ``json.dumps`` defaults (``", "`` and ``": "``), as the seed's were.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError
from starlette.types import ASGIApp, Receive, Scope, Send

from regcast._exceptions import NotFound, RegcastError
from regcast.api.status import job_status
from regcast.config import Settings
from regcast.jobs.models import JobState
from regcast.jobs.runner import client_for, refused_endpoint
from regcast.jobs.secrets import SecretBox
from regcast.jobs.spec import DistributeRequest, describe_validation
from regcast.jobs.store import JobStore
from regcast.jobs.worker import Worker
from regcast.registry.client import describe

log = logging.getLogger("regcast.api")
SUBMIT_CHECK_TIMEOUT = 30.0
SHUTDOWN_GRACE = 20.0


class SeedJSON(JSONResponse):
    def render(self, content: Any) -> bytes:
        return json.dumps(content).encode()


def error(status: int, msg: str) -> SeedJSON:
    return SeedJSON({"status": "error", "msg": msg}, status_code=status)


@dataclass
class Service:
    settings: Settings
    store: JobStore
    box: SecretBox
    run_workers: bool = True
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    worker: Worker | None = None


class BodyLimit:
    """Refuse request bodies over the cap before reading them (413, seed-style body)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await error(413, f"Failed to parse data: body over {self.limit} bytes")(scope, receive, send)
            return
        seen = 0

        async def limited() -> Any:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _TooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await error(413, f"Failed to parse data: body over {self.limit} bytes")(scope, receive, send)


class _TooLarge(Exception):
    pass


class BearerAuth:
    """Every route but /healthz and /readyz needs ``Authorization: Bearer <one of the tokens>``."""

    OPEN = frozenset({"/healthz", "/readyz"})

    def __init__(self, app: ASGIApp, tokens: tuple[str, ...]) -> None:
        self.app = app
        self.tokens = tuple(t.encode() for t in tokens)

    def allowed(self, header: bytes) -> bool:
        scheme, _, given = header.partition(b" ")
        if scheme.lower() != b"bearer" or not given:
            return False
        ok = False
        for token in self.tokens:  # no early exit: every token is compared, in constant time
            ok |= hmac.compare_digest(token, given.strip())
        return ok

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.OPEN:
            await self.app(scope, receive, send)
            return
        header = dict(scope.get("headers") or []).get(b"authorization", b"")
        if not self.allowed(header):
            response = error(401, "unauthorized: send Authorization: Bearer <token>")
            response.headers["WWW-Authenticate"] = 'Bearer realm="regcast"'
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _validation_message(exc: RequestValidationError) -> str:
    err = exc.errors()[0]
    loc = [str(p) for p in err.get("loc", ()) if p != "body"]
    if err.get("type") == "json_invalid":
        return "body is not valid JSON"
    where = ".".join(loc) or "body"
    msg = str(err.get("msg", "invalid"))
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if err.get("type") == "missing":
        msg = "missing field"
    return f"{where}: {msg}"


def create_app(service: Service) -> FastAPI:
    settings, store = service.settings, service.store

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        starter = asyncio.create_task(_start(service), name="startup")
        try:
            yield
        finally:
            if service.worker is not None:
                service.worker.stop()  # running jobs stop cleanly and go back to the queue
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(starter), SHUTDOWN_GRACE)
            starter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starter
            await asyncio.to_thread(store.close)

    app = FastAPI(
        title="regcast",
        version="0.1.0",
        lifespan=lifespan,
        description="Copy one container image from one registry to many.",
    )
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    tokens = settings.tokens()
    if tokens:
        app.add_middleware(BearerAuth, tokens=tokens)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(_req: Request, exc: RequestValidationError) -> SeedJSON:
        return error(400, f"Failed to parse data: {_validation_message(exc)}")

    @app.exception_handler(SQLAlchemyError)
    async def _db_down(_req: Request, exc: SQLAlchemyError) -> SeedJSON:
        log.warning("database error: %s", type(exc).__name__)
        return error(503, "database unavailable")

    @app.post(
        "/api/distribute/image",
        status_code=201,
        responses={
            201: {
                "description": "accepted",
                "content": {
                    "application/json": {"example": {"id": "0b7c...", "msg": "Image sync started", "status": "success"}}
                },
            },
            400: {"description": "bad body"},
            404: {"description": "source image not found"},
            413: {"description": "body too large"},
            502: {"description": "source registry failed"},
        },
    )
    async def distribute(request: Request) -> SeedJSON:
        """Start copying ``source`` to every target (the seed's route).

        The body is read as JSON whatever its Content-Type, as the seed's clients send it.
        """
        try:
            raw = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError):
            return error(400, "Failed to parse data: body is not valid JSON")
        try:
            body = DistributeRequest.model_validate(raw)
        except ValidationError as exc:
            return error(400, f"Failed to parse data: {describe_validation(exc)}")
        if len(body.targets) > settings.max_targets:
            return error(400, f"Failed to parse data: targets: at most {settings.max_targets} targets")
        refused = refused_endpoint(body, settings.registry_patterns)
        if refused:
            return error(400, f"Failed to parse data: {refused}")
        if not service.ready.is_set():
            return error(503, "database unavailable")
        src = body.source
        auth = src.auth.model_dump(by_alias=True) if src.auth else None
        check = settings.model_copy(update={"read_timeout": SUBMIT_CHECK_TIMEOUT})
        client = client_for(src.endpoint, auth, src.verify_tls, check, read_only=True)
        try:
            digest = await asyncio.wait_for(client.head_manifest(src.image, src.ref), SUBMIT_CHECK_TIMEOUT)
        except NotFound:
            digest = None
        except TimeoutError:
            return error(502, f"Source registry error: registry {client.name} did not answer in time")
        except RegcastError as exc:
            return error(502, f"Source registry error: {describe(exc)}")
        finally:
            await client.close()
        if digest is None:
            return error(404, "Image not found")
        targets = [(t.endpoint, t.image or src.image, t.ref or src.ref) for t in body.targets]
        sealed = service.box.seal(body.sealed_auth())
        job_id = await asyncio.to_thread(store.create, body.public(), sealed, targets)
        if service.worker is not None:
            service.worker.wake()
        log.info("job %s: queued (%s/%s:%s to %d target(s))", job_id, src.endpoint, src.image, src.ref, len(targets))
        return SeedJSON({"id": job_id, "msg": "Image sync started", "status": "success"}, status_code=201)

    @app.get("/api/distribute/image/{job_id}", responses={404: {"description": "unknown job id"}})
    async def status(job_id: str) -> SeedJSON:
        """The job's status: the seed's fields first, then per-target detail."""
        job = await asyncio.to_thread(store.get, job_id) if len(job_id) <= 64 else None
        if job is None:
            return error(404, "job with id not found")
        return SeedJSON(job_status(job))

    @app.get("/api/distribute/image")
    async def list_jobs(
        state: JobState | None = None,
        limit: int = Query(50, ge=1, le=500),
        offset: int = Query(0, ge=0, le=1_000_000_000),
    ) -> SeedJSON:
        """Jobs, newest first; filter by ``state``; page with ``limit``/``offset``."""
        page, total = await asyncio.to_thread(store.list_jobs, state.value if state else None, limit, offset)
        return SeedJSON({"jobs": [job_status(j) for j in page], "total": total, "limit": limit, "offset": offset})

    @app.delete(
        "/api/distribute/image/{job_id}",
        responses={404: {"description": "unknown job id"}, 409: {"description": "job already ended"}},
    )
    async def cancel(job_id: str) -> SeedJSON:
        """Cancel a job: a queued job at once, a running one as soon as its worker notices."""
        before = await asyncio.to_thread(store.get, job_id) if len(job_id) <= 64 else None
        if before is None:
            return error(404, "job with id not found")
        if store.is_final(before.state):
            return error(409, f"job already {before.state}")
        job = await asyncio.to_thread(store.request_cancel, job_id)
        assert job is not None
        return SeedJSON(job_status(job), status_code=200 if job.state == JobState.CANCELLED else 202)

    @app.get("/healthz")
    async def healthz() -> SeedJSON:
        """The process is alive."""
        return SeedJSON({"status": "ok"})

    @app.get("/readyz", responses={503: {"description": "database unreachable"}})
    async def readyz() -> SeedJSON:
        """The database answers and the schema is current."""
        if not service.ready.is_set():
            return error(503, "database unavailable")
        try:
            await asyncio.wait_for(asyncio.to_thread(store.ping), 5.0)
        except (SQLAlchemyError, TimeoutError):
            return error(503, "database unavailable")
        return SeedJSON({"status": "ok"})

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            schema = DistributeRequest.model_json_schema(ref_template="#/components/schemas/{model}")
            components = doc.setdefault("components", {}).setdefault("schemas", {})
            components.update(schema.pop("$defs", {}))
            components["DistributeRequest"] = schema
            _document_errors(doc, auth=bool(tokens))
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


ERROR_SCHEMA = {
    "type": "object",
    "properties": {"status": {"type": "string"}, "msg": {"type": "string"}},
    "required": ["status", "msg"],
}


def _document_errors(doc: dict[str, Any], auth: bool) -> None:
    """Document the seed-style errors regcast really answers (400, not FastAPI's 422; 401; 413; 503)."""
    for path, ops in doc.get("paths", {}).items():
        for op in ops.values():
            responses = op.setdefault("responses", {})
            responses.pop("422", None)
            wanted = {"503": "database unavailable"} if path != "/healthz" else {}
            if op.get("parameters") or op.get("requestBody"):
                wanted["400"] = "Failed to parse data: <field>: <why>"
            if op.get("requestBody"):
                wanted["413"] = "body too large"
            if auth and path not in BearerAuth.OPEN:
                wanted["401"] = "unauthorized"
            for code, text in wanted.items():
                responses.setdefault(code, {"description": text})
                responses[code].setdefault("content", {"application/json": {"schema": ERROR_SCHEMA}})
    doc.get("components", {}).get("schemas", {}).pop("HTTPValidationError", None)
    doc.get("components", {}).get("schemas", {}).pop("ValidationError", None)


async def _start(service: Service) -> None:
    """Migrate (retrying while the database is down), then run the workers until shutdown."""
    delay = 1.0
    while True:
        try:
            await asyncio.to_thread(service.store.migrate)
            break
        except SQLAlchemyError as exc:
            log.error("database unavailable (%s); retrying in %.0fs", type(exc).__name__, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)
    service.ready.set()
    if service.run_workers:
        service.worker = Worker(service.store, service.settings, service.box)
        await service.worker.run()
