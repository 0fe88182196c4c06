"""Real registries for the tests: the ``docker-registry`` binary (CNCF distribution) on loopback.

Flavours: ``open`` (plain HTTP), ``basic`` (htpasswd behind TLS with a test CA) and ``token``
(Docker token auth against ``TokenServer``). Each instance has its own storage directory so
tests can look at (and corrupt) what the registry stored.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import bcrypt
import httpx

from tests.support.tokenserver import TokenServer

BINARY = shutil.which("docker-registry") or shutil.which("registry") or "docker-registry"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RegistryServer:
    name: str
    directory: Path
    flavour: str = "open"
    users: dict[str, str] = field(default_factory=dict)
    cert: tuple[Path, Path] | None = None
    ca_path: Path | None = None
    token_server: TokenServer | None = None
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    notify: tuple[str, dict[str, str]] | None = None  # (url, headers): distribution's push notifications
    address: str = "127.0.0.1"  # or "::1": the registry on IPv6 loopback, named [::1]:port

    @property
    def scheme(self) -> str:
        return "https" if self.cert else "http"

    @property
    def host(self) -> str:
        return f"[{self.address}]:{self.port}" if ":" in self.address else f"{self.address}:{self.port}"

    @property
    def endpoint(self) -> str:
        """The seed's endpoint form."""
        return f"{self.scheme}://{self.host}/v2"

    @property
    def storage(self) -> Path:
        return self.directory / "data"

    def blob_path(self, digest: str) -> Path:
        alg, hexpart = digest.split(":", 1)
        return self.storage / "docker/registry/v2/blobs" / alg / hexpart[:2] / hexpart / "data"

    def config(self) -> str:
        lines = [
            "version: 0.1",
            "log:",
            "  level: warn",
            "  accesslog:",
            "    disabled: true",
            "storage:",
            "  filesystem:",
            f"    rootdirectory: {self.storage}",
            "  delete:",
            "    enabled: true",
            "validation:",
            "  manifests:",
            "    urls:",
            "      allow:",
            "        - ^https?://",
            "http:",
            f"  addr: '{self.host}'",
        ]
        if self.cert:
            lines += ["  tls:", f"    certificate: {self.cert[0]}", f"    key: {self.cert[1]}"]
        if self.flavour == "basic":
            htpasswd = self.directory / "htpasswd"
            htpasswd.write_text(
                "".join(f"{u}:{bcrypt.hashpw(p.encode(), bcrypt.gensalt(4)).decode()}\n" for u, p in self.users.items())
            )
            lines += ["auth:", "  htpasswd:", "    realm: regcast-test", f"    path: {htpasswd}"]
        elif self.flavour == "token":
            assert self.token_server
            ts = self.token_server
            lines += [
                "auth:",
                "  token:",
                f"    realm: {ts.realm}",
                f"    service: {ts.service}",
                f"    issuer: {ts.issuer}",
                f"    rootcertbundle: {ts.cert_path}",
            ]
        if self.notify:
            url, headers = self.notify
            lines += [
                "notifications:",
                "  endpoints:",
                "    - name: regcast",
                f"      url: {url}",
                "      timeout: 5s",
                "      threshold: 10",
                "      backoff: 1s",
                "      headers:",
                *(f"        {k}: [{v!r}]" for k, v in headers.items()),
            ]
        return "\n".join(lines) + "\n"

    def start(self) -> RegistryServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        cfg = self.directory / "config.yml"
        cfg.write_text(self.config())
        log = (self.directory / "registry.log").open("ab")
        self.proc = subprocess.Popen([BINARY, "serve", str(cfg)], stdout=log, stderr=log)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"registry {self.name} exited: {(self.directory / 'registry.log').read_text()}")
            try:
                with socket.create_connection((self.address, self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"registry {self.name} did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    # -- a direct client for arranging and checking (independent of regcast's client) ----------------
    def http(self) -> RegistryHTTP:
        return RegistryHTTP(self)


class RegistryHTTP:
    """Plain httpx access to one test registry, doing its own auth (basic or token)."""

    def __init__(self, reg: RegistryServer) -> None:
        self.reg = reg
        self.client = httpx.Client(
            base_url=f"{reg.scheme}://{reg.host}/v2/",
            verify=ssl.create_default_context(cafile=str(reg.ca_path)) if reg.ca_path else True,
            timeout=60,
        )
        self.user = next(iter(reg.users), None)

    def _auth(self, repo: str) -> dict[str, str]:
        if self.reg.flavour == "basic" and self.user:
            return {"Authorization": httpx.BasicAuth(self.user, self.reg.users[self.user])._auth_header}
        if self.reg.flavour == "token" and self.reg.token_server:
            token = self.reg.token_server.issue(self.user, [f"repository:{repo}:pull,push"])
            return {"Authorization": f"Bearer {token}"}
        return {}

    def push_blob(self, repo: str, data: bytes, digest: str) -> None:
        h = self._auth(repo)
        r = self.client.post(f"{repo}/blobs/uploads/", headers=h)
        assert r.status_code == 202, r.text
        loc = r.headers["Location"]
        sep = "&" if "?" in loc else "?"
        r = self.client.put(
            f"{loc}{sep}digest={digest}", content=data, headers={**h, "Content-Type": "application/octet-stream"}
        )
        assert r.status_code == 201, r.text

    def push_manifest(self, repo: str, ref: str, raw: bytes, media_type: str) -> None:
        r = self.client.put(
            f"{repo}/manifests/{ref}", content=raw, headers={**self._auth(repo), "Content-Type": media_type}
        )
        assert r.status_code == 201, r.text

    def get_manifest(self, repo: str, ref: str) -> httpx.Response:
        accept = ", ".join(
            [
                "application/vnd.oci.image.index.v1+json",
                "application/vnd.docker.distribution.manifest.list.v2+json",
                "application/vnd.oci.image.manifest.v1+json",
                "application/vnd.docker.distribution.manifest.v2+json",
            ]
        )
        return self.client.get(f"{repo}/manifests/{ref}", headers={**self._auth(repo), "Accept": accept})

    def get_blob(self, repo: str, digest: str) -> httpx.Response:
        return self.client.get(f"{repo}/blobs/{digest}", headers=self._auth(repo), follow_redirects=True)

    def head_blob(self, repo: str, digest: str) -> int:
        return self.client.head(f"{repo}/blobs/{digest}", headers=self._auth(repo)).status_code

    def close(self) -> None:
        self.client.close()
