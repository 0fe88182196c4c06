"""An archive refused while it is indexed leaves no file open (a service reading many would run out)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import IO

import pytest

from regcast._exceptions import LayoutError
from regcast.layouts import archive
from regcast.layouts.archive import ArchiveReader


def test_an_archive_whose_index_is_refused_is_closed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "bad.tar"
    with tarfile.open(path, "w") as tar:
        data = b"{not json"
        info = tarfile.TarInfo("index.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    opened: list[IO[bytes]] = []

    def tracked(path: Path, mode: str) -> IO[bytes]:
        f = open(path, mode)  # noqa: SIM115
        opened.append(f)
        return f

    monkeypatch.setattr(archive, "open", tracked, raising=False)
    with pytest.raises(LayoutError):
        ArchiveReader(path, f"oci-archive:{path}")
    assert opened and all(f.closed for f in opened)
