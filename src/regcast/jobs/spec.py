"""A job's definition: the body of ``POST /api/distribute/image`` (the seed's fields plus extensions).

Two rules from the seed (CONTRACT section 2) shape the models:

- an optional key that is present but empty (``""``, ``null``, ``{}``, ``[]``, or a block whose
  every value is empty, like the README template's ``basicauth``) means the key is absent;
- keys regcast does not know are accepted, but named (``unknown_fields``) so the API can warn,
  or refuse them when ``REGCAST_STRICT_REQUESTS`` is on.

Validation turns every problem into one message naming the field, for the seed's
``400 {"status": "error", "msg": "Failed to parse data: <field>: <why>"}``.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Iterator
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from regcast._exceptions import InvalidInput, InvalidReference
from regcast.registry.auth import Credentials, SeedAuth
from regcast.registry.manifest import Platform
from regcast.registry.reference import parse_endpoint, validate_ref, validate_repository
from regcast.transfer.referrers import ReferrerOptions

TOKEN_TYPES = {"bearer": "Bearer", "jwt": "JWT", "token": "Token"}
TOKEN_KEYS = frozenset({"url", "token_type", "header", "json"})

# Keys of the seed's model that regcast accepts and ignores (never warned about): the seed read
# them from the body too, but they only carried its own bookkeeping (``auth.token`` was always
# replaced by the token fetched from ``auth.url``).
SEED_IGNORED = {"job": {"issuer", "retries_left", "id", "status"}, "auth": {"token"}}

MAX_DEPTH = 32  # JSON nesting of a request (auth.json included): deep enough for any real token body
# C0 and C1 controls, DEL and the Unicode line/paragraph separators: they forge log lines and headers
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}\Z")


def refuse_control_characters(raw: Any) -> str | None:
    """``field: why`` for the first string (key or value) holding a control character, or for nesting
    deeper than ``MAX_DEPTH``; None when the body is clean. Iterative: no recursion on hostile depth."""
    todo: list[tuple[Any, str, int]] = [(raw, "", 0)]
    while todo:
        value, path, depth = todo.pop()
        if depth > MAX_DEPTH:
            return f"{path or 'body'}: nested deeper than {MAX_DEPTH} levels"
        if isinstance(value, str):
            if path.endswith("auth.header"):  # the seed's string form: "Name: value" lines
                value = value.replace("\r\n", "\n").replace("\n", "")
            if _CONTROL.search(value):
                return f"{path or 'body'}: control characters (newline, tab, escape...) are not allowed"
        elif isinstance(value, dict):
            for key, item in value.items():
                where = f"{path}.{key}" if path else str(key)
                if isinstance(key, str) and _CONTROL.search(key):
                    return f"{path or 'body'}: control characters are not allowed in keys"
                todo.append((item, where, depth + 1))
        elif isinstance(value, list):
            todo.extend((item, f"{path}.{i}" if path else str(i), depth + 1) for i, item in enumerate(value))
    return None


def is_empty(value: Any) -> bool:
    """``""``, ``null``, ``{}``, ``[]``, or a mapping whose every value is empty."""
    if value is None or value == "" or value == [] or value == {}:
        return True
    return isinstance(value, dict) and all(is_empty(v) for v in value.values())


class _SeedModel(BaseModel):
    """Extra keys ignored (named separately by ``unknown_fields``); empty optional keys dropped."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _empty_means_absent(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        optional = {f.alias or name for name, f in cls.model_fields.items() if not f.is_required()}
        return {k: v for k, v in data.items() if not (k in optional and is_empty(v))}


def _not_empty(v: Any) -> Any:
    if v is None or (isinstance(v, str) and not v.strip()):
        raise ValueError("must not be empty")
    return v


def _header(v: Any) -> Any:
    """The seed typed ``header`` as a string: ``Name: value`` lines are read as headers."""
    if not isinstance(v, str):
        return v
    headers: dict[str, str] = {}
    for line in v.splitlines():
        if not line.strip():
            continue
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise ValueError("must be an object of headers or 'Name: value' lines")
        headers[name.strip()] = value.strip()
    return headers


class BasicAuthIn(_SeedModel):
    user: Annotated[str, BeforeValidator(_not_empty), Field(max_length=1024)]
    password: str = Field("", max_length=16384, repr=False)  # a model printed in a log shows no secret
    # a Docker config's OAuth2 refresh token (ACR), sealed with the password: never stored or shown in clear
    identitytoken: str | None = Field(None, max_length=16384, repr=False)


