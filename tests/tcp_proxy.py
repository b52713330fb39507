"""A loopback TCP proxy for fault tests: put it between a client and Redis, then make it slow.

Modes (switch at any time with ``proxy.mode = ...``; they apply to open connections too):

- ``"pass"``: bytes go through untouched.
- ``"delay"``: every chunk, in both directions, is held ``delay`` seconds before it goes on.
- ``"blackhole"``: connections are accepted and their bytes read, but nothing is forwarded in
  either direction (a Redis that stopped answering; the TCP connection stays up).
- ``"close"``: new connections are closed as soon as they are accepted, and open ones are
  closed at their next chunk (a Redis that resets connections).

It runs in the test's own event loop, listens on 127.0.0.1 only, on a free port, and
``aclose()`` (or ``async with``) closes the listener and every connection it holds.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType

MODES = ("pass", "delay", "blackhole", "close")
CHUNK = 65536


class TcpProxy:
    """Forward ``127.0.0.1:<port>`` to ``target_host:target_port``, faults on demand."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target_host = target_host
        self.target_port = target_port
        self._mode = "pass"
        self.delay = 0.0
        self.port = 0
        #: Connections accepted so far, and how many are open now.
        self.accepted = 0
        self.open = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        if value not in MODES:
            raise ValueError(f"mode must be one of {MODES}; got {value!r}")
        self._mode = value

    def set_delay(self, seconds: float) -> None:
        """Switch to ``delay`` mode, holding each chunk this many seconds."""
        self.delay = seconds
        self.mode = "delay"

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)

    async def __aenter__(self) -> TcpProxy:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        self.open += 1
        upstream: asyncio.StreamWriter | None = None
        try:
            if self._mode == "close":
                return
            try:
                up_reader, upstream = await asyncio.open_connection(
                    self.target_host, self.target_port
                )
            except OSError:
                return
            self._writers.add(upstream)
            pumps = [
                asyncio.create_task(self._pump(reader, upstream)),
                asyncio.create_task(self._pump(up_reader, writer)),
            ]
            try:
                # Either side closing ends the connection.
                await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:
                # aclose(): end quietly (asyncio < 3.12 logs handler tasks that end cancelled).
                pass
            finally:
                for pump in pumps:
                    pump.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
        finally:
            self.open -= 1
            for w in (writer, upstream):
                if w is not None:
                    self._writers.discard(w)
                    w.close()
            self._tasks.discard(task)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                data = await reader.read(CHUNK)
            except OSError:
                return
            if not data:
                return
            mode = self._mode
            if mode == "close":
                return
            if mode == "blackhole":
                continue  # swallowed: the peer waits forever
            if mode == "delay":
                await asyncio.sleep(self.delay)
                if self._mode == "blackhole":
                    continue
            writer.write(data)
            try:
                await writer.drain()
            except OSError:
                return
