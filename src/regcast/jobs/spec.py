"""A job's definition: the body of ``POST /api/distribute/image`` (the seed's fields plus extensions).

Validation turns every problem into one message naming the field, for the seed's
``400 {"status": "error", "msg": "Failed to parse data: <field>: <why>"}``.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from regcast._exceptions import InvalidReference
from regcast.registry.auth import Credentials, SeedAuth
from regcast.registry.manifest import Platform
from regcast.registry.reference import parse_endpoint, validate_ref, validate_repository

TOKEN_TYPES = {"bearer": "Bearer", "jwt": "JWT", "token": "Token"}


class BasicAuthIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    user: str = Field(min_length=1, max_length=1024)
    password: str = Field(max_length=16384)


class AuthIn(BaseModel):
    """The seed's ``auth`` block. With ``basicauth`` the token fields are ignored, as in the seed."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    url: str | None = Field(None, max_length=4096)
    token_type: str = "Bearer"
    header: dict[str, str] | None = None
    json_body: Any = Field(None, alias="json")
    basicauth: BasicAuthIn | None = None

    @field_validator("token_type")
    @classmethod
    def _token_type(cls, v: str) -> str:
        if v.lower() not in TOKEN_TYPES:
            raise ValueError("must be Bearer or JWT")
        return TOKEN_TYPES[v.lower()]

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL")
        return v

    def credentials(self) -> Credentials | None:
        return Credentials(self.basicauth.user, self.basicauth.password) if self.basicauth else None

    def seed_auth(self) -> SeedAuth | None:
        if self.basicauth or not self.url:
            return None
        return SeedAuth(self.url, self.token_type, dict(self.header or {}), self.json_body)


def _endpoint(v: str) -> str:
    try:
        parse_endpoint(v)
    except InvalidReference as exc:
        raise ValueError(str(exc)) from None
    return v


def _repository(v: str) -> str:
    try:
        return validate_repository(v)
    except InvalidReference as exc:
        raise ValueError(str(exc)) from None


def _ref(v: str) -> str:
    try:
        return validate_ref(v)
    except InvalidReference as exc:
        raise ValueError(str(exc)) from None


EndpointStr = Annotated[str, Field(max_length=2048), AfterValidator(_endpoint)]
RepositoryStr = Annotated[str, AfterValidator(_repository)]
RefStr = Annotated[str, AfterValidator(_ref)]


class SourceIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    endpoint: EndpointStr
    image: RepositoryStr
    ref: RefStr
    verify_tls: bool = True
    auth: AuthIn | None = None


class TargetIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    endpoint: EndpointStr
    overwrite: bool = False
    verify_tls: bool = True
    auth: AuthIn | None = None
    image: RepositoryStr | None = None
    ref: RefStr | None = None


class DistributeRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    source: SourceIn
    targets: list[TargetIn] = Field(min_length=1)
    platforms: list[str] | None = None

    @field_validator("platforms")
    @classmethod
    def _platforms(cls, v: list[str] | None) -> list[str] | None:
        for p in v or []:
            Platform.parse(p)
        return v

    def platform_list(self) -> list[Platform] | None:
        return [Platform.parse(p) for p in self.platforms] if self.platforms else None

    def public(self) -> dict[str, Any]:
        """The request as stored and shown: every credential left out."""
        src = self.source.model_dump(exclude={"auth"})
        src["auth"] = self.source.auth is not None
        targets = []
        for t in self.targets:
            d = t.model_dump(exclude={"auth"})
            d["auth"] = t.auth is not None
            targets.append(d)
        return {"source": src, "targets": targets, "platforms": self.platforms}

    def sealed_auth(self) -> dict[str, Any]:
        """Every auth block, for encrypted storage."""

        def dump(a: AuthIn | None) -> dict[str, Any] | None:
            return a.model_dump(by_alias=True) if a else None

        return {"source": dump(self.source.auth), "targets": [dump(t.auth) for t in self.targets]}


def describe_validation(exc: ValidationError) -> str:
    """The first problem, naming the field: ``targets.0.endpoint: invalid endpoint URL ...``."""
    err = exc.errors(include_url=False)[0]
    loc = ".".join(str(p) for p in err["loc"]) or "body"
    msg = str(err["msg"])
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if err["type"] == "missing":
        msg = "missing field"
    return f"{loc}: {msg}"
