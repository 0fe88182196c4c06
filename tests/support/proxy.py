"""A TCP proxy for the tests: throttles the bytes flowing back from upstream (``rate``) or going up
to it (``upload_rate``: a target at the end of a slow link), and can cut every connection or refuse
new ones (a database or registry that goes down), or freeze: connections stay open but no byte
moves (a hung server or a black-holed network)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading


class TcpProxy:
    def __init__(
        self,
        upstream_port: int,
        rate: float | None = None,
        upstream_host: str = "127.0.0.1",
        connect_delay: float = 0.0,
        upload_rate: float | None = None,
    ) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.rate = rate  # bytes per second from upstream to client, shared by all connections
        self.upload_rate = upload_rate  # bytes per second from client to upstream, shared likewise
        self.connect_delay = connect_delay  # seconds added to every new connection (a WAN round trip)
        self.port = 0
        self.down = False
        self.connections = 0  # connections accepted so far (a client's connection reuse is counted here)
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()  # connections being served: ended by stop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._budget_lock: asyncio.Lock | None = None
        self._flowing: asyncio.Event | None = None
        self._free_at = {True: 0.0, False: 0.0}  # per direction (True: from upstream)

    def start(self) -> TcpProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _start(self) -> None:
        self._budget_lock = asyncio.Lock()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def set_down(self, down: bool) -> None:
        """Down: cut every open connection and refuse new ones."""
        self.down = down
        if down:
            asyncio.run_coroutine_threadsafe(self._cut(), self._loop).result(10)

    def set_frozen(self, frozen: bool) -> None:
        """Frozen: every connection (open or new) stays up, but nothing is forwarded."""

        async def flip() -> None:
            assert self._flowing
            if frozen:
                self._flowing.clear()
            else:
                self._flowing.set()

        asyncio.run_coroutine_threadsafe(flip(), self._loop).result(10)

    async def _cut(self) -> None:
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()

    def stop(self) -> None:
        async def close() -> None:
            await self._cut()
            if self._server:
                self._server.close()
            if self._flowing is not None:
                self._flowing.set()  # a frozen connection goes on to its cut transport and ends
            if self._handlers:  # their transports are cut: they end by themselves, none left pending
                await asyncio.wait(list(self._handlers), timeout=5)

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)
        self.connections += 1
        if self.down:
            writer.transport.abort()
            return
        if self.upload_rate:  # a small window: the sender feels the slow link, not a big kernel buffer
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        if self.connect_delay:
            await asyncio.sleep(self.connect_delay)
        assert self._flowing
        await self._flowing.wait()
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update({writer, up_writer})
        if self.down:  # went down while this connection was being opened: ``_cut`` could not see it
            await self._cut()
            return
        await asyncio.gather(
            self._pipe(reader, up_writer, False), self._pipe(up_reader, writer, True), return_exceptions=True
        )
        self._writers.discard(writer)
        self._writers.discard(up_writer)

    async def _spend(self, n: int, rate: float, down: bool) -> None:
        """Token bucket: sleep only when ahead of the rate (sleeping per read would undershoot it)."""
        now = self._loop.time()
        self._free_at[down] = max(self._free_at[down], now) + n / rate
        if self._free_at[down] - now > 0.002:
            await asyncio.sleep(self._free_at[down] - now)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, down: bool) -> None:
        rate = self.rate if down else self.upload_rate
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                assert self._flowing
                await self._flowing.wait()
                if rate:
                    assert self._budget_lock
                    async with self._budget_lock:  # one shared link: connections take turns
                        await self._spend(len(data), rate, down)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()
