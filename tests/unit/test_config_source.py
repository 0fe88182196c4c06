"""Settings without pydantic on the plain path (config_source.py): never a second, divergent parser.

What config_source converts itself must be what pydantic makes of the same value, knob by knob; and
``load_settings`` must give what a pydantic-settings class of the same declaration gives (the reading
before issue 17), errors included.
"""

from __future__ import annotations

import dataclasses
import logging
import typing
from typing import Any

import pytest
from pydantic import Field, TypeAdapter, ValidationError, create_model
from pydantic_settings import BaseSettings, SettingsConfigDict

from regcast._exceptions import ConfigError
from regcast.config import Bounds, Settings, load_settings
from regcast.config_source import NotPlain, convert, hint

HINTS = typing.get_type_hints(Settings)
FIELDS = dataclasses.fields(Settings)
SAMPLES: list[Any] = [
    *("", "0", "1", "5", "007", "-1", "+1", " 5", "5 ", "1_000", "1e3", "0x10", "1.5", "1.0", ".5", "5."),
    *("inf", "-inf", "nan", "NaN", "true", "True", "TRUE", "yes", "Yes", "on", "off", "no", "false", "0.0"),
    *("t", "f", "y", "n", "auto", "chunked", "AUTO", "json", "text", "x", "65535", "65536", "1024", "16384"),
    *("99999999999999999999", "0.000001", "1048576", "4194304", "30d", "\u0665", "１"),  # noqa: RUF001
    *(0, 5, 5.0, 1.5, -1, True, False, None, 70000, 2**62, float("nan"), float("inf")),
]


def _pydantic_field(f: dataclasses.Field[Any]) -> tuple[Any, Any]:
    bounds = f.metadata.get("bounds") or Bounds()
    default = {"default": f.default} if f.default is not dataclasses.MISSING else {"default_factory": f.default_factory}
    return HINTS[f.name], Field(**default, ge=bounds.ge, gt=bounds.gt, le=bounds.le)


@pytest.mark.parametrize("f", FIELDS, ids=[f.name for f in FIELDS])
def test_what_is_converted_here_is_what_pydantic_makes_of_it(f: dataclasses.Field[Any]) -> None:
    tp, info = _pydantic_field(f)
    assert hint(f) == tp  # the knob's type read alone, as typing.get_type_hints reads them all
    adapter: TypeAdapter[Any] = TypeAdapter(typing.Annotated[tp, info])  # type: ignore[arg-type]
    converted = 0
    for raw in [*SAMPLES, str(f.default), repr(f.default)]:
        try:
            ours = convert(hint(f), f.metadata.get("bounds"), raw)
        except NotPlain:
            continue
        converted += 1
        theirs = adapter.validate_python(raw)  # raises if pydantic refuses what we accepted
        assert (ours, type(ours)) == (theirs, type(theirs)), (f.name, raw)
    assert converted or f.name == "chunk_caps"  # a dict knob is always pydantic's


def _reference() -> type[BaseSettings]:
    """The Settings class as it was: pydantic-settings over the same declaration."""
    fields = {f.name: _pydantic_field(f) for f in FIELDS}
    config = SettingsConfigDict(env_prefix="REGCAST_", extra="ignore", frozen=True)
    model: type[BaseSettings] = create_model("Settings", __base__=BaseSettings, __config__=None, **fields)  # type: ignore[call-overload]
    model.model_config.update(config)
    model.model_rebuild(force=True)
    return model


ENVIRONMENTS: list[dict[str, str]] = [
    {},
    {"REGCAST_PORT": "6000", "REGCAST_LOG_FORMAT": "json", "REGCAST_BLOCK_PRIVATE": "yes"},
    {"regcast_blobs_in_flight": "8", "Regcast_Detach_After": "0.25", "REGCAST_SPOOL_DIR": ""},
    {"REGCAST_CHUNK_CAPS": '{"ghcr.io": 2097152, "example.com": 8388608}', "REGCAST_CHUNK_CAP": "1048576"},
    {"REGCAST_PORT": " 6000 ", "REGCAST_READ_TIMEOUT": "1e2", "REGCAST_METRICS_PUBLIC": "TRUE"},
    {"REGCAST_REQUEST_RETRIES": "1_0", "REGCAST_NOTIFY_BACKOFF": "0", "REGCAST_UNKNOWN_KNOB": "x"},
    {"REGCAST_DATABASE_URL": "postgres://u@h/db", "REGCAST_SECRET_KEY": "k" * 32, "REGCAST_CA_BUNDLE": "/x.pem"},
    {"REGCAST_STALE_AFTER": "30", "REGCAST_HEARTBEAT_INTERVAL": "10", "REGCAST_JOB_RETENTION": "0"},
]
ERRORS: list[dict[str, str]] = [
    {"REGCAST_PORT": "x"},
    {"REGCAST_PORT": "0"},
    {"REGCAST_BLOBS_IN_FLIGHT": "65"},
    {"REGCAST_UPLOAD_STRATEGY": "AUTO"},
    {"REGCAST_READ_TIMEOUT": "0"},
    {"REGCAST_CHUNK_CAPS": "{not json"},
    {"REGCAST_CHUNK_CAPS": '{"ghcr.io": "big"}'},
    {"REGCAST_ALLOW_UNAUTHENTICATED": "maybe"},
    {"REGCAST_STALE_AFTER": "3", "REGCAST_HEARTBEAT_INTERVAL": "2"},
    {"REGCAST_JOB_RETENTION": "soon"},
]


