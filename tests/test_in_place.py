"""Waiting in place for a likely miss's lookup (``_redis/in_place.py``): when the lane may
block the event loop for an urgent command's reply, and what it reads meanwhile.

The policy is tested with its clocks in hand; the reading against a real Redis (the lane
speaks on a socket: fakeredis and a cluster keep to the client, and never wait in place).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import fakeredis
import pytest
import redis
import redis.asyncio

from redis_cache_middleware import ConfigError, RedisCache
from redis_cache_middleware._redis.in_place import (
    BACKOFF,
    BUSY,
    CALM,
    WINDOW,
    InPlace,
    socket_fd,
)
from redis_cache_middleware._redis.lane import Lane
from redis_cache_middleware._redis.lookup import LOOKUP_SCRIPT

from .conftest import RedisServer
from .helpers import Origin, make_client
from .tcp_proxy import TcpProxy

pytestmark = pytest.mark.anyio

#: Long enough for a loopback Redis on a loaded test machine.
BUDGET = 0.005


def willing(
    lane: Lane, budget: float = BUDGET, clock: Callable[[], float] = time.perf_counter
) -> Lane:
    """Give the lane a governor that never finds the loop busy (the test process's own CPU
    would otherwise decide): what is tested is the reading, and the backoff."""
    stats = lane._in_place.stats if lane._in_place is not None else None
    lane._in_place = InPlace(budget, clock=clock, cpu=lambda: 0.0, stats=stats)
    return lane


class Clocks:
    """The wall clock and the loop thread's CPU time, moved by hand."""

    def __init__(self) -> None:
        self.now = 100.0
        self.cpu = 7.0

    def window(self, busy: float) -> None:
        """Let one window pass, the loop's thread running ``busy`` of it."""
        span = WINDOW * 1.001  # a little over: the window is over
        self.now += span
        self.cpu += span * busy


def gauge(clocks: Clocks) -> InPlace:
    return InPlace(0.0003, clock=lambda: clocks.now, cpu=lambda: clocks.cpu)


# -- the policy -----------------------------------------------------------------------------


def test_waits_are_allowed_while_the_loop_has_time_to_spare() -> None:
    clocks = Clocks()
    place = gauge(clocks)
    assert place.allow()
    for _ in range(5):
        clocks.window(busy=0.5)
        assert place.allow()


def test_a_busy_loop_stops_waits_until_calm_windows_in_a_row() -> None:
    clocks = Clocks()
    place = gauge(clocks)
    clocks.window(busy=BUSY + 0.01)
    assert not place.allow()
    for _ in range(CALM - 1):
        clocks.window(busy=0.2)
        assert not place.allow()  # one lull does not start them again
    clocks.window(busy=0.2)
    assert place.allow()


def test_time_spent_waiting_counts_as_the_loops() -> None:
    """A window the thread ran half of and waited in place for the rest had no time to
    spare: waiting must not look like idle time."""
    clocks = Clocks()
    place = gauge(clocks)
    for _ in range(10):
        place.record(WINDOW * 0.45 / 10, answered=True)
    clocks.window(busy=0.5)
    assert not place.allow()


def test_waits_that_miss_their_reply_stop_waits_for_a_growing_while() -> None:
    clocks = Clocks()
    place = gauge(clocks)
    for backoff in (BACKOFF, 2 * BACKOFF, 4 * BACKOFF):
        for _ in range(4):
            place.record(0.0003, answered=False)
        clocks.window(busy=0.1)
        assert not place.allow()
        clocks.now += backoff - WINDOW - 0.01
        clocks.window(busy=0.0)  # the window that ends just before the backoff does
        assert not place.allow()
        clocks.now += 0.02
        clocks.window(busy=0.0)
        assert place.allow()
    # Waits that get their replies again bring the backoff back to its start.
    for _ in range(4):
        place.record(0.0001, answered=True)
    clocks.window(busy=0.1)
    assert place.allow()
    for _ in range(4):
        place.record(0.0003, answered=False)
    clocks.window(busy=0.1)
    assert not place.allow()
    clocks.now += BACKOFF + 0.01
    clocks.window(busy=0.0)
    assert place.allow()


def test_a_few_missed_waits_are_not_enough_to_stop() -> None:
    clocks = Clocks()
    place = gauge(clocks)
    for _ in range(3):
        place.record(0.0003, answered=False)  # fewer than a window needs to judge
    clocks.window(busy=0.1)
    assert place.allow()
    for _ in range(3):
        place.record(0.0001, answered=True)
    place.record(0.0003, answered=False)  # one in four: within the share allowed
    clocks.window(busy=0.1)
    assert place.allow()
    assert (place.waits, place.answered) == (7, 3)


