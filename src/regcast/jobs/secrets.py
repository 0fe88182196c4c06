"""Credentials at rest: authenticated encryption (Fernet: AES-CBC + HMAC-SHA256).

The key comes from ``REGCAST_SECRET_KEY`` (a random string of 32+ characters; several replicas
must share it, so it is required with PostgreSQL; HKDF turns it into the Fernet key), or, with
SQLite, from a key file created with mode 0600 next to the database on first start (refused when
others may read it).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from regcast._exceptions import ConfigError, CredentialsUnreadable

if TYPE_CHECKING:
    from cryptography.fernet import MultiFernet

log = logging.getLogger("regcast.jobs")
KEY_FILE = "regcast.key"


MIN_SECRET_KEY = 32  # characters of REGCAST_SECRET_KEY: a random key, never a password
_HKDF_INFO = b"regcast job credentials v1"  # a fixed context: enough for a random key


def derive_key(secret: bytes) -> bytes:
    """The Fernet key for ``secret`` (HKDF-SHA256, fixed context)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO)
    return base64.urlsafe_b64encode(hkdf.derive(secret))


class SecretBox:
    """Seals and opens stored credentials. ``cryptography`` is imported at the first use: a service
    whose jobs carry no credentials never loads it (about 8 MB of resident memory, #17)."""

    def __init__(self, key: bytes) -> None:
        self._key = key
        self._multi: MultiFernet | None = None

    @property
    def _fernet(self) -> MultiFernet:
        if self._multi is None:
            from cryptography.fernet import Fernet, MultiFernet

            # seals with the HKDF key; still opens what earlier versions sealed with a bare SHA-256 of the key
            legacy = Fernet(base64.urlsafe_b64encode(hashlib.sha256(self._key).digest()))
            self._multi = MultiFernet([Fernet(derive_key(self._key)), legacy])
        return self._multi

    @classmethod
    def from_settings(cls, secret_key: str | None, key_dir: Path, *, shared_database: bool = False) -> SecretBox:
        """The configured key; a key file only for a database no other host uses (SQLite).

        With a shared database, replicas each writing their own key file would seal jobs that no
        other replica can open, so a configured key is required there.
        """
        if secret_key:
            if len(secret_key) < MIN_SECRET_KEY:
                raise ConfigError(
                    f"REGCAST_SECRET_KEY is shorter than {MIN_SECRET_KEY} characters: use a random key "
                    "(for example: openssl rand -base64 32)"
                )
            return cls(secret_key.encode())
        if shared_database:
            raise ConfigError(
                "REGCAST_SECRET_KEY is required with PostgreSQL: every replica must use the same key "
                "(REGCAST_SECRET_KEY or REGCAST_SECRET_KEY_FILE)"
            )
        return cls(_key_file(key_dir / KEY_FILE))

    def seal(self, value: Any) -> bytes:
        return self._fernet.encrypt(json.dumps(value).encode())

    def open(self, blob: bytes) -> Any:
        from cryptography.fernet import InvalidToken

        try:
            return json.loads(self._fernet.decrypt(blob))
        except InvalidToken:
            raise CredentialsUnreadable(
                "stored credentials cannot be decrypted: REGCAST_SECRET_KEY or the key file changed"
            ) from None


def _key_file(path: Path) -> bytes:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        try:
            mode = path.stat().st_mode
            data = path.read_bytes().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read key file {path}: {exc.strerror}") from None
        if len(data) < 32:
            raise ConfigError(f"key file {path} is too short") from None
        if mode & 0o077:
            raise ConfigError(f"key file {path} is readable by others (mode {mode & 0o777:o}): chmod 600 it") from None
        return data
    except OSError as exc:
        raise ConfigError(f"cannot create key file {path}: {exc.strerror}") from None
    key = base64.urlsafe_b64encode(os.urandom(32))
    with os.fdopen(fd, "wb") as f:
        f.write(key + b"\n")
    log.warning("created encryption key file %s (mode 0600); keep it with the database", path)
    return key
