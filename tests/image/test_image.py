"""The image `make image` built (REGCAST_TEST_IMAGE, an oci-archive), tested on this machine.

The tool ships itself: the archive is loaded into a local registry with `regcast copy`. Then the
image runs twice: as a container, pulled by podman from that registry (vfs storage, runc with
cgroupfs, host network, no default ulimits: what this sandbox allows; crun refuses its hybrid
cgroups), and from its root filesystem unpacked from the archive, its entrypoint run as its user
under `unshare` (mount + PID namespaces) and `chroot` with its environment and working directory.
Each time /healthz answers and one real copy goes through its API.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from regcast import __version__
from tests.support import images
from tests.support.cli import regcast
from tests.support.recipe import containerfile
from tests.support.registry import RegistryServer, free_port
from tests.support.verify import assert_same_image

ARCHIVE = os.environ.get("REGCAST_TEST_IMAGE", "")
pytestmark = pytest.mark.skipif(not ARCHIVE, reason="set REGCAST_TEST_IMAGE (make test-image builds and sets it)")
VERSION = __version__  # the one version (src/regcast/__init__.py)


def archive_json(tar: tarfile.TarFile, digest: str) -> Any:
    data = tar.extractfile(f"blobs/sha256/{digest.split(':', 1)[1]}").read()  # type: ignore[union-attr]
    return json.loads(data)


@pytest.fixture(scope="module")
def image() -> dict[str, Any]:
    with tarfile.open(ARCHIVE) as tar:
        index = json.loads(tar.extractfile("index.json").read())  # type: ignore[union-attr]
        (entry,) = index["manifests"]
        manifest = archive_json(tar, entry["digest"])
        config = archive_json(tar, manifest["config"]["digest"])
    return {"entry": entry, "manifest": manifest, "config": config}


@pytest.fixture(scope="module")
def rootfs(image: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("image") / "rootfs"
    root.mkdir()
    with tarfile.open(ARCHIVE) as tar:
        for layer in image["manifest"]["layers"]:
            member = tar.extractfile(f"blobs/sha256/{layer['digest'].split(':', 1)[1]}")
            assert member is not None
            stream = gzip.GzipFile(fileobj=member) if layer["mediaType"].endswith("gzip") else member
            with tarfile.open(fileobj=stream, mode="r|") as layer_tar:
                layer_tar.extractall(root, numeric_owner=True, filter="fully_trusted")
    return root


def test_image_config_is_the_containerfile(image: dict[str, Any]) -> None:
    c, declared = image["config"]["config"], containerfile()
    assert c["User"] == declared.user and c["WorkingDir"] == declared.workdir
    assert c["Entrypoint"] == declared.entrypoint and c["Cmd"] == declared.cmd
    assert set(c["ExposedPorts"]) == declared.ports
    assert dict(e.split("=", 1) for e in c["Env"]).items() >= declared.env.items()
    for key in ("title", "description", "licenses"):
        name = f"org.opencontainers.image.{key}"
        assert c["Labels"][name] == declared.labels[name]
    assert c["Labels"]["org.opencontainers.image.version"] == VERSION
    assert (
        image["entry"]["annotations"]["org.opencontainers.image.ref.name"] == f"regcast:{VERSION}"
    )  # podman load names it so


def test_regcast_loads_itself_into_a_registry(image: dict[str, Any], open_reg: RegistryServer) -> None:
    out = regcast("copy", f"oci-archive:{ARCHIVE}", f"127.0.0.1:{open_reg.port}/regcast/regcast", timeout=600)
    assert out.returncode == 0, out.stderr
    held = open_reg.http().get_manifest("regcast/regcast", VERSION)
    assert held.status_code == 200
    assert "sha256:" + __import__("hashlib").sha256(held.content).hexdigest() == image["entry"]["digest"]
    for layer in image["manifest"]["layers"]:
        assert open_reg.http().head_blob("regcast/regcast", layer["digest"]) == 200


def test_root_filesystem_is_lean_and_owned_right(rootfs: Path) -> None:
    assert (rootfs / "opt/regcast/bin/regcast").is_file()
    assert not (rootfs / "opt/regcast/bin/pip").exists()
    for compiler in ("usr/bin/gcc", "usr/bin/cc", "usr/bin/g++", "usr/bin/make"):
        assert not (rootfs / compiler).exists(), compiler
    assert list((rootfs / "var/lib/apt/lists").glob("*")) == []
    assert [p for p in (rootfs / "var/cache/apt").rglob("*") if p.is_file()] == []
    assert not (rootfs / "root/.cache").exists()
    state = (rootfs / "var/lib/regcast").stat()
    assert (state.st_uid, state.st_gid) == (10001, 10001)
    assert "regcast:x:10001:10001:" in (rootfs / "etc/passwd").read_text()


def _wait_ready(url: str, alive: Callable[[], bool], log: Callable[[], str]) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and alive():
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"the image never became ready: {log()[-2000:]}")


class Podman:
    """podman as this sandbox allows it: vfs storage of its own, runc, cgroupfs, host network, and
    no default ulimits (raising RLIMIT_NPROC/NOFILE is refused here)."""

    def __init__(self, base: Path) -> None:
        base.mkdir(parents=True, exist_ok=True)
        (base / "containers.conf").write_text("[containers]\ndefault_ulimits = []\n")
        (base / "auth.json").write_text('{"auths": {}}')
        env = {k: v for k, v in os.environ.items() if k != "DOCKER_CONFIG"}
        self.env = {
            **env,
            "CONTAINERS_CONF": str(base / "containers.conf"),
            "REGISTRY_AUTH_FILE": str(base / "auth.json"),
        }
        self.cmd = [
            "podman",
            "--storage-driver=vfs",
            f"--root={base / 'root'}",
            f"--runroot={base / 'run'}",
            "--runtime=runc",
            "--cgroup-manager=cgroupfs",
        ]

    def __call__(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.cmd, *args], capture_output=True, text=True, timeout=timeout, env=self.env, stdin=subprocess.DEVNULL
        )


@contextlib.contextmanager
def _podman() -> Iterator[Podman | None]:
    if not (shutil.which("podman") and shutil.which("runc")):
        yield None
        return
    base = Path(tempfile.mkdtemp(prefix="rcp-", dir="/tmp"))  # podman wants a short runroot path
    try:
        yield Podman(base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def _as_container(podman: Podman, reference: str, port: int) -> Iterator[str]:
    """``podman run`` of the image regcast itself loaded into the registry at ``reference``."""
    pulled = podman("pull", "--tls-verify=false", reference, timeout=600)
    assert pulled.returncode == 0, pulled.stderr
    name = f"regcast-image-test-{port}"
    run = podman(
        "run", "-d", "--rm", "--name", name, "--network=host",
        "-e", f"REGCAST_PORT={port}", "-e", "REGCAST_HOST=127.0.0.1", reference,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    url = f"http://127.0.0.1:{port}"

    def running() -> bool:
        return "true" in podman("inspect", "--format", "{{.State.Running}}", name).stdout

    try:
        _wait_ready(url, running, lambda: podman("logs", name).stderr)
        yield url
    finally:
        podman("stop", "-t", "30", name, timeout=120)
        podman("rmi", "-a", "-f")


@contextlib.contextmanager
def _as_chroot(image: dict[str, Any], rootfs: Path, port: int) -> Iterator[str]:
    """The image's entrypoint + cmd, as its user, in its working directory, with its environment."""
    c = image["config"]["config"]
    env = [*c["Env"], f"REGCAST_PORT={port}", "REGCAST_HOST=127.0.0.1"]
    command = " ".join([*c["Entrypoint"], *c["Cmd"]])
    script = (
        f'mount --bind /dev "{rootfs}/dev" && mount -t proc proc "{rootfs}/proc" && '
        f'exec chroot --userspec={c["User"]} "{rootfs}" /usr/bin/env -i {" ".join(env)} '
        f'/bin/sh -c "cd {c["WorkingDir"]} && exec {command}"'
    )
    log = rootfs.parent / f"serve-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            ["unshare", "--mount", "--pid", "--fork", "--kill-child", "sh", "-c", script],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, lambda: proc.poll() is None, log.read_text)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


