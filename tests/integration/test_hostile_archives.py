"""An ``oci-archive`` from elsewhere whose member names climb out (``..``): never carried into what regcast writes."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from tests.integration.test_layout_edges import hand_made_layout
from tests.support import images
from tests.support.cli import regcast
from tests.support.registry import RegistryServer

CLIMBING = ("blobs/sha256/../../../../tmp/regcast-climbed", "blobs/../regcast-escape", "./blobs/sha256/../../x")


def test_an_archive_member_climbing_out_is_not_passed_on_when_the_archive_is_extended(
    tmp_path: Path, repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    layout = tmp_path / "dir"
    digest, _raw = hand_made_layout(layout, "sha256", "1.0")
    archive = tmp_path / "site.tar"
    with tarfile.open(archive, "w", format=tarfile.PAX_FORMAT) as tar:
        for p in sorted(layout.rglob("*")):
            tar.add(p, arcname=str(p.relative_to(layout)), recursive=False)
        for name in CLIMBING:
            info = tarfile.TarInfo(name)
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
    img = images.image().push(src_reg.http(), repo, "2.0")
    added = regcast("copy", f"127.0.0.1:{src_reg.port}/{repo}:2.0", f"oci-archive:{archive}")
    assert added.returncode == 0, added.stderr
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert not [n for n in names if ".." in n.split("/")], names
    assert f"blobs/{digest.replace(':', '/')}" in names and f"blobs/{img.digest.replace(':', '/')}" in names
    for tag in ("1.0", "2.0"):  # both images still whole
        back = regcast("copy", f"oci-archive:{archive}:{tag}", f"127.0.0.1:{open_reg.port}/{repo}/back:{tag}")
        assert back.returncode == 0, back.stderr
