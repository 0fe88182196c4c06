"""The OpenAPI document: the request model's schema, and the seed-style errors regcast really answers."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from regcast.api.middleware import BearerAuth
from regcast.jobs.spec import DistributeRequest

ERROR_SCHEMA = {
    "type": "object",
    "properties": {"status": {"type": "string"}, "msg": {"type": "string"}},
    "required": ["status", "msg"],
}


def build_openapi(app: FastAPI, auth: bool) -> dict[str, Any]:
    """The document for ``app``, built once and cached on it."""
    if app.openapi_schema is None:
        doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        schema = DistributeRequest.model_json_schema(ref_template="#/components/schemas/{model}")
        components = doc.setdefault("components", {}).setdefault("schemas", {})
        components.update(schema.pop("$defs", {}))
        components["DistributeRequest"] = schema
        document_errors(doc, auth=auth)
        _declare_bearer(doc, auth=auth)
        app.openapi_schema = doc
    return app.openapi_schema


def document_errors(doc: dict[str, Any], auth: bool) -> None:
    """Document the seed-style errors regcast really answers (400, not FastAPI's 422; 401; 413; 503)."""
    for path, ops in doc.get("paths", {}).items():
        for op in ops.values():
            responses = op.setdefault("responses", {})
            responses.pop("422", None)
            for code, text in _wanted(path, op, auth).items():
                responses.setdefault(code, {"description": text})
                responses[code].setdefault("content", {"application/json": {"schema": ERROR_SCHEMA}})
    doc.get("components", {}).get("schemas", {}).pop("HTTPValidationError", None)
    doc.get("components", {}).get("schemas", {}).pop("ValidationError", None)


def _wanted(path: str, op: dict[str, Any], auth: bool) -> dict[str, str]:
    wanted = {"503": "database unavailable"} if path != "/healthz" else {}
    if op.get("parameters") or op.get("requestBody"):
        wanted["400"] = "Failed to parse data: <field>: <why>"
    if op.get("requestBody"):
        wanted["413"] = "body too large"
    if auth and path not in BearerAuth.OPEN:
        wanted["401"] = "unauthorized"
    return wanted


def _declare_bearer(doc: dict[str, Any], auth: bool) -> None:
    """The bearer scheme (REGCAST_API_TOKENS); required by every route but the open ones when tokens are set."""
    doc.setdefault("components", {})["securitySchemes"] = {
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "one of REGCAST_API_TOKENS; needed only when the service has tokens set",
        }
    }
    if not auth:
        return
    for path, ops in doc.get("paths", {}).items():
        if path not in BearerAuth.OPEN:
            for op in ops.values():
                op["security"] = [{"bearer": []}]
