"""Registries (and the hosts they redirect to) that echo secrets, answer malformed heads or trickle them.

Everything runs on loopback: hostile aiohttp servers (``tests.support.hostile``) and raw asyncio sockets for
answers aiohttp's server would not send. The assertions are on what a user sees: the error line, its time.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from aiohttp import web

from regcast._exceptions import RegistryUnreachable
from regcast.registry import blobs
from regcast.registry import mediatypes as mt
from regcast.registry.client import ClientOptions, RegistryClient
from regcast.registry.digest import digest_of
from regcast.registry.reference import parse_endpoint
from regcast.registry.retry import RetryPolicy
from tests.support.cli import regcast
from tests.support.hostile import HostileServer, registry_serving, serve
from tests.support.loopback import JAIL_ENV
from tests.support.service import Service

PASSWORD = "Sekr1t-echoed-PW-42"
DIGEST = "sha256:" + "a" * 64
Conversation = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
Answer = Callable[[bytes, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def pinged(answer: Answer) -> Conversation:
    """A registry's conversation: the ``/v2/`` ping answered 200, every other request's head given to ``answer``."""

    async def talk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            if head.startswith(b"GET /v2/ "):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
                continue
            await answer(head, reader, writer)

    return talk


async def trickle_headers(writer: asyncio.StreamWriter, status_line: bytes) -> None:
    """``status_line``, then a header line every 0.2 s, forever: never silent for a read timeout."""
    writer.write(status_line)
    while True:
        writer.write(b"X-Slow: 1\r\n")
        await writer.drain()
        await asyncio.sleep(0.2)


class RawServer:
    """A loopback TCP server in its own thread whose every connection is ``talk``'s (any bytes at all)."""

    def __init__(self, talk: Conversation) -> None:
        self.talk = talk
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    async def _quiet(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self.talk(reader, writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # the client hung up: what the test wanted
        finally:
            writer.close()

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._quiet, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    def start(self) -> RawServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)


@pytest.fixture
def raw() -> Iterator[list[RawServer]]:
    servers: list[RawServer] = []
    yield servers
    for s in servers:
        s.stop()


def client_of(port: int, **options: object) -> RegistryClient:
    opts = ClientOptions(retry=RetryPolicy(attempts=2, backoff=0.01, max_backoff=0.01), **options)  # type: ignore[arg-type]
    return RegistryClient(parse_endpoint(f"http://127.0.0.1:{port}/v2"), options=opts)


async def read_all(client: RegistryClient) -> None:
    try:
        async for _chunk in blobs.read_blob(client, "a/b", DIGEST, 10):
            pass
    finally:
        await client.close()


def test_a_registry_quoting_the_credentials_it_got_never_shows_them(hostile: list[HostileServer]) -> None:
    """An error message that quotes the Basic credentials (decoded or not) is the CLI's error line without them."""

    async def quoting(request: web.Request) -> web.StreamResponse:
        if "Authorization" not in request.headers:
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="r"'})
        if request.path == "/v2/":
            return web.json_response({})
        sent = request.headers["Authorization"].split()[1]
        said = f"denied for {base64.b64decode(sent).decode()} ({sent})"
        return web.json_response({"errors": [{"code": "DENIED", "message": said}]}, status=403)

    server = serve(hostile, quoting)
    r = regcast("copy", "--src-creds", f"alice:{PASSWORD}", f"127.0.0.1:{server.port}/a/b:v1", "127.0.0.1:1/a/b:v1")
    assert r.returncode != 0
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: registry 127.0.0.1:{server.port}: getting manifest a/b:v1:"), line
    assert "403 DENIED: denied for alice:REDACTED (REDACTED)" in line
    encoded = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    assert PASSWORD not in r.stdout + r.stderr and encoded.rstrip("=") not in r.stdout + r.stderr


def test_a_redirect_host_answering_a_malformed_head_never_shows_its_signed_url(
    hostile: list[HostileServer], raw: list[RawServer]
) -> None:
    """aiohttp's error for a header line over its limit ends with the raw URL: a blob redirect's signature."""

    async def oversized(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n")
        await writer.drain()

    storage = RawServer(oversized).start()
    raw.append(storage)
    signed = f"http://127.0.0.1:{storage.port}/o?X-Amz-Signature=Sekr1t-SIG&sig=Sekr1t-SAS&access_token=Sekr1t-TOK"

    async def redirecting(request: web.Request) -> web.StreamResponse:
        if request.path == "/v2/":
            return web.json_response({})
        return web.Response(status=307, headers={"Location": signed})

    registry = serve(hostile, redirecting)
    with pytest.raises(RegistryUnreachable) as caught:
        asyncio.run(read_all(client_of(registry.port)))
    text = str(caught.value)
    assert "X-Amz-Signature=REDACTED&sig=REDACTED&access_token=REDACTED: malformed answer (Got more than" in text
    assert "Sekr1t" not in text


def test_a_blob_answer_whose_headers_trickle_forever_times_out_in_one_line(raw: list[RawServer]) -> None:
    """A streamed GET has no total limit and its read limit is between reads: a header line every 0.2 s
    held it forever. Its head must come within the request timeout, then it is retried and given up."""

    async def trickling(_head: bytes, _reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await trickle_headers(writer, b"HTTP/1.1 200 OK\r\n")

    server = RawServer(pinged(trickling)).start()
    raw.append(server)
    started = time.monotonic()
    with pytest.raises(RegistryUnreachable) as caught:
        asyncio.run(asyncio.wait_for(read_all(client_of(server.port, request_timeout=1.0, read_timeout=1.0)), 30))
    assert time.monotonic() - started < 10
    assert (
        str(caught.value)
        == f"registry 127.0.0.1:{server.port}: GET http://127.0.0.1:{server.port}/v2/a/b/blobs/{DIGEST}: timed out"
    )


def test_a_stored_mirror_shows_its_notify_url_without_userinfo_or_query(tmp_path: Path) -> None:
    """GET /api/mirrors/<name> shows a hook's scheme and host only: ``user:password@`` and a query's token were
    echoed (only a path was cut)."""
    svc = Service(tmp_path, JAIL_ENV).start()
    try:
        for url in ("https://hook:Sekr1t-hook-PW@hooks.example/x", "https://hooks.example?token=Sekr1t-hook-TOK"):
            doc = {
                "version": 1,
                "mirrors": [
                    {
                        "name": "app",
                        "source": "127.0.0.1:1/a/b",
                        "targets": ["127.0.0.1:2/m"],
                        "notify": {"url": url},
                    }
                ],
            }
            r = svc.http.post("/api/mirrors", json=doc)
            assert r.status_code == 201, r.text
            shown = svc.http.get("/api/mirrors/app")
            assert shown.json()["document"]["mirrors"][0]["notify"]["url"] == "https://hooks.example/..."
            assert "Sekr1t" not in shown.text + svc.http.get("/api/mirrors").text
    finally:
        svc.stop()


def test_a_tag_list_that_never_ends_is_given_up_past_its_byte_limit(
    hostile: list[HostileServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Page after page of new tags (each page linking the next) is refused once the walk read the limit;
    it grew the walk's memory for 10,000 pages of up to 16 MiB each."""
    from regcast._exceptions import ProtocolViolation
    from regcast.mirrors import tags

    monkeypatch.setattr(tags, "MAX_TAG_LIST_BYTES", 1024 * 1024, raising=False)  # the real one is 64 MiB
    pages: list[int] = []

    async def endless(request: web.Request) -> web.StreamResponse:
        if request.path == "/v2/":
            return web.json_response({})
        page = int(request.query.get("page", "0"))
        pages.append(page)
        await asyncio.sleep(0.02)  # paced: memory of a walk that never stops stays small while the test waits
        names = [f"p{page}-t{i}" for i in range(1000)]
        link = f'</v2/a/b/tags/list?page={page + 1}>; rel="next"'
        return web.json_response({"name": "a/b", "tags": names}, headers={"Link": link})

    server = serve(hostile, endless)

    async def walk() -> list[str]:
        client = client_of(server.port)
        try:
            return await tags.list_tags(client, "a/b")
        finally:
            await client.close()

    with pytest.raises(ProtocolViolation) as caught:
        asyncio.run(asyncio.wait_for(walk(), 20))
    assert str(caught.value) == (
        f"registry 127.0.0.1:{server.port}: the tag list of a/b is over 1048576 bytes ({len(pages)} pages): "
        "not read further"
    )
    assert len(pages) < 100


def test_a_hook_answering_a_malformed_head_never_shows_its_url_in_the_job_status(
    tmp_path: Path, raw: list[RawServer]
) -> None:
    """A hook URL's path and query are its secret; the delivery error quoted aiohttp's text, which ends with the
    URL in yarl's form (lower-case host, ``%7e`` as ``~``): not the URL given, so not replaced."""

    async def oversized(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n")
        await writer.drain()

    hook = RawServer(oversized).start()
    raw.append(hook)
    svc = Service(tmp_path, {**JAIL_ENV, "REGCAST_NOTIFY_BACKOFF": "0"}).start()
    try:
        job = svc.submit(
            {
                "source": {"endpoint": "http://127.0.0.1:1/v2", "image": "a/b", "ref": "v1"},
                "targets": [{"endpoint": "http://127.0.0.1:2/v2"}],
                "notify": {"url": f"http://LOCALHOST:{hook.port}/hooks/Sekr1t-PATH?token=Sekr1t-Q%7e"},
            }
        )
        status = svc.wait_for(job, lambda s: len(s["notifications"]) >= 2)
        shown = svc.http.get(f"/api/distribute/image/{job}").text + svc.output()
    finally:
        svc.stop()
    first = status["notifications"][0]
    assert first["delivered"] is False
    assert first["error"].startswith("ClientResponseError: Got more than 8190 bytes"), first
    assert "Sekr1t" not in shown


def test_a_digest_ending_in_a_newline_is_refused_before_any_use(tmp_path: Path, hostile: list[HostileServer]) -> None:
    """``$`` in a Python pattern also matches before a final ``\\n``: ``sha256:<hex>\\n`` passed the digest check
    (CVE-2024-3727's guard) into a blob URL (``%0A``) and a layout's file names."""
    config = b"{}"
    layer = "sha256:" + "b" * 64 + "\n"
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": {"mediaType": mt.OCI_CONFIG, "digest": digest_of(config), "size": len(config)},
            "layers": [{"mediaType": mt.OCI_LAYER, "digest": layer, "size": 1}],
        }
    ).encode()
    manifests = registry_serving({"v1": (manifest, mt.OCI_MANIFEST)})

    async def handle(request: web.Request) -> web.StreamResponse:
        if request.path.endswith(f"/blobs/{digest_of(config)}"):
            return web.Response(body=b"" if request.method == "HEAD" else config)
        return await manifests(request)

    server = serve(hostile, handle)
    r = regcast("copy", f"127.0.0.1:{server.port}/a/b:v1", f"oci:{tmp_path}/out:v1")
    assert r.returncode != 0
    assert "invalid digest 'sha256:bbbb" in r.stderr.strip().splitlines()[-1], r.stderr
    assert not [path for _m, path, _h in server.seen if "%0A" in path.upper() or "\n" in path]
    assert not [p.name for p in tmp_path.rglob("*") if "\n" in p.name]


def test_an_upload_answer_whose_headers_trickle_forever_times_out_once_the_body_went(raw: list[RawServer]) -> None:
    """A target that took every byte of a streamed upload, then trickles header lines: bounded from the body's
    end by the read timeout (its bytes may take as long as they take), not held forever."""
    data = b"x" * 300_000
    digest = digest_of(data)
    took: list[int] = []

    async def trickling(head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        length = int(head.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
        took.append(len(await reader.readexactly(length)))
        await trickle_headers(writer, b"HTTP/1.1 201 Created\r\n")

    server = RawServer(pinged(trickling)).start()
    raw.append(server)

    async def body() -> AsyncIterator[bytes]:
        for i in range(0, len(data), 100_000):
            await asyncio.sleep(0.6)  # the body's own time is not counted: 1.8 s in all, over the 1 s limit
            yield data[i : i + 100_000]

    async def upload() -> None:
        client = client_of(server.port, request_timeout=1.0, read_timeout=1.0)
        try:
            location = f"http://127.0.0.1:{server.port}/v2/a/b/blobs/uploads/u1"
            await blobs.put_monolithic(client, location, "a/b", digest, len(data), body())
        finally:
            await client.close()

    started = time.monotonic()
    with pytest.raises(RegistryUnreachable) as caught:
        asyncio.run(asyncio.wait_for(upload(), 30))
    assert took == [len(data)]
    assert time.monotonic() - started < 10
    assert str(caught.value).endswith(f"/v2/a/b/blobs/uploads/u1?digest={digest}: timed out"), caught.value


def test_an_error_answer_whose_body_trickles_is_reported_without_waiting_for_it(
    raw: list[RawServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A blob GET answered 404 with a body of a byte every 0.3 s (never silent for the read timeout): the
    error is said from its status once the body's time is up; reading the body for its message held it forever."""
    from regcast._exceptions import NotFound
    from regcast.registry import _transport

    monkeypatch.setattr(_transport, "ERROR_BODY_SECONDS", 1.0, raising=False)  # 10 s in the product

    async def trickling(_head: bytes, _reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 1000000\r\n\r\n")
        while True:
            writer.write(b" ")
            await writer.drain()
            await asyncio.sleep(0.3)

    server = RawServer(pinged(trickling)).start()
    raw.append(server)
    started = time.monotonic()
    with pytest.raises(NotFound) as caught:
        asyncio.run(asyncio.wait_for(read_all(client_of(server.port, request_timeout=1.0, read_timeout=1.0)), 20))
    assert time.monotonic() - started < 10
    assert str(caught.value).endswith(f"/v2/a/b/blobs/{DIGEST} answered 404 Not Found"), caught.value


def test_a_url_handed_over_with_userinfo_is_refused_in_one_line(hostile: list[HostileServer]) -> None:
    """An upload Location, a redirect or a token realm carrying ``user:password@``: sent beside regcast's own
    Authorization, aiohttp raised a bare ValueError out of the registry layer (no registry named, no error tree)."""
    from regcast._exceptions import ProtocolViolation
    from regcast.registry.auth import Credentials

    async def handing_userinfo(request: web.Request) -> web.StreamResponse:
        here = f"http://x:Sekr1t-URL@127.0.0.1:{request.url.port}"
        if request.path == "/v2/token-realm/":
            return web.Response(status=401, headers={"WWW-Authenticate": f'Bearer realm="{here}/token"'})
        if "Authorization" not in request.headers:
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="r"'})
        if request.path == "/v2/":
            return web.json_response({})
        if request.method == "POST":
            return web.Response(status=202, headers={"Location": f"{here}/v2/a/b/blobs/uploads/u1"})
        return web.Response(status=307, headers={"Location": f"{here}/v2/a/b/elsewhere"})

    server = serve(hostile, handing_userinfo)
    opts = ClientOptions(retry=RetryPolicy(attempts=2, backoff=0.01, max_backoff=0.01))

    async def attempts() -> list[BaseException]:
        client = RegistryClient(parse_endpoint(server.endpoint), credentials=Credentials("alice", "pw"), options=opts)
        errors: list[BaseException] = []
        try:
            for attempt in (blobs.start_upload(client, "a/b"), read_all(client)):
                try:
                    await attempt
                except Exception as exc:  # each is named below
                    errors.append(exc)
            realm = RegistryClient(parse_endpoint(server.endpoint), credentials=Credentials("a", "pw"), options=opts)
            try:
                await realm.send("GET", f"{server.url}/v2/token-realm/", scopes=("repository:a/b:pull",))
            except Exception as exc:
                errors.append(exc)
            finally:
                await realm.close()
        finally:
            await client.close()
        return errors

    errors = asyncio.run(attempts())
    assert [type(e) for e in errors] == [ProtocolViolation] * 3, errors
    assert [str(e).split(": ", 1)[1] for e in errors] == [
        "refusing upload Location: it carries user:password@",
        "refusing redirect: it carries user:password@",
        "refusing token realm: it carries user:password@",
    ]


def object_store(data: bytes) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Storage on another host, as S3 or Azure behind a registry: a second hop, the object, upload PUTs."""

    async def handle(request: web.Request) -> web.StreamResponse:
        if request.path == "/hop":
            return web.Response(status=307, headers={"Location": "/object?X-Amz-Signature=s"})
        if request.method == "PUT":
            return web.Response(status=201)
        return web.Response(body=data)

    return handle


async def a_token(_request: web.Request) -> web.StreamResponse:
    return web.json_response({"token": "reg-token-0123456789"})


@pytest.mark.parametrize("scheme", ["basic", "bearer"])
def test_credentials_never_follow_a_redirect_or_an_upload_location_to_another_host(
    scheme: str, hostile: list[HostileServer]
) -> None:
    """Blob GET 307 to storage on another host (then a second hop there), an upload Location there: the
    storage sees no Authorization, Basic or Bearer (ECR/S3 and ACR/SAS refuse one; CVE-2020-15157's class)."""
    from regcast.registry.auth import Credentials

    data = b"layer bytes"
    digest = digest_of(data)
    store, tokens = serve(hostile, object_store(data)), serve(hostile, a_token)
    asked = 'Basic realm="r"' if scheme == "basic" else f'Bearer realm="{tokens.url}/token"'

    async def registry(request: web.Request) -> web.StreamResponse:
        if "Authorization" not in request.headers:
            return web.Response(status=401, headers={"WWW-Authenticate": asked})
        if request.path == "/v2/":
            return web.json_response({})
        if request.method == "POST":
            return web.Response(status=202, headers={"Location": f"{store.url}/upload?session=1"})
        return web.Response(status=307, headers={"Location": f"{store.url}/hop"})

    reg = serve(hostile, registry)
    opts = ClientOptions(retry=RetryPolicy(attempts=2, backoff=0.01, max_backoff=0.01))

    async def copy_one() -> bytes:
        client = RegistryClient(parse_endpoint(reg.endpoint), credentials=Credentials("alice", "pw"), options=opts)
        try:
            got = b"".join([chunk async for chunk in blobs.read_blob(client, "a/b", digest, len(data))])
            location = await blobs.start_upload(client, "a/b")
            assert location is not None
            await blobs.put_monolithic(client, location, "a/b", digest, len(data), data)
            return got
        finally:
            await client.close()

    assert asyncio.run(copy_one()) == data
    paths = [(m, p.split("?")[0]) for m, p, _h in store.seen]
    assert paths == [("GET", "/hop"), ("GET", "/object"), ("PUT", "/upload")]
    assert store.authorizations() == []
    wanted = "Basic " if scheme == "basic" else "Bearer reg-token-0123456789"
    assert reg.authorizations() and all(a.startswith(wanted) for a in reg.authorizations())


def test_a_malformed_answer_quoting_the_credentials_never_shows_them(raw: list[RawServer]) -> None:
    """A header line over aiohttp's limit is quoted in its error (the line's first 100 bytes): a registry putting
    the Basic credentials it got there had them shown in the CLI's error line, whole or cut too short to scrub."""

    async def quoting(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            sent = [line for line in head.split(b"\r\n") if line.lower().startswith(b"authorization:")]
            if not sent:
                writer.write(
                    b'HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm="r"\r\nContent-Length: 0\r\n\r\n'
                )
            elif head.startswith(b"GET /v2/ "):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
            else:
                credentials = sent[0].split(b" ")[-1]
                plain = base64.b64decode(credentials)
                writer.write(b"HTTP/1.1 200 OK\r\nX-Echo: " + plain + b" " + credentials + b"a" * 9000 + b"\r\n\r\n")
            await writer.drain()

    server = RawServer(quoting).start()
    raw.append(server)
    source = f"127.0.0.1:{server.port}/a/b:v1"
    # the HTTPS try first waits out its handshake on this plain server: 1 s, not 20
    r = regcast(
        "copy", "--src-creds", f"alice:{PASSWORD}", source, "127.0.0.1:1/a/b:v1", env={"REGCAST_CONNECT_TIMEOUT": "1"}
    )
    assert r.returncode != 0
    line = r.stderr.strip().splitlines()[-1]
    assert line.endswith("malformed answer (Got more than 8190 bytes when reading)"), line
    encoded = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    assert PASSWORD[:8] not in r.stdout + r.stderr and encoded[:12] not in r.stdout + r.stderr
