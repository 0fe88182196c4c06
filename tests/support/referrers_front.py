"""A TEST FRONT that gives CNCF distribution 2.8 the OCI 1.1 referrers API (test-only, not a registry).

distribution 2.8 has no referrers API and no registry that has one is packaged for this machine, so
the tests put this small aiohttp front before a real distribution. It stores no content: every
request goes to distribution; it only remembers the descriptors of manifests with a ``subject``
pushed THROUGH it, answers those pushes with ``OCI-Subject``, and serves
``GET /v2/<name>/referrers/<digest>`` from them, with ``artifactType`` filtering
(``OCI-Filters-Applied``) and pages of ``page_size`` linked by ``Link: <...>; rel="next"``.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import aiohttp
from aiohttp import web

from tests.support.registry import RegistryServer

REFERRERS = re.compile(r"^/v2/(.+)/referrers/(sha256:[a-f0-9]{64})$")
MANIFEST = re.compile(r"^/v2/(.+)/manifests/([^/]+)$")
HOP = {"host", "content-length", "transfer-encoding", "connection", "keep-alive"}
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


class ReferrersFront:
    def __init__(self, upstream_port: int, page_size: int = 2) -> None:
        self.upstream = f"http://127.0.0.1:{upstream_port}"
        self.page_size = page_size
        self.listed: dict[tuple[str, str], list[dict[str, Any]]] = {}  # (repo, subject) -> descriptors
        self.queries: list[dict[str, str]] = []  # query of every referrers request
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def server(self) -> RegistryServer:
        """A stand-in ``RegistryServer`` for the tests' own client (``.http()``, ``.host``, ``.endpoint``)."""
        return RegistryServer("referrers-front", Path("/nonexistent"), port=self.port)

    def start(self) -> ReferrersFront:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        async def close() -> None:
            if self._runner:
                await self._runner.cleanup()
            if self._session:
                await self._session.close()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)

    async def _start(self) -> None:
        self._session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application(client_max_size=1024**3)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        m = REFERRERS.match(request.path)
        if m and request.method == "GET":
            return self._referrers(request, m.group(1), m.group(2))
        return await self._forward(request)

    def _referrers(self, request: web.Request, repo: str, digest: str) -> web.Response:
        self.queries.append(dict(request.query))
        items = list(self.listed.get((repo, digest), []))
        headers: dict[str, str] = {"Content-Type": OCI_INDEX}
        wanted = request.query.get("artifactType")
        if wanted:
            items = [d for d in items if d.get("artifactType") == wanted]
            headers["OCI-Filters-Applied"] = "artifactType"
        start = int(request.query.get("page", "0"))
        page = items[start : start + self.page_size]
        if start + self.page_size < len(items):
            query = {k: v for k, v in request.query.items() if k != "page"} | {"page": str(start + self.page_size)}
            headers["Link"] = f'<{request.path}?{urlencode(query)}>; rel="next"'
        body = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": page}
        return web.Response(body=json.dumps(body).encode(), headers=headers)

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._session
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
        body = await request.read() if request.body_exists else None
        async with self._session.request(
            request.method, self.upstream + request.path_qs, headers=headers, data=body, allow_redirects=False
        ) as up:
            data = await up.read()
            out = {k: v for k, v in up.headers.items() if k.lower() not in HOP}
            if "Location" in out:
                parts = urlsplit(out["Location"])
                if parts.netloc:
                    out["Location"] = urlunsplit(parts._replace(netloc=f"127.0.0.1:{self.port}"))
            pushed = MANIFEST.match(request.path)
            if pushed and request.method == "PUT" and up.status == 201 and body:
                subject = self._remember(pushed.group(1), body, up.headers.get("Docker-Content-Digest", ""))
                if subject:
                    out["OCI-Subject"] = subject
            return web.Response(status=up.status, body=data if request.method != "HEAD" else None, headers=out)

    def _remember(self, repo: str, raw: bytes, digest: str) -> str | None:
        try:
            doc = json.loads(raw)
        except ValueError:
            return None
        subject = doc.get("subject") if isinstance(doc, dict) else None
        if not isinstance(subject, dict) or not digest:
            return None
        desc: dict[str, Any] = {"mediaType": doc.get("mediaType"), "digest": digest, "size": len(raw)}
        config = doc.get("config") or {}
        kind = doc.get("artifactType") or config.get("mediaType")
        if kind:
            desc["artifactType"] = kind
        if doc.get("annotations"):
            desc["annotations"] = doc["annotations"]
        entries = self.listed.setdefault((repo, str(subject["digest"])), [])
        if all(e["digest"] != digest for e in entries):
            entries.append(desc)
        return str(subject["digest"])
