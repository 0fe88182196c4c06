"""The session's real registries: open, htpasswd+TLS (test CA) and token auth, and their users."""

from __future__ import annotations

from pathlib import Path

import trustme

from tests.support.registry import RegistryServer
from tests.support.tokenserver import TokenServer

BASIC_USERS = {"alice": "alice-S3cret-pw"}
TOKEN_USERS = {"bob": "bob-T0ken-pw"}


def _tls_files(authority: trustme.CA, directory: Path) -> tuple[Path, Path]:
    cert = authority.issue_cert("127.0.0.1", "localhost")
    directory.mkdir(parents=True, exist_ok=True)
    crt, key = directory / "server.crt", directory / "server.key"
    cert.cert_chain_pems[0].write_to_path(str(crt))
    for extra in cert.cert_chain_pems[1:]:
        extra.write_to_path(str(crt), append=True)
    cert.private_key_pem.write_to_path(str(key))
    return crt, key


class Registries:
    def __init__(self, base: Path, ca: tuple[trustme.CA, Path]) -> None:
        self.base = base
        self.ca = ca
        self.started: list[RegistryServer] = []
        self.token_servers: list[TokenServer] = []

    def open(self, name: str, address: str = "127.0.0.1") -> RegistryServer:
        reg = RegistryServer(name, self.base / name, address=address).start()
        self.started.append(reg)
        return reg

    def basic_tls(self, name: str) -> RegistryServer:
        d = self.base / name
        reg = RegistryServer(
            name,
            d,
            flavour="basic",
            users=dict(BASIC_USERS),
            cert=_tls_files(self.ca[0], d / "tls"),
            ca_path=self.ca[1],
        ).start()
        self.started.append(reg)
        return reg

    def token(self, name: str, expires_in: int = 300) -> RegistryServer:
        d = self.base / name
        d.mkdir(parents=True, exist_ok=True)
        ts = TokenServer(d, dict(TOKEN_USERS), expires_in=expires_in).start()
        self.token_servers.append(ts)
        reg = RegistryServer(name, d, flavour="token", users=dict(TOKEN_USERS), token_server=ts).start()
        self.started.append(reg)
        return reg

    def stop(self) -> None:
        for reg in self.started:
            reg.stop()
        for ts in self.token_servers:
            ts.stop()
