"""The lane: one connection of the client's pool that the cache keeps for the commands every
request sends (a hit's read, a miss's lookup and store, its fill lock), pipelined.

A command through redis-py's client takes a connection from the pool and gives it back,
goes through its retry, event and metrics layers, and writes and reads the socket on its
own, which on a busy worker costs several times what the command itself does. The lane
takes one connection from the client's pool (connected, authenticated and on its database
as redis-py made it) and speaks to Redis itself: the commands of one turn of the event loop
go out in one write, and the replies, parsed by hiredis as they arrive, answer their callers
in the order they were sent. A caller that stops waiting (its timeout) leaves its reply to
be read and dropped in turn, so replies never cross; a connection that stays silent for
``STALL`` seconds while replies are owed is dropped, and every caller still waiting gets a
``ConnectionError``. The next command takes a new connection from the pool.

Only for a plain client on one Redis (``redis.asyncio.Redis`` over TCP, TLS or a Unix socket,
RESP2 or RESP3): a cluster, a Sentinel-managed pool or a test double keep to the client, as
does every command that is not on a request's path (purges, inspection, the generation).
``RedisCache(multiplex=False)`` turns the lane off.

A likely miss's lookup may wait for its reply in place, the event loop blocked for at most
``wait_in_place`` seconds, while the loop has time to spare (``in_place.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import time
import weakref
from collections import deque
from collections.abc import Sequence
from typing import Any

from redis.exceptions import ConnectionError, NoScriptError, ReadOnlyError

from .in_place import InPlace, read_until, socket_fd

try:
    import hiredis
    from redis._parsers.base import BaseParser

    HAS_HIREDIS = True
except ImportError:  # pragma: no cover - hiredis comes with the redis[hiredis] dependency
    HAS_HIREDIS = False

#: Seconds without a reply, while replies are owed, after which the connection is dropped.
STALL = 2.0

#: The connection classes whose connections the lane can take over: a socket stream made
#: by redis-py's own ``connect`` (a subclass may do anything).
_SOCKET_CLASSES: tuple[type, ...] = ()
try:
    from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection

    _SOCKET_CLASSES = (Connection, SSLConnection, UnixDomainSocketConnection)
except ImportError:  # pragma: no cover
    pass

#: What the lane needs of a connection's transport (asyncio's and uvloop's have it).
_TRANSPORT = ("set_protocol", "write", "is_closing", "abort", "close")

#: Lanes to forget in a forked child: their connection is the parent's.
_LANES: weakref.WeakSet[Lane] = weakref.WeakSet()


def _forget_in_child() -> None:
    for lane in list(_LANES):
        lane._forget()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)


#: Connections on their way back to their pool, held until they are there.
_RELEASING: set[asyncio.Task[None]] = set()


class LaneUnavailable(Exception):
    """The client's connections are not sockets the lane can speak on: use the client."""


def suits(client: Any) -> bool:
    """Whether a client is one the lane can take a connection from (see the module)."""
    from redis.asyncio import Redis

    if not HAS_HIREDIS or not isinstance(client, Redis) or not _SOCKET_CLASSES:
        return False
    if getattr(client, "single_connection_client", False):
        return False
    pool = getattr(client, "connection_pool", None)
    if pool is None or getattr(pool, "connection_class", None) not in _SOCKET_CLASSES:
        return False
    return not getattr(pool, "connection_kwargs", {}).get("decode_responses", False)


