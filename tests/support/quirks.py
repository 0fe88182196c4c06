"""Registry quirks beyond plain faults (test-only): a ``FaultProxy`` rewriting what a real registry answers
the way other registries, gateways and networks answer it.

Scenarios (``QuirkProxy(port, scenario, **params)``):

- ``bare_hex_digest``: ``Docker-Content-Digest`` without its algorithm (``<hex>``, a registry seen in the
  wild); ``upper_hex_digest``: the hex in upper case;
- ``wrong_digest``: a manifest GET by tag announces a valid digest its bytes do not hash to;
- ``reset_manifest``: the first ``params["count"]`` manifest GETs send half their body, then the
  connection is cut; ``reset_tags``, ``reset_referrers``: the same for tag list and referrers pages;
- ``corrupt_manifest``: the first ``params["count"]`` manifest GETs by tag get one byte of their body
  flipped (the header stays right);
- ``wrong_put_digest``: manifest PUT answers announce ``sha256:000...``; ``reserialise_put``: manifest PUTs
  reach the registry written again (indent 1) (a registry storing other bytes than it was sent);
- ``max_tags``: a tag list asked for more than ``params["max"]`` per page answers 400
  PAGINATION_NUMBER_INVALID (distribution 3.1's tags.maxtags);
- ``charset``: every manifest answer's ``Content-Type`` gets ``; charset=utf-8`` appended;
- ``basic_and_bearer``: a 401's ``WWW-Authenticate`` lists a Basic challenge before the registry's Bearer one;
  ``basic_then_bearer_headers``: the same as two ``WWW-Authenticate`` headers;
- ``stall_blob``: the first ``params["count"]`` blob GETs send their headers and half the body, then nothing;
- ``stall_manifest``: every manifest GET waits forever before answering;
- ``short_blob``: every blob GET answers a clean 200 with a body one byte short (its Content-Length too);
- ``not_now``: the first ``params["count"]`` manifest GETs answer ``params["status"]`` with
  ``Retry-After: params["retry_after"]`` (seconds or an HTTP date);
- ``no_head``: manifest HEADs answer 405 (a registry or gateway without HEAD);
- ``gcr_401``: 401s carry no ``WWW-Authenticate`` but on ``GET /v2/`` (gcr.io), and the first upload
  POST is refused 401 so (a token the registry stopped taking);
- ``upload_lost``: the first upload PUT answers 404 BLOB_UPLOAD_UNKNOWN (a replica that never saw the
  session); ``upload_corrupt``: the first upload PUT with a body reaches the registry with one byte
  flipped (it answers 400 DIGEST_INVALID);
- ``location_elsewhere``: upload Locations name another server (``params["elsewhere"]``: host:port,
  a second proxy to the same registry), absolute;
- ``upload_200``: every blob upload PATCH and PUT that succeeded answers 200 (the spec says 202, 201).
- ``push_only``: manifest GETs and HEADs and tag lists answer 403 DENIED (credentials that may push, not read).
- ``tokens_expire``: a Bearer token is taken for ``params["uses"]`` requests (its life, counted in requests
  so that a loaded machine does not change it), then every request carrying it answers 401 with the
  registry's challenge and ``error="invalid_token"``; ``events["expired"]`` counts those 401s,
  ``events["expired_tokens"]`` the tokens refused.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from collections.abc import MutableMapping
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from tests.support.faults import BLOB_GET, FaultProxy


class QuirkProxy(FaultProxy):
    def stop(self) -> None:
        """Stalled handlers end first (aiohttp's cleanup would wait for them)."""

        async def wake() -> None:
            self._stopping.set()

        asyncio.run_coroutine_threadsafe(wake(), self._loop).result(10)
        super().stop()

    async def _start(self) -> None:
        self._stopping = asyncio.Event()
        self.events_challenge = ""
        self._uses: Counter[str] = Counter()  # requests that carried each Bearer token (tokens_expire)
        self._refused_tokens: set[str] = set()
        await super()._start()

    async def _stall(self) -> None:
        await self._stopping.wait()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        refused = await self._expired_token(request) if self.scenario == "tokens_expire" else None
        return refused if refused is not None else await super()._handle(request)

    async def _fault_before(self, request: web.Request) -> web.StreamResponse | None:
        manifest_get = request.method == "GET" and "/manifests/" in request.path
        if self.scenario == "not_now" and manifest_get and self.events["not_now"] < self.params["count"]:
            self.events["not_now"] += 1
            retry_after = self.params["retry_after"]
            when = retry_after() if callable(retry_after) else retry_after
            return web.Response(
                status=self.params["status"], text="<html>not now</html>", headers={"Retry-After": when}
            )
        tags_get = request.method == "GET" and request.path.endswith("/tags/list")
        if self.scenario == "max_tags" and tags_get and int(request.query.get("n", "0")) > self.params["max"]:
            self.events["n_refused"] += 1
            return web.json_response(
                {"errors": [{"code": "PAGINATION_NUMBER_INVALID", "message": "invalid number of results requested"}]},
                status=400,
            )
        referrers_get = request.method == "GET" and "/referrers/" in request.path
        cut = {"reset_manifest": manifest_get, "reset_tags": tags_get, "reset_referrers": referrers_get}
        if cut.get(self.scenario) and self.events["reset"] < self.params["count"]:
            self.events["reset"] += 1  # counted before any await: concurrent GETs see it
            return await self._cut_body(request)
        by_tag = manifest_get and "/manifests/sha256:" not in request.path
        if self.scenario == "corrupt_manifest" and by_tag and self.events["corrupted"] < self.params["count"]:
            self.events["corrupted"] += 1
            return await self._cut_body(request, flip=True)
        pushing = await self._push_fault(request)
        if pushing is not None:
            return pushing
        reading = request.method in ("GET", "HEAD") and ("/manifests/" in request.path or tags_get)
        if self.scenario == "push_only" and reading:
            self.events["read_denied"] += 1
            return web.json_response(
                {"errors": [{"code": "DENIED", "message": "requested access is denied"}]}, status=403
            )
        if self.scenario == "no_head" and request.method == "HEAD" and "/manifests/" in request.path:
            self.events["head_refused"] += 1
            return web.Response(status=405)
        if self.scenario == "stall_manifest" and request.method == "GET" and "/manifests/" in request.path:
            self.events["stalled"] += 1
            await self._stall()
            return web.Response(status=503)
        if self.scenario in ("stall_blob", "short_blob") and request.method == "GET" and BLOB_GET.match(request.path):
            return await self._broken_blob(request)
        return await super()._fault_before(request)

    async def _expired_token(self, request: web.Request) -> web.StreamResponse | None:
        sent = request.headers.get("Authorization", "")
        if not sent.startswith("Bearer "):
            return None
        self._uses[sent] += 1
        if self._uses[sent] <= self.params["uses"]:
            return None
        self.events["expired"] += 1
        self._refused_tokens.add(sent)
        self.events["expired_tokens"] = len(self._refused_tokens)
        await request.read()
        challenge = f'{self.events_challenge},error="invalid_token"'
        body = {"errors": [{"code": "UNAUTHORIZED", "message": "token expired"}]}
        return web.json_response(body, status=401, headers={"WWW-Authenticate": challenge})

    async def _push_fault(self, request: web.Request) -> web.StreamResponse | None:
        """The scenarios of uploads and manifest pushes."""
        if self.scenario == "reserialise_put" and request.method == "PUT" and "/manifests/" in request.path:
            return await self._reserialised(request)
        upload_start = request.method == "POST" and "/blobs/uploads/" in request.path
        if self.scenario == "gcr_401" and upload_start and self._once("401"):
            self.events["401"] += 1
            return web.json_response({"errors": [{"code": "UNAUTHORIZED", "message": "token expired"}]}, status=401)
        upload_put = request.method == "PUT" and "/blobs/uploads/" in request.path
        if self.scenario == "upload_lost" and upload_put and self._once("lost"):
            self.events["lost"] += 1
            await request.read()
            return web.json_response(
                {"errors": [{"code": "BLOB_UPLOAD_UNKNOWN", "message": "blob upload unknown to registry"}]}, status=404
            )
        if self.scenario == "upload_corrupt" and upload_put and (request.content_length or 0) > 0 and self._once("c"):
            return await self._corrupted_upload(request)
        return None

    async def _corrupted_upload(self, request: web.Request) -> web.StreamResponse:
        assert self._session
        body = bytearray(await request.read())
        body[len(body) // 2] ^= 0xFF
        self.events["corrupted_upload"] += 1
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        async with self._session.put(self.upstream + request.path_qs, data=bytes(body), headers=headers) as up:
            self.events[f"corrupt answered {up.status}"] += 1
            return web.Response(status=up.status, body=await up.read(), content_type="application/json")

    async def _reserialised(self, request: web.Request) -> web.StreamResponse:
        assert self._session
        body = json.dumps(json.loads(await request.read()), indent=1).encode()
        self.events["reserialised"] += 1
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        async with self._session.put(self.upstream + request.path_qs, data=body, headers=headers) as up:
            out = {k: v for k, v in up.headers.items() if k.lower() in ("docker-content-digest", "location")}
            return web.Response(status=up.status, body=await up.read(), headers=out)

    async def _cut_body(self, request: web.Request, flip: bool = False) -> web.StreamResponse:
        """Half the body, then the connection cut; with ``flip``, the whole body with one byte changed."""
        assert self._session
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("authorization", "accept")}
        async with self._session.get(self.upstream + request.path_qs, headers=headers) as up:
            data = await up.read()
            out = {k: v for k, v in up.headers.items() if k.lower() not in ("content-length", "transfer-encoding")}
        if flip:
            body = bytearray(data)
            body[len(body) // 2] ^= 0x01
            return web.Response(status=up.status, body=bytes(body), headers=out)
        resp = web.StreamResponse(status=up.status, headers={**out, "Content-Length": str(len(data))})
        await resp.prepare(request)
        await resp.write(data[: len(data) // 2])
        if request.transport is not None:
            request.transport.abort()
        return resp

    async def _broken_blob(self, request: web.Request) -> web.StreamResponse | None:
        if self.scenario == "stall_blob":
            if self.events["stalled"] >= self.params.get("count", 1):
                return None
            self.events["stalled"] += 1  # counted before any await: concurrent GETs see it
        assert self._session
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("authorization", "range")}
        async with self._session.get(self.upstream + request.path, headers=headers) as up:
            if up.status not in (200, 206):
                return None
            data = await up.read()
        if self.scenario == "short_blob":
            self.events["short"] += 1
            return web.Response(status=up.status, body=data[:-1], headers={"Content-Type": "application/octet-stream"})
        resp = web.StreamResponse(status=up.status, headers={"Content-Length": str(len(data))})
        if up.status == 206:
            resp.headers["Content-Range"] = up.headers["Content-Range"]
        await resp.prepare(request)
        await resp.write(data[: len(data) // 2])
        await self._stall()
        if request.transport is not None:  # the client went away long ago: nothing more to send
            request.transport.abort()
        return resp

    def _rewrite_location(self, location: str) -> str:
        moved = super()._rewrite_location(location)
        if self.scenario == "location_elsewhere" and "/blobs/uploads/" in moved:
            self.events["elsewhere"] += 1
            parts = urlsplit(moved)
            return urlunsplit(("http", str(self.params["elsewhere"]), parts.path, parts.query, ""))
        return moved

    def _status(self, request: web.Request, up: aiohttp.ClientResponse) -> int:
        uploading = request.method in ("PATCH", "PUT") and "/blobs/uploads/" in request.path
        if self.scenario == "upload_200" and uploading and up.status in (201, 202):
            self.events[f"{request.method} 200"] += 1
            return 200
        return up.status

    def _out_headers(self, request: web.Request, up: aiohttp.ClientResponse) -> MutableMapping[str, str]:
        out = super()._out_headers(request, up)
        digest = out.get("Docker-Content-Digest", "")
        if digest and self.scenario == "bare_hex_digest":
            self.events["rewritten"] += 1
            out["Docker-Content-Digest"] = digest.split(":", 1)[1]
        if digest and self.scenario == "upper_hex_digest":
            self.events["rewritten"] += 1
            alg, hexpart = digest.split(":", 1)
            out["Docker-Content-Digest"] = f"{alg}:{hexpart.upper()}"
        by_tag = "/manifests/" in request.path and "/manifests/sha256:" not in request.path
        if digest and self.scenario == "wrong_digest" and request.method == "GET" and by_tag:
            self.events["rewritten"] += 1
            out["Docker-Content-Digest"] = "sha256:" + "0" * 64
        if digest and self.scenario == "wrong_put_digest" and request.method == "PUT" and "/manifests/" in request.path:
            self.events["rewritten"] += 1
            out["Docker-Content-Digest"] = "sha256:" + "0" * 64
        if self.scenario == "charset" and "/manifests/" in request.path and "Content-Type" in out:
            self.events["rewritten"] += 1
            out["Content-Type"] += "; charset=utf-8"
        if self.scenario == "gcr_401" and request.path != "/v2/" and "WWW-Authenticate" in out:
            del out["WWW-Authenticate"]
            self.events["challenge_dropped"] += 1
        challenge = out.get("WWW-Authenticate", "")
        if challenge:
            self.events_challenge = challenge  # the registry's own, for tokens_expire's 401s
        if self.scenario == "basic_and_bearer" and re.match(r"(?i)bearer ", challenge):
            self.events["rewritten"] += 1
            out["WWW-Authenticate"] = f'Basic realm="regcast-test", {challenge}'
        if self.scenario == "basic_then_bearer_headers" and re.match(r"(?i)bearer ", challenge):
            self.events["rewritten"] += 1  # one header per challenge, Basic first
            both = CIMultiDict(out)
            both["WWW-Authenticate"] = 'Basic realm="regcast-test"'
            both.add("WWW-Authenticate", challenge)
            return both
        return out