class _Transport:
    def __init__(self, **extra: Any) -> None:
        self.extra = extra

    def get_extra_info(self, name: str) -> Any:
        return self.extra.get(name)


class _Socket:
    def __init__(self, fd: int) -> None:
        self.fd = fd

    def fileno(self) -> int:
        return self.fd


def test_only_a_plain_socket_select_takes_is_read_beside_its_transport() -> None:
    from redis.asyncio.connection import Connection, SSLConnection

    plain = Connection()
    assert socket_fd(_Transport(socket=_Socket(7)), plain) == 7
    assert socket_fd(_Transport(socket=_Socket(7), sslcontext=object()), plain) is None
    assert socket_fd(_Transport(socket=_Socket(7), ssl_object=object()), plain) is None
    assert socket_fd(_Transport(socket=_Socket(7)), SSLConnection()) is None
    assert socket_fd(_Transport(socket=_Socket(5000)), plain) is None  # past FD_SETSIZE
    assert socket_fd(_Transport(), plain) is None


@pytest.mark.parametrize("bad", [-0.001, 0.01, True, "0.001", None, float("nan")])
def test_wait_in_place_must_be_a_short_time(bad: Any) -> None:
    with pytest.raises(ConfigError, match="wait_in_place"):
        RedisCache(redis.asyncio.Redis(), wait_in_place=bad)
    with pytest.raises(ConfigError, match="wait_in_place"):
        RedisCache.from_url("redis://127.0.0.1:1", wait_in_place=bad)


def test_zero_turns_it_off_and_fakeredis_has_no_lane_to_wait_on() -> None:
    assert RedisCache(redis.asyncio.Redis())._state.lane._in_place is not None  # type: ignore[union-attr]
    off = RedisCache(redis.asyncio.Redis(), wait_in_place=0)
    assert off._state.lane._in_place is None  # type: ignore[union-attr]
    assert RedisCache(fakeredis.FakeAsyncRedis())._state.lane is None


# -- against a real Redis ---------------------------------------------------------------------


@pytest.fixture
async def lane(client: Any) -> AsyncIterator[Lane]:
    lane = willing(Lane(client, BUDGET))
    yield lane
    await lane.aclose()


async def test_an_urgent_reply_is_read_before_the_loop_turns(lane: Lane, namespace: str) -> None:
    """The urgent command returns without suspending its task: its reply, and those of the
    commands written before it, were read in place and went to their callers in order."""
    await lane.open()
    assert lane._fd is not None
    await lane.execute(b"SET", f"{namespace}:k", b"v")
    queued = asyncio.ensure_future(lane.execute(b"INCR", f"{namespace}:n"))
    await asyncio.sleep(0)  # queued, not yet written
    urgent = lane.execute(b"GET", f"{namespace}:k", urgent=True)
    with pytest.raises(StopIteration) as done:
        urgent.send(None)  # no suspension: the reply was there when the call returned
    assert done.value.value == b"v"
    assert not lane._pending  # every reply owed was read
    assert await queued == 1
    place = lane._in_place
    assert place is not None and place.answered == place.waits == 1


LOOPS: list[Any] = [pytest.param(asyncio.new_event_loop, id="asyncio")]
try:
    import uvloop

    LOOPS.append(pytest.param(uvloop.new_event_loop, id="uvloop"))
except ImportError:  # pragma: no cover - uvloop is a dev dependency off Windows
    pass


@pytest.mark.parametrize("new_loop", LOOPS)
def test_on_each_loop_the_reply_is_read_in_place_and_a_close_is_seen(
    new_loop: Any, redis_server: RedisServer
) -> None:
    """uvicorn runs uvloop by default: its transports give the socket, and reading it beside
    them loses nothing, the end of the stream included."""

    async def main() -> None:
        client = redis.asyncio.Redis.from_url(redis_server.url)
        lane = willing(Lane(client, BUDGET))
        try:
            first = int(await lane.execute(b"CLIENT", b"ID"))
            assert lane._fd is not None
            urgent = lane.execute(b"ECHO", b"in place", urgent=True)
            with pytest.raises(StopIteration) as done:
                urgent.send(None)
            assert done.value.value == b"in place"
            killed = b"CLIENT", b"KILL", b"ID", first, b"SKIPME", b"no"
            assert await lane.execute(*killed, urgent=True) == 1
            for _ in range(200):
                if lane._transport is None:
                    break
                await asyncio.sleep(0.01)
            assert lane._transport is None
            assert int(await lane.execute(b"CLIENT", b"ID", urgent=True)) != first
            place = lane._in_place
            assert place is not None and place.answered == 3
        finally:
            await lane.aclose()
            await client.aclose()

    loop = new_loop()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()