def pack(args: Sequence[Any]) -> bytes:
    """One command in RESP, as redis-py encodes its arguments (bytes, str as UTF-8, int,
    float)."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            value = arg
        elif isinstance(arg, str):
            value = arg.encode()
        elif isinstance(arg, bool):
            raise TypeError("a bool is not a Redis argument")
        elif isinstance(arg, int):
            value = b"%d" % arg
        elif isinstance(arg, float):
            value = repr(arg).encode()
        elif isinstance(arg, (bytearray, memoryview)):
            value = bytes(arg)
        else:
            raise TypeError(f"cannot send {type(arg).__name__} to Redis")
        out.append(b"$%d\r\n" % len(value))
        out.append(value)
        out.append(b"\r\n")
    return b"".join(out)


_pack = getattr(hiredis, "pack_command", pack) if HAS_HIREDIS else pack


class _Protocol(asyncio.Protocol):
    """The taken-over connection's protocol: what arrives goes to the lane."""

    __slots__ = ("lane",)

    def __init__(self, lane: Lane) -> None:
        self.lane = lane

    def data_received(self, data: bytes) -> None:
        self.lane._received(self, data)

    def eof_received(self) -> bool:
        self.lane._lost(self, None)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.lane._lost(self, exc)


class _Closer:
    """Stands for the stream writer of a connection the lane took over, in redis-py's
    connection object: closing it closes the lane's connection."""

    __slots__ = ("lane", "protocol", "writer")

    def __init__(self, lane: Lane, protocol: _Protocol, writer: Any) -> None:
        self.lane = lane
        self.protocol = protocol
        self.writer = writer

    def close(self) -> None:
        if self.protocol is self.lane._protocol:
            # redis-py goes on to forget the connection itself.
            self.lane._drop(ConnectionError("the client closed its connections"), release=False)

    def is_closing(self) -> bool:
        return self.protocol is not self.lane._protocol

    async def wait_closed(self) -> None:
        return None


