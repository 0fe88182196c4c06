"""A hostile HTTP server on loopback for the security tests: registry, token server or receiver.

``handler`` decides every answer; ``seen`` records each request (method, path with query, headers)
so tests can assert what regcast did NOT send (credentials, tokens) and where it never went.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class HostileServer:
    def __init__(self, handler: Handler, tls: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.tls = tls  # serve HTTPS with this context (a certificate the test chose: expired, another name...)
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def endpoint(self) -> str:
        return f"{self.url}/v2"

    def start(self) -> HostileServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _start(self) -> None:
        app = web.Application(client_max_size=1024**3)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.tls)
        await site.start()
        self.port = int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append((request.method, request.path_qs, dict(request.headers)))
        return await self.handler(request)

    def stop(self) -> None:
        async def close() -> None:
            if self._runner:
                await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(90)
        self._loop.call_soon_threadsafe(self._loop.stop)

    def authorizations(self) -> list[str]:
        return [h["Authorization"] for _m, _p, h in self.seen if "Authorization" in h]


def challenge(realm: str, **extra: Any) -> web.Response:
    """A 401 asking for a Bearer token from ``realm``."""
    params = ",".join([f'realm="{realm}"', 'service="evil"'] + [f'{k}="{v}"' for k, v in extra.items()])
    return web.json_response(
        {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]},
        status=401,
        headers={"WWW-Authenticate": f"Bearer {params}"},
    )


def registry_serving(manifests: dict[str, tuple[bytes, str]], digest_header: bool = True) -> Handler:
    """A registry answering ``/v2/`` and the manifests given (ref -> (bytes, media type)); 404 for the rest.

    Served by tag and by digest, with ``Docker-Content-Digest`` unless ``digest_header`` is False.
    """
    by_ref = dict(manifests)
    for raw, media_type in manifests.values():
        by_ref["sha256:" + hashlib.sha256(raw).hexdigest()] = (raw, media_type)

    async def handle(request: web.Request) -> web.StreamResponse:
        if request.path == "/v2/":
            return web.json_response({})
        if "/manifests/" in request.path:
            ref = request.path.rsplit("/manifests/", 1)[1]
            if ref in by_ref:
                raw, media_type = by_ref[ref]
                headers = {"Content-Type": media_type}
                if digest_header:
                    headers["Docker-Content-Digest"] = "sha256:" + hashlib.sha256(raw).hexdigest()
                return web.Response(body=b"" if request.method == "HEAD" else raw, headers=headers)
        return web.json_response({"errors": [{"code": "NOT_FOUND", "message": "unknown"}]}, status=404)

    return handle


def serve(servers: list[HostileServer], handler: Any, tls: ssl.SSLContext | None = None) -> HostileServer:
    """Start a hostile server for one test; the ``hostile`` fixture stops it after the test."""
    s = HostileServer(handler, tls).start()
    servers.append(s)
    return s
