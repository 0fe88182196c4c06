"""Credentials from the Docker config file, read as docker and skopeo read it (``auths`` only; an
entry's ``identitytoken`` is used as docker and skopeo use it, for the OAuth2 refresh-token flow).

Credential helpers (``credsStore``/``credHelpers``) would mean running other programs; regcast
never shells out, so they are ignored. A file that cannot be read as a config (not JSON, not UTF-8,
unreadable) or an entry whose ``auth`` is not ``base64(USER:PASSWORD)`` is said once per process in a
warning naming the file (and the entry), never its content: going anonymous in silence ended in a bare 401.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
from pathlib import Path
from urllib.parse import urlsplit

from regcast.registry.auth import Credentials
from regcast.registry.reference import DOCKER_HUB

log = logging.getLogger("regcast.registry")
_WARNED: set[str] = set()  # warnings already given in this process

IDENTITY_USER = "00000000-0000-0000-0000-000000000000"  # the user docker login stores beside an identity token

_HUB_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "docker.io", "registry-1.docker.io")


def config_path() -> Path:
    base = os.environ.get("DOCKER_CONFIG")
    return Path(base) / "config.json" if base else Path.home() / ".docker" / "config.json"


def _host_of(key: str) -> str:
    if "://" in key:
        return urlsplit(key).netloc.lower()
    return key.split("/", 1)[0].lower()


def _entry_credentials(entry: object) -> Credentials | None:
    if not isinstance(entry, dict):
        return None
    identity = entry.get("identitytoken")
    identity = identity if isinstance(identity, str) and identity else None  # OAuth2 refresh token (ACR...)
    encoded = entry.get("auth")
    if isinstance(encoded, str) and encoded:
        try:
            user, sep, password = base64.b64decode(encoded).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return Credentials(user, password, identity) if sep else None
    name, secret = entry.get("username"), entry.get("password")
    if isinstance(name, str) and isinstance(secret, str) and name:
        return Credentials(name, secret, identity)
    if identity:  # an identity token alone (no auth, no user): docker takes the OAuth2 flow with it all the same
        return Credentials(IDENTITY_USER, "", identity)
    return None


def _warn(text: str) -> None:
    if text not in _WARNED:
        _WARNED.add(text)
        log.warning("%s", text)


def _config(path: Path | None) -> dict[str, object]:
    where = path or config_path()
    why = ""
    try:
        doc = json.loads(where.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}  # no config: no stored credentials, as for docker
    except OSError as exc:
        why = f"cannot be read ({exc.strerror or type(exc).__name__})"
    except UnicodeDecodeError:
        why = "is not UTF-8 text"
    except json.JSONDecodeError as exc:
        why = f"is not valid JSON (line {exc.lineno} column {exc.colno})"
    else:
        if isinstance(doc, dict):
            return doc
        why = "is not a JSON object"
    _warn(f"Docker config {where} {why}: no credentials are taken from it")
    return {}


def _names(key: str, registry: str) -> bool:
    """Does the config key ``key`` name ``registry`` (host[:port]; ``docker.io`` for Docker Hub)?"""
    host, wanted = _host_of(key), registry.lower()
    return host == wanted or (wanted == DOCKER_HUB and (key in _HUB_KEYS or host in _HUB_KEYS))


def credentials_for(registry: str, path: Path | None = None) -> Credentials | None:
    """Credentials stored for ``registry`` (host[:port]; ``docker.io`` for Docker Hub), or None."""
    auths = _config(path).get("auths")
    if not isinstance(auths, dict):
        return None
    for key, entry in auths.items():
        if _names(key, registry):
            creds = _entry_credentials(entry)
            if creds:
                return creds
            if isinstance(entry, dict) and entry.get("auth"):
                where = path or config_path()
                _warn(f"Docker config {where}: the 'auth' of {key!r} is not base64 of USER:PASSWORD: not used")
    return None


def helper_for(registry: str, path: Path | None = None) -> str | None:
    """The credential helper the config keeps ``registry``'s credentials in, or None: its ``credHelpers``
    entry, or ``credsStore`` where ``auths`` lists the registry (``docker login`` with a store writes an
    empty entry there). regcast runs no helper: the CLI says so rather than go anonymous in silence."""
    doc = _config(path)
    helpers = doc.get("credHelpers")
    if isinstance(helpers, dict):
        for key, name in helpers.items():
            if _names(key, registry) and isinstance(name, str) and name:
                return name
    store, auths = doc.get("credsStore"), doc.get("auths")
    if isinstance(store, str) and store and isinstance(auths, dict) and any(_names(k, registry) for k in auths):
        return store
    return None


def stored_credentials(registry: str, remedy: str, path: Path | None = None) -> Credentials | None:
    """``credentials_for``, and where the config keeps ``registry``'s credentials in a helper regcast does not
    run, a warning (once per process) saying the registry is asked anonymously and ``remedy``: mirror sets
    (``regcast sync``, the service's runs) went anonymous in silence, their 401 blaming no credentials at all."""
    creds = credentials_for(registry, path)
    helper = helper_for(registry, path) if creds is None else None
    if helper:
        _warn(
            f"{registry}: the Docker config keeps its credentials in the credential helper docker-credential-"
            f"{helper}, which regcast does not run; going anonymous ({remedy})"
        )
    return creds
