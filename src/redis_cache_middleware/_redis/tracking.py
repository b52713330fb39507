"""Tracking: the connection on which Redis tells the near cache which keys changed.

Redis's server-assisted client-side caching, in broadcasting mode: on a RESP3 connection,
``CLIENT TRACKING ON BCAST PREFIX {namespace}:`` makes Redis push an ``invalidate`` message
naming every key under the namespace that any client changes (a store, a purge, the
generation a ``clear`` bumps, a fill lock), expires or evicts; a flush pushes one with no
keys. ``Tracker`` holds that connection (on a cluster, one per primary), in a background
task of the process, and hands what Redis pushes to the ``NearCache``.

The connection is made as the client makes its own (its pool's connection class and
options: TCP, TLS or a Unix socket, its credentials; for a Sentinel-managed pool, to the
master the sentinels name now), with RESP3, then read by hiredis as the lane does. Every
``HEARTBEAT`` seconds it asks ``ROLE`` of each server: the answer proves every invalidation
sent before it has arrived, so it renews the near cache's lease (``near.LEASE``); a server
that is no longer a primary (a failover), a cluster whose primaries changed, a reply that
does not come within ``CALL_TIMEOUT`` or a closed connection empties the near cache at once
and keeps it off until tracking is back, retried with a growing back-off. A client whose
connections have no socket (fakeredis) or a server that refuses ``CLIENT TRACKING`` turns
the near cache off, with one warning. In a forked child the parent's connection is left
alone, and the child makes its own when first used.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import weakref
from collections import deque
from collections.abc import Sequence
from typing import Any

from redis.exceptions import ConnectionError, ResponseError

from ..stats import RateLimitedWarning
from .lane import _NOT_ENOUGH, _SOCKET_CLASSES, HAS_HIREDIS, pack
from .near import LEASE, NearCache

if HAS_HIREDIS:
    import hiredis

logger = logging.getLogger("redis_cache_middleware")

#: Seconds between two confirmations that the tracking connection is alive and current.
HEARTBEAT = 0.5
#: Seconds the tracking connection may take to connect, or to answer a command.
CALL_TIMEOUT = 2.0
#: The first and the longest wait before connecting again after tracking was lost.
BACKOFF_MIN = 0.05
BACKOFF_MAX = 2.0

#: Trackers to reset in a forked child: their connections are the parent's.
_TRACKERS: weakref.WeakSet[Tracker] = weakref.WeakSet()


def _forget_in_child() -> None:
    for tracker in list(_TRACKERS):
        tracker._forget()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)


class Unsupported(Exception):
    """This client or server cannot track keys: the near cache stays off."""


class _Link(asyncio.Protocol):
    """One RESP3 connection with tracking on, to one Redis server."""

    def __init__(self, tracker: Tracker, name: str) -> None:
        self.tracker = tracker
        self.name = name
        self.transport: Any = None
        #: redis-py's connection object, kept so that its stream writer (which closes the
        #: transport when collected) lives as long as the link.
        self.conn: Any = None
        self.reader = hiredis.Reader(notEnoughData=_NOT_ENOUGH)
        self.waiting: deque[asyncio.Future[Any]] = deque()
        self.closed = False

    def data_received(self, data: bytes) -> None:
        try:
            self.reader.feed(data)
            while (reply := self.reader.gets()) is not _NOT_ENOUGH:
                if isinstance(reply, hiredis.PushNotification):
                    self.tracker._pushed(reply)
                    continue
                if not self.waiting:
                    raise ValueError("a reply no command asked for")
                future = self.waiting.popleft()
                if not future.done():
                    future.set_result(reply)
        except Exception:  # a garbled stream: the link is lost
            self.abort()

    def eof_received(self) -> bool:
        return False  # connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail()
        self.tracker._link_lost(self)

    async def call(self, *args: Any) -> Any:
        """Send one command and return its reply (raise its error)."""
        if self.closed or self.transport is None:
            raise ConnectionError("the tracking connection is closed")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.waiting.append(future)
        self.transport.write(pack(args))
        try:
            reply = await asyncio.wait_for(future, CALL_TIMEOUT)
        except asyncio.TimeoutError:
            self.abort()
            raise ConnectionError(
                f"no reply on the tracking connection in {CALL_TIMEOUT} s"
            ) from None
        if isinstance(reply, hiredis.ReplyError):
            raise ResponseError(str(reply))
        return reply

    def abort(self) -> None:
        self.closed = True
        self._fail()
        if self.transport is not None:
            self.transport.abort()
        self.tracker._link_lost(self)

    def _fail(self) -> None:
        waiting, self.waiting = self.waiting, deque()
        for future in waiting:
            if not future.done():
                future.set_exception(ConnectionError("the tracking connection was lost"))


class Tracker:
    """Keeps ``near`` coherent with Redis (see the module)."""

    def __init__(self, client: Any, namespace: str, near: NearCache, cluster: bool) -> None:
        self.client = client
        self.near = near
        self.cluster = cluster
        self.prefix = f"{namespace}:"
        #: Set for good when this client or server cannot track (logged once).
        self.off = False
        #: Set by ``aclose``: the near cache is emptied on purpose, not counted as lost.
        self._closing = False
        self._links: list[_Link] = []
        self._broken: asyncio.Event | None = None
        #: Set once tracking was first confirmed, or found impossible (``start`` waits).
        self._settled: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pid = os.getpid()
        self._warn = RateLimitedWarning()
        _TRACKERS.add(self)

    def wake(self) -> None:
        """Start tracking in this process and event loop, unless it runs already (cheap)."""
        if self.off:
            return
        task = self._task
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if task is not None and not task.done() and self._loop is loop:
            return
        if self._loop is not loop:
            self._forget()  # another event loop's connection: not this one's to use
        self._loop = loop
        self._pid = os.getpid()
        self._closing = False
        self._settled = asyncio.Event()
        self._task = loop.create_task(self._run())

    async def start(self, timeout: float) -> None:
        """Start tracking and wait up to ``timeout`` seconds for it to be confirmed."""
        self.wake()
        settled = self._settled
        if settled is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(settled.wait(), timeout)

    async def aclose(self) -> None:
        """Stop tracking and close its connections."""
        self._closing = True
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            if self._loop is asyncio.get_running_loop():
                with contextlib.suppress(BaseException):
                    await task
        self._close()
        self.near.lost(counted=False)

    # -- the background task -------------------------------------------------------------

    async def _run(self) -> None:
        delay = BACKOFF_MIN
        refresh = False
        while True:
            try:
                await self._open(refresh)
                delay = BACKOFF_MIN
                await self._watch()
            except Unsupported as exc:
                if self._settled is not None:
                    self._settled.set()
                self.off = True
                self._close()
                self.near.lost()
                logger.warning("redis-cache: the near cache is off: %s", exc)
                return
            except Exception as exc:  # never raised into requests: tracking is retried
                self._warn(
                    "tracking",
                    "redis-cache: the near cache lost its tracking connection; it is empty "
                    "and unused until tracking is back",
                    exc,
                )
            finally:
                # Also when cancelled (aclose): no near answer without tracking.
                self._close()
                self.near.lost(counted=not self._closing)
            refresh = True
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)

    async def _open(self, refresh: bool) -> None:
        """Connect to every server that holds keys, turn tracking on, confirm the near cache."""
        self._broken = asyncio.Event()
        targets = await self._targets(refresh)
        for name, connection_class, kwargs in targets:
            self._links.append(await self._connect(name, connection_class, kwargs))
        sent = time.monotonic()
        command = (b"CLIENT", b"TRACKING", b"ON", b"BCAST", b"PREFIX", self.prefix)
        try:
            await asyncio.gather(*(link.call(*command) for link in self._links))
        except ResponseError as exc:
            text = str(exc)
            if text.startswith(("NOPERM", "ERR unknown", "ERR Unknown", "ERR syntax")):
                raise Unsupported(f"Redis refused CLIENT TRACKING: {text}") from exc
            raise
        if self.cluster:
            names = {link.name for link in self._links}
            self.near.covers = lambda key: self._node_of(key) in names
        # Keys may have changed while tracking was off (a clear among them).
        self.near.on_generation()
        self.near.confirm(sent + LEASE)
        if self._settled is not None:
            self._settled.set()

    async def _watch(self) -> None:
        """Renew the near cache's lease every HEARTBEAT seconds; return never, raise when
        tracking is lost."""
        broken = self._broken
        assert broken is not None
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(broken.wait(), HEARTBEAT)
            if broken.is_set():
                raise ConnectionError("the tracking connection was lost")
            sent = time.monotonic()
            replies = await asyncio.gather(*(link.call(b"ROLE") for link in self._links))
            for reply in replies:
                role = reply[0] if isinstance(reply, list) and reply else None
                if role != b"master":
                    raise ConnectionError(f"a tracked Redis is no longer a primary ({role!r})")
            if self.cluster and self._primaries() != {link.name for link in self._links}:
                raise ConnectionError("the cluster's primaries changed")
            self.near.confirm(sent + LEASE)

    async def _targets(self, refresh: bool) -> list[tuple[str, Any, dict[str, Any]]]:
        """Return the servers to track: the client's pool's, or a cluster's primaries."""
        client = self.client
        if not self.cluster:
            pool = client.connection_pool
            return [("", pool.connection_class, dict(pool.connection_kwargs))]
        if refresh or not client.get_primaries():
            if client.get_primaries():
                await asyncio.wait_for(client.nodes_manager.initialize(), CALL_TIMEOUT)
            else:
                await asyncio.wait_for(client.initialize(), CALL_TIMEOUT)
        return [
            (node.name, node.connection_class, dict(node.connection_kwargs))
            for node in client.get_primaries()
        ]

    def _primaries(self) -> set[str]:
        return {node.name for node in self.client.get_primaries()}

    def _node_of(self, key: str) -> str | None:
        """Return the name of the primary the client sends a key's commands to."""
        client = self.client
        try:
            return str(client.nodes_manager.get_node_from_slot(client.keyslot(key)).name)
        except Exception:
            return None

    async def _connect(self, name: str, connection_class: Any, kwargs: dict[str, Any]) -> _Link:
        """Open a RESP3 connection as the client would, and read it as a ``_Link``."""
        module = getattr(connection_class, "__module__", "")
        if not HAS_HIREDIS:  # pragma: no cover - hiredis comes with redis[hiredis]
            raise Unsupported("it needs hiredis (pip install 'redis[hiredis]')")
        if "fakeredis" in module or not (
            isinstance(connection_class, type) and issubclass(connection_class, _SOCKET_CLASSES)
        ):
            raise Unsupported(
                f"the client's connections ({connection_class.__name__}) have no Redis server "
                "to track keys (fakeredis has no CLIENT TRACKING)"
            )
        kwargs["protocol"] = 3
        conn: Any = connection_class(**kwargs)
        try:
            await asyncio.wait_for(conn.connect(), CALL_TIMEOUT)
        except BaseException as exc:
            with contextlib.suppress(Exception):
                await conn.disconnect()
            if isinstance(exc, ResponseError) and "unknown command" in str(exc).lower():
                raise Unsupported(f"Redis before 6 has no RESP3 (HELLO 3): {exc}") from exc
            raise
        transport = getattr(getattr(conn, "_writer", None), "transport", None)
        if transport is None or not hasattr(transport, "set_protocol"):
            with contextlib.suppress(Exception):
                await conn.disconnect()
            raise Unsupported(f"{type(conn).__name__} has no socket to read pushes from")
        link = _Link(self, name)
        link.conn = conn
        link.transport = transport
        transport.set_protocol(link)
        return link

    # -- what the links report -----------------------------------------------------------

    def _pushed(self, message: Sequence[Any]) -> None:
        if len(message) < 2 or message[0] != b"invalidate":
            return
        names = message[1]
        if names is None:  # FLUSHALL / FLUSHDB: every key
            self.near.empty()
            self.near.on_generation()
            return
        self.near.invalidate(
            name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)
            for name in names
        )

    def _link_lost(self, link: _Link) -> None:
        if link in self._links:
            # At once: not one answer more from the near cache.
            self.near.lost(counted=not self._closing)
            if self._broken is not None:
                self._broken.set()

    def _close(self) -> None:
        links, self._links = self._links, []
        self.near.covers = None
        for link in links:
            link.closed = True
            if link.transport is not None:
                link.transport.abort()

    def _forget(self) -> None:
        """Let go of connections that are not this process's or loop's to use (after a
        fork, or from another event loop) without touching them."""
        for link in self._links:
            link.closed = True
        self._links = []
        self._task = None
        self._broken = None
        self.near.ready = False
        self.near.lease_until = float("-inf")
        self.near.empty()