class AuthIn(_SeedModel):
    """The seed's ``auth`` block. With ``basicauth`` the token fields are ignored, as in the seed."""

    url: str | None = Field(None, max_length=4096, repr=False)  # its query may hold an api_key
    token_type: str = "Bearer"
    header: Annotated[dict[str, str] | None, BeforeValidator(_header), Field(repr=False)] = None
    json_body: Any = Field(None, alias="json", repr=False)
    basicauth: BasicAuthIn | None = None

    @model_validator(mode="before")
    @classmethod
    def _basicauth_wins(cls, data: Any) -> Any:
        """With ``basicauth`` the token setup is not used, so it is not checked either (the seed's rule)."""
        if isinstance(data, dict) and not is_empty(data.get("basicauth")):
            return {k: v for k, v in data.items() if k not in TOKEN_KEYS}
        return data

    @field_validator("token_type")
    @classmethod
    def _token_type(cls, v: str) -> str:
        if v.lower() not in TOKEN_TYPES:
            raise ValueError("must be Bearer or JWT")
        return TOKEN_TYPES[v.lower()]

    @field_validator("header")
    @classmethod
    def _header_names(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        for name in v or {}:
            if not _HEADER_NAME.match(name):
                raise ValueError(f"{name[:60]!r} is not a valid HTTP header name")
        return v

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL")
        return v

    def credentials(self) -> Credentials | None:
        b = self.basicauth
        return Credentials(b.user, b.password, b.identitytoken) if b else None

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


def _platform(v: str) -> str:
    Platform.parse(v)
    return v


EndpointStr = Annotated[str, BeforeValidator(_not_empty), Field(max_length=2048), AfterValidator(_endpoint)]
RepositoryStr = Annotated[str, BeforeValidator(_not_empty), AfterValidator(_repository)]
RefStr = Annotated[str, BeforeValidator(_not_empty), AfterValidator(_ref)]
PlatformStr = Annotated[str, AfterValidator(_platform)]
# RFC 6838 type/subtype (+suffix), as artifactType values are written
MEDIA_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}\Z")


def _media_type(v: str) -> str:
    if not MEDIA_TYPE.match(v):
        raise ValueError("not a media type (type/subtype, e.g. application/spdx+json)")
    return v


MediaTypeStr = Annotated[str, AfterValidator(_media_type)]


class SourceIn(_SeedModel):
    endpoint: EndpointStr
    image: RepositoryStr
    ref: RefStr
    verify_tls: bool = True
    allow_plain_http: bool = False  # verify_tls false, no TLS spoken: may Basic credentials go in clear?
    auth: AuthIn | None = None


class TargetIn(_SeedModel):
    endpoint: EndpointStr
    overwrite: bool = False
    verify_tls: bool = True
    allow_plain_http: bool = False  # verify_tls false, no TLS spoken: may Basic credentials go in clear?
    auth: AuthIn | None = None
    image: RepositoryStr | None = None
    ref: RefStr | None = None


NOTIFY_EVENTS = ("finished", "failed", "cancelled")


class NotifyIn(_SeedModel):
    """Where to POST the job's summary when it ends (``ops/notify.py``); url and secret are sealed."""

    url: str = Field(max_length=4096, repr=False)  # a chat hook's path is its secret
    events: list[str] = Field(default_factory=lambda: list(NOTIFY_EVENTS))
    secret: str | None = Field(None, max_length=4096, repr=False)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")) or not urlsplit(v).hostname:
            raise ValueError("must be an http(s) URL")
        return v

    @field_validator("events")
    @classmethod
    def _events(cls, v: list[str]) -> list[str]:
        for e in v:
            if e not in NOTIFY_EVENTS:
                raise ValueError(f"unknown event {e!r}: one of {', '.join(NOTIFY_EVENTS)}")
        return v


