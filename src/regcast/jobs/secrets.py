"""Credentials at rest: authenticated encryption (Fernet: AES-CBC + HMAC-SHA256).

The key comes from ``REGCAST_SECRET_KEY`` (any string; several replicas must share it), or from
a key file created with mode 0600 next to the SQLite database on first start.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from regcast._exceptions import ConfigError, JobError

log = logging.getLogger("regcast.jobs")
KEY_FILE = "regcast.key"


class SecretBox:
    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(base64.urlsafe_b64encode(hashlib.sha256(key).digest()))

    @classmethod
    def from_settings(cls, secret_key: str | None, key_dir: Path) -> SecretBox:
        if secret_key:
            return cls(secret_key.encode())
        return cls(_key_file(key_dir / KEY_FILE))

    def seal(self, value: Any) -> bytes:
        return self._fernet.encrypt(json.dumps(value).encode())

    def open(self, blob: bytes) -> Any:
        try:
            return json.loads(self._fernet.decrypt(blob))
        except InvalidToken:
            raise JobError(
                "stored credentials cannot be decrypted: REGCAST_SECRET_KEY or the key file changed"
            ) from None


def _key_file(path: Path) -> bytes:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        try:
            data = path.read_bytes().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read key file {path}: {exc.strerror}") from None
        if len(data) < 32:
            raise ConfigError(f"key file {path} is too short") from None
        return data
    except OSError as exc:
        raise ConfigError(f"cannot create key file {path}: {exc.strerror}") from None
    key = base64.urlsafe_b64encode(os.urandom(32))
    with os.fdopen(fd, "wb") as f:
        f.write(key + b"\n")
    log.warning("created encryption key file %s (mode 0600); keep it with the database", path)
    return key