def _clear(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    import os

    for k in os.environ:
        if k.lower().startswith("regcast_"):
            monkeypatch.delenv(k)
    for k, v in env.items():
        monkeypatch.setenv(k, v)


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_load_settings_reads_the_environment_as_pydantic_settings(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _clear(monkeypatch, env)
    ours = load_settings()
    theirs = Settings(**dict(_reference()()))  # __post_init__: the URL's form, as the old validator
    assert ours == theirs
    assert load_settings(port=7000, blobs_in_flight=None).port == 7000  # a flag wins; None is no flag


@pytest.mark.parametrize("env", ERRORS)
def test_a_bad_value_is_refused_in_pydantics_words(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    _clear(monkeypatch, env)
    with pytest.raises((ValueError, ConfigError)) as ours:  # a dict knob's bad JSON: named as set (REGCAST_...)
        load_settings()
    with pytest.raises(ValueError) as theirs:
        Settings(**dict(_reference()()))
    knob = next(iter(env)).lower().removeprefix("regcast_")
    assert knob in str(ours.value).lower()
    if isinstance(theirs.value, ValidationError):  # the same error, field and words
        assert isinstance(ours.value, ValidationError)
        assert [(e["loc"], e["type"]) for e in ours.value.errors()] == [
            (e["loc"], e["type"]) for e in theirs.value.errors()
        ]


def test_a_service_link_is_ignored_with_the_default_named(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _clear(monkeypatch, {"REGCAST_PORT": "tcp://10.96.0.12:5001", "REGCAST_LOG_FORMAT": "json"})
    with caplog.at_level(logging.WARNING, logger="regcast"):
        settings = load_settings()
    assert settings.port == 5001 and settings.log_format == "json"
    assert (
        "ignoring REGCAST_PORT=tcp://10.96.0.12:5001: a Kubernetes service link, not a port; using 5001" in caplog.text
    )


def test_secrets_stay_out_of_repr() -> None:
    text = repr(
        Settings(secret_key="S3CRET" * 3, api_tokens="T0KEN", notify_url="https://u:P4SS@h", notify_secret="N0T")
    )
    assert not {"S3CRET", "T0KEN", "P4SS", "N0T"} & {w for w in ("S3CRET", "T0KEN", "P4SS", "N0T") if w in text}
    assert "secret_key_file=None" in text  # the rest is shown


@pytest.mark.parametrize(
    "env",
    [
        {"REGCAST_STALE_AFTER": "3", "REGCAST_HEARTBEAT_INTERVAL": "2"},  # a check across knobs
        {"REGCAST_JOB_RETENTION": "soon"},  # a check of the whole model
        {"REGCAST_PORT": "not-a-port"},  # a field's own error
    ],
)
def test_a_settings_error_never_shows_the_secrets_beside_it(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # a model-level check printed pydantic's input_value: the whole environment, secrets included
    secrets = {
        "REGCAST_API_TOKENS": "T0KEN-abc",
        "REGCAST_SECRET_KEY": "S3CRET-hunter2hunter2",
        "REGCAST_NOTIFY_SECRET": "N0T1FY-x",
        "REGCAST_DATABASE_URL": "postgresql://u:DBP4SS@127.0.0.1/test",
    }
    _clear(monkeypatch, {**secrets, **env})
    with pytest.raises(ValueError) as raised:
        load_settings()
    text = str(raised.value)
    assert next(iter(env)).lower().removeprefix("regcast_") in text  # still names what is wrong
    assert not [s for s in ("T0KEN", "S3CRET", "N0T1FY", "DBP4SS") if s in text], text
