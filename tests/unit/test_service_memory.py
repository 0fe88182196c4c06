"""What the service keeps in memory for nothing (#17: peak RSS): Alembic once the schema is at its
newest revision, ``cryptography`` while no job carries credentials. Checked in fresh interpreters."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

KEY = "k3y-of-thirty-two-characters-or-more!"


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_a_schema_at_its_newest_revision_is_not_migrated_again(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'regcast.db'}"
    migrate = f"import sys; from regcast.jobs.store import JobStore; s = JobStore({url!r}); s.migrate(); "
    assert _run(migrate + "print('alembic' in sys.modules)") == "True"  # a new database: Alembic migrates
    second = _run(migrate + "s.create({'source': {}}, None, [('e', 'r', 't')]); print('alembic' in sys.modules)")
    assert second == "False"  # the same schema, used as it is


def test_cryptography_is_loaded_only_to_seal_or_open(tmp_path: Path) -> None:
    code = (
        "import sys; from regcast.jobs.secrets import SecretBox; "
        f"box = SecretBox.from_settings({KEY!r}, None); print('cryptography' in sys.modules); "
        "print(box.open(box.seal({'a': 1}))); print('cryptography' in sys.modules)"
    )
    assert _run(code).splitlines() == ["False", "{'a': 1}", "True"]
