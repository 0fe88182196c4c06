"""Issue 10 item 11: keys derived with HKDF, short keys and loose key files refused, database files
0600, and a CA bundle that adds to the system CAs."""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from regcast._exceptions import ConfigError
from regcast.jobs._db import Watchdog, make_engine
from regcast.jobs.secrets import KEY_FILE, SecretBox, derive_key

KEY = "k3y-of-thirty-two-characters-or-more!"


def test_key_is_derived_with_hkdf_and_old_ciphertexts_still_open() -> None:
    box = SecretBox.from_settings(KEY, Path("/nonexistent"))
    sealed = box.seal({"a": 1})
    assert Fernet(derive_key(KEY.encode())).decrypt(sealed) == b'{"a": 1}'
    legacy = Fernet(base64.urlsafe_b64encode(hashlib.sha256(KEY.encode()).digest())).encrypt(b'{"old": true}')
    assert box.open(legacy) == {"old": True}


def test_short_secret_key_is_refused() -> None:
    with pytest.raises(ConfigError, match="shorter than 32 characters"):
        SecretBox.from_settings("short-password", Path("/nonexistent"))


def test_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    SecretBox.from_settings(None, tmp_path)  # created 0600
    key_file = tmp_path / KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    SecretBox.from_settings(None, tmp_path)
    key_file.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        SecretBox.from_settings(None, tmp_path)


def test_sqlite_database_files_are_created_0600(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        engine = make_engine(f"sqlite:///{tmp_path / 'regcast.db'}", 5.0, Watchdog())
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA journal_mode=WAL")
            conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
            conn.commit()
            files = sorted(tmp_path.glob("regcast.db*"))
            assert files and all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files), files
        engine.dispose()
    finally:
        os.umask(old)
