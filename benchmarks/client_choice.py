"""How docs/decisions.md chose the HTTP client: httpx vs aiohttp streaming a 256 MiB blob.

Against any open registry: ``REGISTRY=http://127.0.0.1:5000 .venv/bin/python benchmarks/client_choice.py``
(needs httpx, installed with the test extras).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import statistics
import time
from collections.abc import AsyncIterator

import aiohttp
import httpx

BASE = os.environ.get("REGISTRY", "http://127.0.0.1:5000")
SIZE = 256 * 1024 * 1024
CHUNK = 1024 * 1024
DATA = os.urandom(CHUNK)
HEADERS = {"Content-Length": str(SIZE), "Content-Type": "application/octet-stream"}


async def body() -> AsyncIterator[bytes]:
    for _ in range(SIZE // CHUNK):
        yield DATA


def blob_digest() -> str:
    h = hashlib.sha256()
    for _ in range(SIZE // CHUNK):
        h.update(DATA)
    return "sha256:" + h.hexdigest()


def with_digest(location: str, digest: str) -> str:
    return location + ("&" if "?" in location else "?") + "digest=" + digest


async def httpx_round(repo: str, digest: str) -> tuple[float, float]:
    async with httpx.AsyncClient(timeout=None) as c:
        loc = (await c.post(f"{BASE}/v2/{repo}/blobs/uploads/")).headers["location"]
        t = time.perf_counter()
        r = await c.put(with_digest(loc, digest), content=body(), headers=HEADERS)
        put = time.perf_counter() - t
        assert r.status_code == 201, r.text
        t, h = time.perf_counter(), hashlib.sha256()
        async with c.stream("GET", f"{BASE}/v2/{repo}/blobs/{digest}") as resp:
            async for b in resp.aiter_raw(CHUNK):
                h.update(b)
        return put, time.perf_counter() - t


async def aiohttp_round(repo: str, digest: str) -> tuple[float, float]:
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{BASE}/v2/{repo}/blobs/uploads/") as r:
            loc = r.headers["location"]
        t = time.perf_counter()
        async with s.put(with_digest(loc, digest), data=body(), headers=HEADERS) as r:
            assert r.status == 201, await r.text()
        put = time.perf_counter() - t
        t, h = time.perf_counter(), hashlib.sha256()
        async with s.get(f"{BASE}/v2/{repo}/blobs/{digest}") as r:
            async for b in r.content.iter_chunked(CHUNK):
                h.update(b)
        return put, time.perf_counter() - t


async def main() -> None:
    digest = blob_digest()
    results: dict[str, list[tuple[float, float]]] = {"httpx": [], "aiohttp": []}
    for i in range(3):
        results["httpx"].append(await httpx_round(f"bench/httpx{i}", digest))
        results["aiohttp"].append(await aiohttp_round(f"bench/aiohttp{i}", digest))
    for name, rounds in results.items():
        put = SIZE / 1e6 / statistics.median(r[0] for r in rounds)
        get = SIZE / 1e6 / statistics.median(r[1] for r in rounds)
        print(f"{name:8} streamed PUT {put:6.0f} MB/s   streamed GET + sha256 {get:6.0f} MB/s")


if __name__ == "__main__":
    asyncio.run(main())
