"""Where Settings come from: ``REGCAST_*`` variables and flags, as pydantic-settings read them before.

The environment is read as pydantic-settings' ``EnvSettingsSource`` did (names case-insensitive, a dict
knob as JSON); a Kubernetes service link in ``REGCAST_PORT``/``REGCAST_HEALTH_PORT`` is ignored with a
warning. Each value then takes one of two ways, both from the one declaration in ``config.Settings``:

- plainly valid (a string for a string knob, decimal digits for a number within its bounds, one of the
  boolean words, one of a literal's choices): converted here, as pydantic would convert it;
- anything else (a dict, ``" 5"``, ``1e3``, ``0x10``, a value out of bounds, a failed check): pydantic
  validates the whole set, through a model made from the same declaration, so errors read as before.

So a copy's start-up does not import pydantic (~400 M instructions, issue 17), and there is no second
parser: what this module converts is a subset of what pydantic accepts, with the same result
(``tests/unit/test_config_source.py`` compares both on every knob).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import types
import typing
from typing import Any, Literal

from regcast import config
from regcast._exceptions import ConfigError
from regcast.config import Bounds, Settings

log = logging.getLogger("regcast")

PREFIX = "regcast_"
SERVICE_LINK = re.compile(r"^(tcp|udp|sctp)://", re.IGNORECASE)
SERVICE_LINK_KNOBS = ("port", "health_port")
INTEGER = re.compile(r"0|[1-9][0-9]{0,17}")
DECIMAL = re.compile(r"(0|[1-9][0-9]{0,17})(\.[0-9]{1,17})?")
BOOLEANS = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False, "on": True, "off": False}


class NotPlain(Exception):
    """A value this module does not convert itself: pydantic decides."""


def read_settings(flags: dict[str, Any]) -> Settings:
    """Settings from the environment and ``flags`` (flags win)."""
    values = {**environment(), **flags}
    for f in dataclasses.fields(Settings):
        if f.name in SERVICE_LINK_KNOBS and _service_link(values, f):
            del values[f.name]
    try:
        plain = {f.name: convert(hint(f), f.metadata.get("bounds"), values[f.name]) for f in _given(values)}
        return Settings(**plain)
    except (NotPlain, ValueError):
        return validated(typing.get_type_hints(Settings), values)


def hint(f: dataclasses.Field[Any]) -> Any:
    """A knob's type from its annotation's text, alone: not every knob's, as ``typing.get_type_hints`` would
    (one ``compile`` per knob: ~5 M instructions for the ~3 knobs a run sets)."""
    return eval(f.type, vars(config)) if isinstance(f.type, str) else f.type  # noqa: S307 (our own annotations)


def environment() -> dict[str, Any]:
    """The ``REGCAST_<KNOB>`` variables set (any case), strings; a dict knob's decoded from JSON."""
    env = {k.lower(): v for k, v in os.environ.items()}
    found: dict[str, Any] = {}
    for f in dataclasses.fields(Settings):
        value = env.get(PREFIX + f.name)
        if value is None:
            continue
        if typing.get_origin(hint(f)) is dict:
            try:
                value = json.loads(value)
            except ValueError as exc:  # named as the operator set it, as every other bad knob is
                raise ConfigError(f"{PREFIX.upper()}{f.name.upper()}: not JSON ({exc})") from None
        found[f.name] = value
    return found


def convert(tp: Any, bounds: Bounds | None, value: Any) -> Any:
    """``value`` as a knob of type ``tp``, if plainly valid; else ``NotPlain``."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (types.UnionType, typing.Union) and len(args) == 2 and type(None) in args:
        if value is None:
            return None
        tp = args[0] if args[1] is type(None) else args[1]
    if tp in (int, float):
        return _number(tp, bounds, value)
    return _word(tp, value)


def _word(tp: Any, value: Any) -> Any:
    """A string, boolean or literal knob's value."""
    if typing.get_origin(tp) is Literal:
        if isinstance(value, str) and value in typing.get_args(tp):
            return value
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in BOOLEANS:
            return BOOLEANS[value.lower()]
    raise NotPlain


def _number(tp: type, bounds: Bounds | None, value: Any) -> float:
    """An int or float knob's value: a number, or decimal digits (no sign, exponent, space or underscore)."""
    if tp is int and (type(value) is int or (isinstance(value, str) and INTEGER.fullmatch(value))):
        number: float = int(value)
    elif tp is float and (type(value) in (int, float) or (isinstance(value, str) and DECIMAL.fullmatch(value))):
        number = float(value)
        if number != number or number in (float("inf"), float("-inf")):
            raise NotPlain
    else:
        raise NotPlain
    if bounds is not None and not bounds.holds(number):
        raise NotPlain
    return number


def validated(hints: dict[str, Any], values: dict[str, Any]) -> Settings:
    """pydantic's verdict on ``values``: a model made from ``cls``'s declaration (types, defaults, bounds,
    ``__post_init__``'s checks as a model validator). Its ``ValidationError`` is a ``ValueError``."""
    from pydantic import ConfigDict, Field, create_model, model_validator

    fields: dict[str, Any] = {}
    for f in dataclasses.fields(Settings):
        bounds = f.metadata.get("bounds") or Bounds()
        default: dict[str, Any] = (
            {"default": f.default} if f.default is not dataclasses.MISSING else {"default_factory": f.default_factory}
        )
        fields[f.name] = (hints[f.name], Field(**default, ge=bounds.ge, gt=bounds.gt, le=bounds.le))

    def checks(model: Any) -> Any:
        Settings(**dict(model))
        return model

    validators: dict[str, Any] = {"checks": model_validator(mode="after")(checks)}
    model = create_model(
        "Settings",
        __config__=ConfigDict(extra="ignore", hide_input_in_errors=True),
        __validators__=validators,
        **fields,
    )
    return Settings(**dict(model(**values)))


def _given(values: dict[str, Any]) -> list[dataclasses.Field[Any]]:
    return [f for f in dataclasses.fields(Settings) if f.name in values]


def _service_link(values: dict[str, Any], f: dataclasses.Field[Any]) -> bool:
    """Kubernetes sets ``REGCAST_PORT=tcp://10.96.0.12:5001`` for a Service named regcast: not ours."""
    v = values.get(f.name)
    if not (isinstance(v, str) and SERVICE_LINK.match(v.strip())):
        return False
    log.warning("ignoring REGCAST_%s=%s: a Kubernetes service link, not a port; using %s", f.name.upper(), v, f.default)
    return True