@pytest.fixture(params=["container", "chroot"])
def serving(
    request: pytest.FixtureRequest,
    image: dict[str, Any],
    rootfs: Path,
    open_reg: RegistryServer,
) -> Iterator[str]:
    """The image serving on a free port: as a container (podman) where it can run, and from its root
    filesystem under unshare + chroot (always)."""
    port = free_port()
    if request.param == "chroot":
        with _as_chroot(image, rootfs, port) as url:
            yield url
        return
    with _podman() as podman:
        if podman is None:
            pytest.skip("podman and runc are not installed (make test-image installs them)")
        loaded = regcast("copy", f"oci-archive:{ARCHIVE}", f"127.0.0.1:{open_reg.port}/regcast/served", timeout=600)
        assert loaded.returncode == 0, loaded.stderr
        with _as_container(podman, f"127.0.0.1:{open_reg.port}/regcast/served:{VERSION}", port) as url:
            yield url


def test_the_image_serves_and_copies(
    serving: str, repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    health = httpx.get(f"{serving}/healthz", timeout=10)
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    img = images.multi_platform(oci=True).push(src_reg.http(), repo, "v1")
    body = {
        "source": {"endpoint": src_reg.endpoint, "image": repo, "ref": "v1"},
        "targets": [{"endpoint": open_reg.endpoint, "image": f"{repo}/via-image"}],
    }
    created = httpx.post(f"{serving}/api/distribute/image", json=body, timeout=30)
    assert created.status_code == 201, created.text
    job = created.json()["id"]
    deadline, state = time.monotonic() + 120, {}
    while time.monotonic() < deadline:
        state = httpx.get(f"{serving}/api/distribute/image/{job}", timeout=10).json()
        if state["value"] in ("FINISHED", "FAILED"):
            break
        time.sleep(0.5)
    assert state["value"] == "FINISHED", state
    assert assert_same_image(src_reg.http(), repo, "v1", open_reg.http(), f"{repo}/via-image", "v1") == img.digest
