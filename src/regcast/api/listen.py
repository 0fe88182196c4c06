"""The service's listening socket, bound before anything starts.

Binding first means a busy port is one error line and a non-zero exit at once, before the app,
its workers or its database start (uvicorn would start them, then fail to bind and wait for a
graceful shutdown); and "serving on" is printed only once connections are accepted.
"""

from __future__ import annotations

import contextlib
import socket
from typing import Any

BACKLOG = 2048
# Chosen, not left to uvicorn's "auto" (which takes whatever happens to be installed): the services'
# event loop and HTTP parser, both pinned dependencies; measured in docs/decisions.md (issue 17).
LOOP = "uvloop"
HTTP = "httptools"


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port``; ``OSError`` (e.g. address in use) if it cannot be had."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[
        0
    ]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT only; a live listener still wins
        sock.bind(address)
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def serve(app: Any, sock: socket.socket, **config: Any) -> None:
    """Run ``app`` with uvicorn on the already listening ``sock``, on uvloop, requests parsed by httptools.

    SIGTERM and SIGINT shut it down gracefully and the process then exits 0, as ``regcast worker``
    does: uvicorn would raise the signal again once done, so a clean stop would end with status 143
    (-15), which systemd, Kubernetes and scripts read as a failure.
    """
    import signal
    from collections.abc import Iterator

    import uvicorn

    class _Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            handled = (signal.SIGINT, signal.SIGTERM)
            original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
            try:
                yield
            finally:
                for sig, handler in original.items():
                    signal.signal(sig, handler)

    host, port = sock.getsockname()[:2]
    server = _Server(uvicorn.Config(app, host=host, port=port, loop=LOOP, http=HTTP, **config))
    server.run(sockets=[sock])
