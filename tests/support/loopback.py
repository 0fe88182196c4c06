"""A network jail for tests: only loopback can be reached, whatever the code under test does.

``install()`` patches the socket layer so ``connect`` to any non-loopback address fails with
ENETUNREACH and name lookups answer only loopback names and numeric forms (no DNS query leaves
the machine). Tests of the outbound guards rely on it: even with a guard broken, a test can
never reach the real metadata address. ``tests/support/jail/sitecustomize.py`` installs it in
service subprocesses (``JAIL_ENV``), the autouse fixture in ``conftest.py`` in the test process.
A ``StaticResolver`` points hostile names at chosen addresses without DNS.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
from pathlib import Path
from typing import Any

from aiohttp.abc import AbstractResolver, ResolveResult

# the jail first, then the PYTHONPATH the tests run with: a worktree's src (its code, not the main checkout's)
JAIL_ENV = {
    "PYTHONPATH": os.pathsep.join(p for p in (str(Path(__file__).parent / "jail"), os.environ.get("PYTHONPATH")) if p)
}
_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_getaddrinfo = socket.getaddrinfo


def _loopback(address: Any) -> bool:
    if not isinstance(address, tuple):
        return True  # AF_UNIX paths
    host = str(address[0]).split("%", 1)[0]
    if host == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def _connect(self: socket.socket, address: Any) -> None:
    if not _loopback(address):
        raise OSError(errno.ENETUNREACH, f"test jail: {address[0]} is not loopback")
    _real_connect(self, address)


def _connect_ex(self: socket.socket, address: Any) -> int:
    if not _loopback(address):
        return errno.ENETUNREACH
    return _real_connect_ex(self, address)


def _getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    name = host.decode() if isinstance(host, bytes) else host
    if name is None or name == "localhost" or str(name).endswith(".localhost"):
        return _real_getaddrinfo(host, *args, **kwargs)
    try:  # numeric forms only (0xa9fea9fe resolves here, as getaddrinfo does, with no DNS query)
        flags = kwargs.pop("flags", args[4] if len(args) > 4 else 0)  # (port, family, type, proto, flags)
        args = args[:4]
        kwargs["flags"] = flags | socket.AI_NUMERICHOST
        return _real_getaddrinfo(host, *args, **kwargs)
    except socket.gaierror:
        raise socket.gaierror(socket.EAI_NONAME, f"test jail: no DNS for {name!r}") from None


def install() -> None:
    socket.socket.connect = _connect  # type: ignore[method-assign,assignment]
    socket.socket.connect_ex = _connect_ex  # type: ignore[method-assign,assignment]
    socket.getaddrinfo = _getaddrinfo


def uninstall() -> None:
    socket.socket.connect = _real_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _real_connect_ex  # type: ignore[method-assign]
    socket.getaddrinfo = _real_getaddrinfo


class StaticResolver(AbstractResolver):
    """Names → addresses from a table (hostile names pointed wherever a test wants, no DNS)."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        if host not in self.table:
            raise OSError(errno.ENOENT, f"no test address for {host}")
        return [
            {
                "hostname": host,
                "host": a,
                "port": port,
                "family": socket.AF_INET6 if ":" in a else socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
            for a in self.table[host]
        ]

    async def close(self) -> None:
        pass