class DistributeRequest(_SeedModel):
    @model_validator(mode="before")
    @classmethod
    def _clean_strings(cls, raw: Any) -> Any:
        problem = refuse_control_characters(raw)
        if problem:
            raise ValueError(problem)
        return raw

    source: SourceIn
    targets: list[TargetIn]  # may be empty: the seed accepted that (a job with nothing to do, FINISHED)
    platforms: list[PlatformStr] | None = None
    notify: NotifyIn | None = None
    referrers: bool = True  # signatures, attestations, SBOMs travel with the image
    referrer_types: list[MediaTypeStr] | None = Field(None, max_length=100)  # only these artifact types
    spool: bool | None = None  # detached targets finish from an on-disk copy (True) or a second read; None: default

    def platform_list(self) -> list[Platform] | None:
        return [Platform.parse(p) for p in self.platforms] if self.platforms else None

    def referrer_options(self) -> ReferrerOptions:
        return ReferrerOptions(self.referrers, frozenset(self.referrer_types or ()))

    def public(self) -> dict[str, Any]:
        """The request as stored and shown: every credential left out."""
        src = self.source.model_dump(exclude={"auth"})
        src["auth"] = self.source.auth is not None
        targets = []
        for t in self.targets:
            d = t.model_dump(exclude={"auth"})
            d["auth"] = t.auth is not None
            targets.append(d)
        public: dict[str, Any] = {
            "source": src,
            "targets": targets,
            "platforms": self.platforms,
            "referrers": self.referrers,
            "referrer_types": self.referrer_types,
        }
        if self.spool is not None:  # only when asked: requests without it are stored as before
            public["spool"] = self.spool
        if self.notify:  # the URL may itself be a secret (chat hooks): only its host is shown
            host = urlsplit(self.notify.url).netloc.rsplit("@", 1)[-1]
            public["notify"] = {
                "url": f"{urlsplit(self.notify.url).scheme}://{host}/...",
                "events": self.notify.events,
                "secret": self.notify.secret is not None,
            }
        return public

    def has_secret(self) -> bool:
        """Anything to seal (an auth block, a hook)? Without, a job stores no ciphertext and no attempt
        decrypts one (#17), whoever queued it: the POST or a mirror run."""
        return self.source.auth is not None or any(t.auth is not None for t in self.targets) or bool(self.notify)

    def sealed_auth(self) -> dict[str, Any]:
        """Every auth block, for encrypted storage."""

        def dump(a: AuthIn | None) -> dict[str, Any] | None:
            return a.model_dump(by_alias=True) if a else None

        sealed: dict[str, Any] = {"source": dump(self.source.auth), "targets": [dump(t.auth) for t in self.targets]}
        if self.notify:
            sealed["notify"] = self.notify.model_dump()
        return sealed


def describe_validation(exc: ValidationError) -> str:
    """The first problem, naming the field: ``targets.0.endpoint: invalid endpoint URL ...``."""
    err = exc.errors(include_url=False)[0]
    loc = ".".join(str(p) for p in err["loc"]) or "body"
    msg = str(err["msg"])
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
        if not err["loc"]:  # a whole-body check already names its field
            return msg
    if err["type"] == "missing":
        msg = "missing field"
    elif err["type"] == "model_type":  # pydantic names the class (SourceIn): the user wrote JSON
        msg = "Input should be an object"
    return f"{loc}: {msg}"


def _model_of(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """The model inside ``M``, ``M | None`` or ``list[M]``, and whether it is a list."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            model, many = _model_of(arg)
            if model is not None:
                return model, many
        return None, False
    if origin is list:
        model, _ = _model_of(typing.get_args(annotation)[0])
        return model, True
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    return None, False


def unknown_fields(raw: Any, model: type[BaseModel] = DistributeRequest, where: str = "") -> Iterator[str]:
    """Dotted paths of the keys in ``raw`` that ``model`` does not know (``targets.0.overwite``)."""
    if not isinstance(raw, dict):
        return
    known = {f.alias or name for name, f in model.model_fields.items()}
    ignored = SEED_IGNORED["job"] if model is DistributeRequest else SEED_IGNORED["auth"] if model is AuthIn else set()
    for key, value in raw.items():
        path = f"{where}{key}"
        if key not in known:
            if key not in ignored:
                yield path
            continue
        name = next(n for n, f in model.model_fields.items() if (f.alias or n) == key)
        inner, many = _model_of(model.model_fields[name].annotation)
        if inner is None:
            continue
        if many and isinstance(value, list):
            for i, item in enumerate(value):
                yield from unknown_fields(item, inner, f"{path}.{i}.")
        elif not many:
            yield from unknown_fields(value, inner, f"{path}.")


def parse_request(raw: Any, *, strict: bool = False) -> tuple[DistributeRequest, list[str]]:
    """The request and its warnings (``unknown field targets.0.overwite``).

    Raises ``InvalidInput("<field>: <why>")``; with ``strict`` an unknown field is such an error.
    """
    problem = refuse_control_characters(raw)  # first: iterative, so hostile depth reaches nothing recursive
    if problem:
        raise InvalidInput(problem)
    unknown = list(unknown_fields(raw))
    if strict and unknown:
        raise InvalidInput(f"{unknown[0]}: unknown field (REGCAST_STRICT_REQUESTS is on)")
    try:
        request = DistributeRequest.model_validate(raw)
    except ValidationError as exc:
        raise InvalidInput(describe_validation(exc)) from None
    return request, [f"unknown field {u}" for u in unknown]
