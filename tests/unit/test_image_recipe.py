"""`make image` (debootstrap + buildah) and the Containerfile (docker/podman) declare the same image."""

from __future__ import annotations

from tests.support.recipe import buildah_script, containerfile

BUILD_TIME = {
    "org.opencontainers.image.revision",
    "org.opencontainers.image.created",
    "org.opencontainers.image.base.name",
}


def test_containerfile_and_buildah_declare_the_same_image() -> None:
    a, b = containerfile(), buildah_script()
    assert a.installer == b.installer == "image/install.sh"  # the same files, put in place by the same script
    assert (a.user, a.workdir, a.entrypoint, a.cmd, a.ports) == (b.user, b.workdir, b.entrypoint, b.cmd, b.ports)
    assert a.env == b.env
    assert {k: v for k, v in a.labels.items() if k not in BUILD_TIME} == {
        k: v for k, v in b.labels.items() if k not in BUILD_TIME
    }


def test_the_image_runs_regcast_serve_as_a_non_root_user() -> None:
    config = containerfile()
    assert config.entrypoint == ["regcast"] and config.cmd == ["serve"]
    assert config.user == "10001:10001" and config.workdir == "/var/lib/regcast"
    assert config.env["REGCAST_HOST"] == "0.0.0.0" and config.env["PATH"].startswith("/opt/regcast/bin:")
    assert config.ports == {"5001/tcp"}
    for key in ("title", "description", "version", "licenses"):
        assert config.labels[f"org.opencontainers.image.{key}"]
