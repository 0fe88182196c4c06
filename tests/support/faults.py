"""A fault-injecting HTTP proxy between regcast and a real registry (test-only).

Named scenarios break requests the way real registries and networks do; ``events`` counts every
fault injected so tests can assert the retries, and ``seen`` records each request.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections import Counter
from collections.abc import MutableMapping
from typing import Any, Self
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from aiohttp import web

from regcast.registry.auth import Credentials
from regcast.registry.client import ClientOptions, RegistryClient
from regcast.registry.reference import parse_endpoint
from regcast.transfer.engine import CopyEngine, CopyResult, Target
from regcast.transfer.referrers import ReferrerOptions
from regcast.transfer.remote import RegistryRepository
from tests.support.clients import FAST_RETRY
from tests.support.registry import RegistryServer

BLOB_GET = re.compile(r"^/v2/(.+)/blobs/(sha256:[a-f0-9]{64})$")
HOP = {"host", "content-length", "transfer-encoding", "connection", "keep-alive"}
MiB = 1024 * 1024


class FaultProxy:
    def __init__(self, upstream_port: int, scenario: str = "pass", side_headers: Any = None, **params: Any) -> None:
        self.upstream = f"http://127.0.0.1:{upstream_port}"
        self.scenario = scenario
        self.params = params
        self.side_headers = side_headers  # repository -> headers the object store uses upstream
        self.events: Counter[str] = Counter()
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        self.answered: list[tuple[str, str, int]] = []  # (method, path and query, upstream status) forwarded
        self.port = 0
        self.side_port = 0
        self.side_auth_headers = 0
        self._done: set[str] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runners: list[web.AppRunner] = []
        self._session: aiohttp.ClientSession | None = None
        self._released: asyncio.Event | None = None  # "hold_blob": set by release()
        self._gathered: asyncio.Event | None = None  # "gather_uploads": set once enough PUTs waited together
        self._waiting = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/v2"

    def start(self) -> Self:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        async def close() -> None:
            for r in self._runners:
                await r.cleanup()
            if self._session:
                await self._session.close()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)

    def release(self) -> None:
        """``hold_blob``, ``hold_manifest``: let the held requests go on."""

        async def go() -> None:
            assert self._released
            self._released.set()

        asyncio.run_coroutine_threadsafe(go(), self._loop).result(10)

    def count(self, method: str, pattern: str) -> int:
        """Requests seen so far whose method is ``method`` and whose path and query match ``pattern``."""
        return sum(1 for m, path, _h in list(self.seen) if m == method and re.search(pattern, path))

    async def _start(self) -> None:
        self._released = asyncio.Event()
        self._gathered = asyncio.Event()
        self._session = aiohttp.ClientSession(auto_decompress=False)
        self.port = await self._serve(self._handle)
        self.side_port = await self._serve(self._side)

    async def _serve(self, handler: Any) -> int:
        app = web.Application(client_max_size=1024**3)
        app.router.add_route("*", "/{tail:.*}", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._runners.append(runner)
        return int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]

    def _once(self, key: str) -> bool:
        if key in self._done:
            return False
        self._done.add(key)
        return True

    # -- the proxy ----------------------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append((request.method, request.path_qs, dict(request.headers)))
        held = self._released
        manifest_get = request.method == "GET" and "/manifests/" in request.path
        if self.scenario == "hold_manifest" and manifest_get and held and not held.is_set():
            self.events["held_manifest"] += 1  # every manifest GET waits until release() (HEADs pass)
            await held.wait()
        if self.scenario == "lagging_tags" and request.method == "GET" and request.path.endswith("/tags/list"):
            return self._lagging_tags(request.path)
        if self.scenario == "gather_uploads" and request.method == "PUT" and "/blobs/uploads/" in request.path:
            await self._gather_upload()
        fault = await self._fault_before(request)
        if fault is not None:
            return fault
        return await self._forward(request)

    def _throttled(self, method: str, path: str) -> bool:
        """``throttle_429``: each manifest request once; ``throttle_methods``: every manifest request whose
        method is in ``params["methods"]`` (a set the test changes as it goes)."""
        if "/manifests/" not in path:
            return False
        if self.scenario == "throttle_429":
            return self._once(f"429 {method} {path}")
        return self.scenario == "throttle_methods" and method in self.params["methods"]

    async def _gather_upload(self) -> None:
        """``gather_uploads``: each blob PUT waits until ``params["together"]`` of them wait at once (then
        all go on), or ``params["wait"]`` seconds; ``events["uploads_at_once"]``: the most that waited."""
        assert self._gathered
        self._waiting += 1
        self.events["uploads_at_once"] = max(self.events["uploads_at_once"], self._waiting)
        if self._waiting >= self.params["together"]:
            self._gathered.set()
        try:
            await asyncio.wait_for(self._gathered.wait(), self.params.get("wait", 1.0))
        except TimeoutError:
            pass
        finally:
            self._waiting -= 1

    def _lagging_tags(self, path: str) -> web.StreamResponse:
        """A tag listing behind the pushes (caches, eventual consistency): empty, or a bare 404."""
        self.events["lagging_tags"] += 1
        if self.params.get("bare_404"):
            return web.Response(status=404, text="404 page not found")
        return web.json_response({"name": path[4:-10], "tags": []})

    def _redirect(self, path: str) -> web.StreamResponse:
        """A blob GET redirected: to the metadata service (``evil_redirect``), back to itself, relative, as
        some gateways write it (``redirect_loop``), or to the side server, an object store (``redirect_blob``)."""
        if self.scenario == "evil_redirect":
            self.events["evil"] += 1
            return web.Response(status=307, headers={"Location": "http://169.254.169.254/latest/meta-data/"})
        if self.scenario == "redirect_loop":
            self.events["loop"] += 1
            return web.Response(status=302, headers={"Location": "./" + path.rsplit("/", 1)[1]})
        self.events["redirect"] += 1
        target = f"http://127.0.0.1:{self.side_port}{path}?access_token=s3cr3t-storage-token"
        return web.Response(status=307, headers={"Location": target})

    async def _fault_before(self, request: web.Request) -> web.StreamResponse | None:
        s, path, method = self.scenario, request.path, request.method
        if s == "ping_5xx" and path == "/v2/" and self.events["ping_5xx"] < self.params.get("count", 2):
            self.events["ping_5xx"] += 1
            return web.Response(status=503, text="<html>warming up</html>")
        if s == "burst_5xx" and path != "/v2/" and self.events["5xx"] < self.params.get("count", 3):
            status = (500, 502, 503)[self.events["5xx"] % 3]
            self.events["5xx"] += 1
            await request.read()
            return web.Response(status=status, text="<html>upstream trouble</html>")
        if s == "flaky" and re.fullmatch(self.params["path"], path) and self.events["flaky"] < self.params["count"]:
            self.events["flaky"] += 1  # the first `count` requests to `path` fail with `status`
            return web.Response(
                status=self.params["status"], text="<html>try again</html>", headers={"Retry-After": "0"}
            )
        if self._throttled(method, path):
            self.events["429"] += 1
            return web.json_response(
                {"errors": [{"code": "TOOMANYREQUESTS", "message": "slow down"}]},
                status=429,
                headers={"Retry-After": str(self.params.get("retry_after", 1))},
            )
        if s == "garbage_manifest" and method == "GET" and "/manifests/" in path:
            self.events["garbage"] += 1
            return web.Response(
                status=200,
                text="<html>maintenance</html>",
                headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
            )
        if s in ("evil_redirect", "redirect_loop", "redirect_blob") and method == "GET" and BLOB_GET.match(path):
            return self._redirect(path)
        if s == "ghcr" and method == "PATCH" and request.content_length and request.content_length > 4 * MiB:
            self.events["patch_refused"] += 1
            await request.read()
            return web.json_response({"errors": [{"code": "SIZE_INVALID", "message": "chunk too big"}]}, status=416)
        if s == "ghcr" and method == "PUT" and "/blobs/uploads/" in path and (request.content_length or 0) > 4 * MiB:
            self.events["put_refused"] += 1
            await request.read()
            return web.Response(status=413, text="request entity too large")
        return None

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._session
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
        if self.scenario == "reset_blob_no_range" and headers.pop("Range", ""):
            self.events["range_ignored"] += 1
        if request.content_length is not None:
            headers["Content-Length"] = str(request.content_length)
        body = request.content if request.body_exists else None
        async with self._session.request(
            request.method, self.upstream + request.path_qs, headers=headers, data=body, allow_redirects=False
        ) as up:
            if (
                self.scenario == "artifactory"
                and request.method == "HEAD"
                and up.status == 404
                and "/blobs/" in request.path
            ):
                self.events["403_for_missing"] += 1
                return web.Response(status=403)
            self.answered.append((request.method, request.path_qs, up.status))
            resp = web.StreamResponse(status=self._status(request, up), headers=self._out_headers(request, up))
            await resp.prepare(request)
            await self._pump(request, up, resp)
            return resp

    def _status(self, request: web.Request, up: aiohttp.ClientResponse) -> int:
        """The status answered for ``up`` (subclasses rewrite it: ``quirks.py``)."""
        return up.status

    def _out_headers(self, request: web.Request, up: aiohttp.ClientResponse) -> MutableMapping[str, str]:
        out_headers = {k: v for k, v in up.headers.items() if k.lower() not in HOP - {"content-length"}}
        if "Location" in out_headers:
            out_headers["Location"] = self._rewrite_location(out_headers["Location"])
        if self.scenario == "hub_limits" and "/manifests/" in request.path:
            out_headers["ratelimit-limit"] = "100;w=21600"
            out_headers["ratelimit-remaining"] = "3;w=21600"
        if self.scenario == "chunk_min" and request.method == "POST" and up.status == 202:
            out_headers["OCI-Chunk-Min-Length"] = str(self.params.get("min", 3 * MiB))
        return out_headers

    async def _pump(self, request: web.Request, up: aiohttp.ClientResponse, resp: web.StreamResponse) -> None:
        """Copy the upstream body, corrupting or cutting it as the scenario says."""
        blob = BLOB_GET.match(request.path) if request.method == "GET" and up.status == 200 else None
        sent = 0
        async for chunk in up.content.iter_chunked(256 * 1024):
            if blob and self.scenario.startswith("corrupt") and sent == 0:
                always = self.scenario == "corrupt_always"
                if always or self._once("corrupt " + blob.group(2)):
                    self.events["corrupted"] += 1
                    chunk = bytes([chunk[0] ^ 0xFF]) + chunk[1:]
            if blob and self.scenario in ("reset_blob", "reset_blob_no_range") and up.content_length:
                half = up.content_length // 2
                if sent + len(chunk) > half and self._once("reset " + blob.group(2)):
                    await resp.write(chunk[: half - sent])
                    self.events["reset"] += 1
                    assert request.transport
                    request.transport.abort()
                    return
            await resp.write(chunk)
            sent += len(chunk)
            held = blob and self.scenario == "hold_blob" and blob.group(2) == self.params["digest"]
            if held and self._once("hold"):  # the first download of that blob stops after its first chunk
                self.events["held"] += 1
                assert self._released
                await self._released.wait()
        if "range" in {k.lower() for k in request.headers} and up.status == 206:
            self.events["range"] += 1
        await resp.write_eof()

    def _rewrite_location(self, location: str) -> str:
        parts = urlsplit(location)
        if parts.netloc == self.upstream.split("//", 1)[1]:
            parts = parts._replace(netloc=f"127.0.0.1:{self.port}")
        if self.scenario == "evil_location":
            self.events["evil"] += 1
            return "http://169.254.169.254/v2/upload?x=1"
        if self.scenario == "relative_location":
            self.events["relative"] += 1
            return urlunsplit(("", "", parts.path, parts.query, ""))
        return urlunsplit(parts)

    # -- the object store a redirect points to: refuses any request carrying Authorization ---------------
    async def _side(self, request: web.Request) -> web.StreamResponse:
        if "Authorization" in request.headers:
            self.side_auth_headers += 1
            return web.Response(status=400, text="Only one auth mechanism allowed")
        if request.query.get("access_token") != "s3cr3t-storage-token":
            return web.Response(status=403)
        assert self._session
        self.events["side_served"] += 1
        m = BLOB_GET.match(request.path)
        headers = self.side_headers(m.group(1)) if self.side_headers and m else {}
        async with self._session.get(self.upstream + request.path, headers=headers) as up:
            data = await up.read()
        return web.Response(body=data, status=up.status)


def proxy(faults: list[FaultProxy], reg: RegistryServer, scenario: str, **kw: object) -> FaultProxy:
    p = FaultProxy(reg.port, scenario, **kw).start()
    faults.append(p)
    return p


def via(p: FaultProxy, reg: RegistryServer | None = None, **options: object) -> RegistryClient:
    creds = None
    if reg is not None and reg.users:
        creds = Credentials(*next(iter(reg.users.items())))
    options.setdefault("retry", FAST_RETRY)
    return RegistryClient(parse_endpoint(p.endpoint), credentials=creds, options=ClientOptions(**options))  # type: ignore[arg-type]


def copy(
    source: RegistryClient,
    repo: str,
    targets: list[Target],
    listener: object = None,
    referrers: ReferrerOptions | None = None,
) -> CopyResult:
    """``CopyEngine.copy`` of ``repo:v1``; referrers are left out unless ``referrers`` says (as the CLI does)."""

    async def go() -> CopyResult:
        try:
            source_repo = RegistryRepository(source, repo)
            return await CopyEngine().copy(source_repo, "v1", targets, listener=listener, referrers=referrers)  # type: ignore[arg-type]
        finally:
            await source.close()
            for t in targets:
                await t.repo.close()

    return asyncio.run(go())


def job_body(src: FaultProxy, repo: str, dests: list[FaultProxy], ref: str = "v1") -> dict[str, Any]:
    """A service job from ``src`` through its proxy to every proxy of ``dests``, each with overwrite:
    a job that finds the tag already pushed by a concurrent one is FINISHED, not SKIPPED."""
    return {
        "source": {"endpoint": src.endpoint, "image": repo, "ref": ref},
        "targets": [{"endpoint": p.endpoint, "overwrite": True} for p in dests],
    }