async def test_without_it_an_urgent_reply_waits_for_the_loop(client: Any, namespace: str) -> None:
    lane = Lane(client, 0.0)
    try:
        await lane.open()
        urgent = lane.execute(b"PING", urgent=True)
        step = urgent.send(None)  # suspended on its reply
        assert await asyncio.shield(step) == b"PONG"
        urgent.close()
    finally:
        await lane.aclose()


async def test_a_slow_redis_stops_the_waits_and_every_reply_still_arrives(
    redis_server: RedisServer, namespace: str
) -> None:
    """Behind a proxy that holds each chunk 5 ms (and, in this loop, cannot pass it on while
    the loop waits), every wait misses: after a window of them waits stop (for a second, far
    longer than the rest of the test), and each caller still gets its own reply."""
    port = redis_server.port or int(redis_server.url.rsplit(":", 1)[1].split("/")[0])
    async with TcpProxy(port) as proxy:
        client = redis.asyncio.Redis(host="127.0.0.1", port=proxy.port)
        # A clock that moves 21 ms a look: each window holds four waits.
        ticks = itertools.count(1)
        lane = willing(Lane(client, 0.0005), 0.0005, clock=lambda: next(ticks) * 0.021)
        try:
            await lane.open()
            proxy.mode = "delay"
            proxy.delay = 0.005
            replies = []
            for i in range(12):  # a window of four waits, then eight commands more
                replies.append(await lane.execute(b"ECHO", b"%d" % i, urgent=True))
            assert replies == [b"%d" % i for i in range(12)]
            place = lane._in_place
            assert place is not None
            assert place.answered == 0
            assert place.waits == 4  # stopped after the first window of misses
            assert not place.allow()
        finally:
            await lane.aclose()
            await client.aclose()


async def test_a_connection_closed_after_its_reply_is_let_go(lane: Lane, client: Any) -> None:
    """Redis answers, then closes: the wait reads the reply, and the end of the stream is
    left to the transport, which drops the connection; the next command takes a new one."""
    first = int(await lane.execute(b"CLIENT", b"ID"))
    assert await lane.execute(b"CLIENT", b"KILL", b"ID", first, b"SKIPME", b"no", urgent=True) == 1
    for _ in range(200):
        if lane._transport is None:
            break
        await asyncio.sleep(0.01)
    assert lane._transport is None and lane._fd is None
    assert int(await lane.execute(b"CLIENT", b"ID")) != first


async def test_the_middleware_waits_in_place_for_a_likely_miss(
    redis_server: RedisServer, namespace: str
) -> None:
    client = redis.asyncio.Redis.from_url(redis_server.url)
    try:
        # No generation check among the lookups (it goes out with the loop's next batch).
        cache = RedisCache(
            client, namespace=namespace, wait_in_place=BUDGET, generation_check_interval=3600
        )
        assert cache._state.lane is not None
        place = willing(cache._state.lane)._in_place
        # As the lifespan would (the generation read, the lane open), and with the lookup's
        # script in Redis, so that each miss's lookup is one urgent EVALSHA.
        assert await cache.warm_up()
        await client.script_load(LOOKUP_SCRIPT)
        origin = Origin()
        async with make_client(cache, origin, default_ttl=60) as http:
            first = [await http.get(f"/p/{i}") for i in range(5)]
            again = [await http.get(f"/p/{i}") for i in range(5)]
        assert all("fwd=uri-miss" in r.headers["cache-status"] for r in first)
        assert all("hit" in r.headers["cache-status"] for r in again)
        assert sum(origin.calls.values()) == 5
        # One wait for each likely miss's lookup; the hits' reads are not urgent. Counted in
        # the cache's stats (and so in its Prometheus counters).
        assert place is not None and place.waits == 5 and place.answered >= 1
        counted = cache.stats.snapshot()
        assert counted["in_place_waits"] == 5
        assert counted["in_place_answered"] == place.answered
    finally:
        await client.aclose()
