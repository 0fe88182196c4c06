"""``regcast copy`` over image formats and references as a demanding docker/skopeo/crane user writes them.

Platform choice as docker and containerd make it, nested indexes, digest sources under a platform filter.
"""

from __future__ import annotations

from tests.support import images
from tests.support.cli import regcast
from tests.support.registry import RegistryServer


def test_a_platform_without_variant_picks_the_default_variant_as_docker_does(
    repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    """Docker Hub's official images list ``arm/v5`` before ``arm/v7``: ``docker pull --platform linux/arm``
    gets ``v7`` (containerd's default variant), not the first ``arm`` listed."""
    platforms = ("linux/amd64", "linux/arm/v5", "linux/arm/v7", "linux/arm64/v9", "linux/arm64/v8")
    img = images.multi_platform(oci=False, platforms=platforms).push(src_reg.http(), repo, "v1")
    for asked, child in [("linux/arm", 2), ("linux/arm64", 4), ("linux/arm/v5", 1)]:
        r = regcast("copy", "--platform", asked, f"{src_reg.host}/{repo}:v1", f"{open_reg.host}/{repo}:{child}")
        assert r.returncode == 0, r.stderr
        assert open_reg.http().get_manifest(repo, str(child)).content == img.children[child].raw, asked