class Lane:
    """One pipelined connection taken from a client's pool (see the module)."""

    __slots__ = (
        "__weakref__",
        "_conn",
        "_fd",
        "_flush_at",
        "_in_place",
        "_loop",
        "_opening",
        "_out",
        "_pending",
        "_pid",
        "_pool",
        "_protocol",
        "_reader",
        "_transport",
        "_wants_name",
    )

    def __init__(self, client: Any, wait_in_place: float = 0.0) -> None:
        self._pool = client.connection_pool
        #: When an urgent command may wait for its reply in place (None: never).
        self._in_place = InPlace(wait_in_place) if wait_in_place > 0 else None
        #: The connection's descriptor, where it can be read beside its transport.
        self._fd: int | None = None
        self._conn: Any = None
        self._transport: asyncio.Transport | None = None
        self._protocol: _Protocol | None = None
        self._reader: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._opening: asyncio.Future[None] | None = None
        #: Callers owed a reply, oldest first, and when the oldest's command went out.
        self._pending: deque[asyncio.Future[Any]] = deque()
        self._out: list[bytes] = []
        #: Loop time of the last reply (or of the first command owed one): the stall check.
        self._flush_at = 0.0
        self._pid = os.getpid()
        parameters = inspect.signature(self._pool.get_connection).parameters
        first = parameters.get("command_name")
        self._wants_name = first is not None and first.default is inspect.Parameter.empty
        _LANES.add(self)

    # -- calls ---------------------------------------------------------------------------

    async def execute(self, *args: Any, urgent: bool = False) -> Any:
        """Send one command and return its reply (raise its error, as redis-py would).

        Commands go out together, in one write once the event loop has run what was ready
        (``call_soon``): a burst of hits costs one system call. An ``urgent`` command (a
        likely miss's lookup, which its request and the app wait for) is written at once,
        with whatever was queued before it, instead of waiting for that turn of the loop, and
        may wait for its reply in place while the loop has time to spare (``in_place.py``)."""
        # Packed first: an argument Redis cannot take raises here, before a reply is owed.
        data = _pack(args)
        loop = asyncio.get_running_loop()
        if self._transport is None or self._loop is not loop:
            await self._open(loop)
        elif self._pending and loop.time() - self._flush_at > STALL:
            self._drop(ConnectionError(f"Redis sent no reply for {STALL:g} s"))
            await self._open(loop)
        pending = self._pending
        if not pending:
            self._flush_at = loop.time()
        future: asyncio.Future[Any] = loop.create_future()
        pending.append(future)
        out = self._out
        out.append(data)
        if urgent:
            self._flush()  # a flush already scheduled finds nothing left to write
            in_place = self._in_place
            if in_place is not None and self._fd is not None and in_place.allow():
                self._wait_in_place(in_place, future)
        elif len(out) == 1:
            loop.call_soon(self._flush)
        reply = await future
        if isinstance(reply, hiredis.ReplyError):
            error: Exception = BaseParser.parse_error(str(reply))  # type: ignore[no-untyped-call]
            if isinstance(error, ReadOnlyError):
                # A replica now (a failover): the next command takes a new connection.
                self._drop(ConnectionError("Redis became a replica"))
            raise error
        return reply

    async def pipeline(self, *commands: Sequence[Any]) -> list[Any]:
        """Send several commands in one write; return their replies in order, an error as
        the exception (not raised), as redis-py's ``execute(raise_on_error=False)`` does."""
        replies = await asyncio.gather(
            *(self.execute(*command) for command in commands), return_exceptions=True
        )
        for reply in replies:
            if isinstance(reply, BaseException) and not isinstance(reply, Exception):
                raise reply  # a cancellation, not Redis's answer
        return list(replies)

    async def open(self) -> None:
        """Take the lane's connection now (at startup) rather than on the first command."""
        await self.execute(b"PING")

    async def script(
        self,
        script: Any,
        script_keys: Sequence[Any],
        args: Sequence[Any],
        *,
        urgent: bool = False,
    ) -> Any:
        """Run a registered script (redis-py's ``Script``): EVALSHA, and EVAL when Redis does
        not have it (which also loads it)."""
        count = len(script_keys)
        try:
            return await self.execute(
                b"EVALSHA", script.sha, count, *script_keys, *args, urgent=urgent
            )
        except NoScriptError:
            return await self.execute(
                b"EVAL", script.script, count, *script_keys, *args, urgent=urgent
            )

    # -- the connection ------------------------------------------------------------------

    async def _open(self, loop: asyncio.AbstractEventLoop) -> None:
        """Take a connection from the pool for the lane (one caller does; the others wait)."""
        if self._transport is not None:
            if self._loop is loop and self._pid == os.getpid():
                return
            self._forget()  # another event loop's connection (or the parent's): not ours
        opening = self._opening
        if opening is not None and not opening.done() and self._loop is loop:
            await asyncio.shield(opening)
            if self._transport is None:
                raise ConnectionError("the lane's connection could not be opened")
            return
        self._loop = loop
        self._opening = opening = loop.create_future()
        try:
            await self._take(loop)
        finally:
            opening.set_result(None)
            self._opening = None

    async def _take(self, loop: asyncio.AbstractEventLoop) -> None:
        pool = self._pool
        conn = await (pool.get_connection("_") if self._wants_name else pool.get_connection())
        writer = getattr(conn, "_writer", None)
        transport: Any = getattr(writer, "transport", None)
        if not all(hasattr(transport, name) for name in _TRANSPORT) or transport.is_closing():
            await pool.release(conn)
            raise LaneUnavailable(f"{type(conn).__name__} has no socket the lane can use")
        reader = getattr(conn, "_reader", None)
        if reader is not None and len(getattr(reader, "_buffer", b"")):
            # Bytes no command asked for (a push message): not a connection to take over.
            await pool.release(conn)
            raise LaneUnavailable("the connection has unread data")
        protocol = _Protocol(self)
        transport.set_protocol(protocol)
        # What redis-py keeps of the connection: when the pool disconnects it (the client's
        # aclose), the lane's connection closes with it.
        # The stream writer stays referenced: collected, it would close the transport.
        conn._writer = _Closer(self, protocol, writer)
        self._conn = conn
        self._transport = transport
        self._protocol = protocol
        self._reader = hiredis.Reader(notEnoughData=_NOT_ENOUGH)
        self._pid = os.getpid()
        self._fd = socket_fd(transport, conn) if self._in_place is not None else None

    def count_into(self, stats: Any) -> None:
        """Count the waits in place in these ``CacheStats`` (``in_place_waits``...)."""
        if self._in_place is not None:
            self._in_place.stats = stats

    def _wait_in_place(self, in_place: InPlace, future: asyncio.Future[Any]) -> None:
        """Read the connection until the future has its reply, for at most the budget (the
        event loop blocked meanwhile): every reply read answers its caller in order."""
        fd, protocol = self._fd, self._protocol
        assert fd is not None and protocol is not None
        started = time.perf_counter()

        def received(data: bytes) -> bool:
            self._received(protocol, data)
            return self._protocol is protocol

        read_until(fd, started + in_place.budget, future.done, received)
        in_place.record(time.perf_counter() - started, future.done())

    def _flush(self) -> None:
        out, self._out = self._out, []
        transport = self._transport
        if transport is None or not out:
            return
        try:
            transport.write(out[0] if len(out) == 1 else b"".join(out))
        except Exception as exc:  # any failure to write drops the connection
            self._drop(ConnectionError(f"writing to Redis failed: {exc}"))

    def _received(self, protocol: _Protocol, data: bytes) -> None:
        if protocol is not self._protocol:
            return
        reader = self._reader
        pending = self._pending
        try:
            reader.feed(data)
            while (reply := reader.gets()) is not _NOT_ENOUGH:
                if isinstance(reply, hiredis.PushNotification):
                    continue  # RESP3 push (e.g. a server notice): no command's reply
                future = pending.popleft()
                if not future.done():
                    future.set_result(reply)
        except Exception as exc:  # a garbled stream, or a reply nobody asked for
            self._drop(ConnectionError(f"unreadable reply from Redis: {exc}"))
            return
        if pending:
            self._flush_at = self._loop.time() if self._loop is not None else 0.0

    def _lost(self, protocol: _Protocol, exc: Exception | None) -> None:
        if protocol is self._protocol:
            reason = f": {exc}" if exc is not None else ""
            self._drop(ConnectionError(f"Redis closed the connection{reason}"))

    def _drop(self, error: Exception, *, release: bool = True) -> None:
        """Close the connection, fail every caller still owed a reply, and give the
        connection object back to the pool (which reconnects it when next used)."""
        transport, conn = self._transport, self._conn
        self._transport = self._protocol = self._conn = self._reader = self._fd = None
        self._out = []
        pending, self._pending = self._pending, deque()
        for future in pending:
            if not future.done():
                future.set_exception(error)
        if transport is not None:
            transport.abort()
        if conn is not None and release:
            conn._reader = conn._writer = None  # closed above: redis-py sees it disconnected
            loop = self._loop
            if loop is not None and not loop.is_closed():
                task = loop.create_task(_release(self._pool, conn))
                _RELEASING.add(task)
                task.add_done_callback(_RELEASING.discard)

    def _forget(self) -> None:
        """Let go of a connection that is not this process's or loop's to use (after a
        fork, or from another event loop) without touching it."""
        self._transport = self._protocol = self._conn = self._reader = self._fd = None
        self._out = []
        self._pending = deque()
        self._opening = None

    async def aclose(self) -> None:
        """Close the lane's connection and give it back to the pool."""
        transport, conn = self._transport, self._conn
        if transport is None or self._loop is not asyncio.get_running_loop():
            self._forget()
            return
        self._transport = self._protocol = self._conn = self._reader = self._fd = None
        for future in self._pending:
            if not future.done():
                future.set_exception(ConnectionError("the cache was closed"))
        self._pending = deque()
        transport.close()
        if conn is not None:
            conn._reader = conn._writer = None
            await _release(self._pool, conn)


async def _release(pool: Any, conn: Any) -> None:
    # A pool already reset or closed has nothing to take back.
    with contextlib.suppress(Exception):
        await pool.release(conn)


class _NotEnough:
    __slots__ = ()


_NOT_ENOUGH = _NotEnough()
