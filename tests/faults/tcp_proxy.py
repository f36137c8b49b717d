"""A TCP proxy that cuts and stalls connections, for network fault tests.

It listens on loopback (port 0: a free one) and forwards every connection to `upstream`.
- `drop()` aborts every open connection, both sides, as a network cut or a middlebox reset does.
  New connections are accepted and forwarded as before.
- `stall()` stops forwarding in both directions but keeps every socket open, as a partition
  leaves a half-open connection: nobody sees an error, nothing arrives. Connections opened
  during a stall are accepted and stall too. `resume()` forwards again, including what was
  held back.
The proxy runs its own asyncio loop on a daemon thread; every method may be called from any
thread. Counters: `accepted` connections and `held` bytes read but not forwarded (stalled).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
_CHUNK = 64 * 1024


class _Link:
    """One proxied connection: the client's and the upstream's stream writers."""

    def __init__(self, client: asyncio.StreamWriter, upstream: asyncio.StreamWriter) -> None:
        self.writers = (client, upstream)

    def abort(self) -> None:
        for w in self.writers:
            w.transport.abort()


class TcpProxy:
    def __init__(self, upstream_host: str, upstream_port: int, host: str = "127.0.0.1") -> None:
        self._upstream = (upstream_host, upstream_port)
        self._host = host
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="tcp-proxy", daemon=True
        )
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._flowing: asyncio.Event | None = None  # created on the loop
        self.port = 0
        self.accepted = 0
        self.held = 0

    # -- control, from any thread ----------------------------------------------------------
    def start(self) -> int:
        """Listen; return the port."""
        self._thread.start()
        self.port = self._call(self._listen())
        return self.port

    def drop(self) -> int:
        """Abort every open connection; return how many."""
        return self._call(self._drop())

    def stall(self) -> None:
        self._call(self._set_flowing(False))

    def resume(self) -> None:
        self._call(self._set_flowing(True))

    @property
    def open_connections(self) -> int:
        return len(self._links)

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> TcpProxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    # -- on the loop -----------------------------------------------------------------------
    async def _listen(self) -> int:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = await asyncio.start_server(self._serve, self._host, 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _set_flowing(self, flowing: bool) -> None:
        assert self._flowing is not None
        if flowing:
            self._flowing.set()
        else:
            self._flowing.clear()

    async def _drop(self) -> int:
        links = list(self._links)
        for link in links:
            link.abort()
        self._links.difference_update(links)
        return len(links)

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._drop()
        for task in self._handlers:
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        except OSError:  # upstream down: the client sees its connection closed
            writer.transport.abort()
            return
        link = _Link(writer, up_writer)
        self._links.add(link)
        pumps = [
            asyncio.create_task(self._pump(reader, up_writer)),
            asyncio.create_task(self._pump(up_reader, writer)),
        ]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pumps:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            link.abort()
            self._links.discard(link)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._flowing is not None
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(_CHUNK):
                if not self._flowing.is_set():  # stalled: hold it; read nothing more
                    self.held += len(data)
                    try:
                        await self._flowing.wait()
                    finally:
                        self.held -= len(data)
                writer.write(data)
                await writer.drain()
