"""The lane (``_redis/lane.py``): a request's commands pipelined on one connection taken from
the client's pool. Against a real Redis (the lane speaks on a socket); fakeredis and a
cluster keep to the client, which the rest of the suite covers on all three backends.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import fakeredis
import pytest
import redis
import redis.asyncio

from redis_cache_middleware import ConfigError, RedisCache
from redis_cache_middleware._redis import lane as lane_module
from redis_cache_middleware._redis.lane import Lane, pack, suits

from .conftest import RedisServer
from .helpers import Origin, make_client

pytestmark = pytest.mark.anyio

#: A script that keeps Redis busy (every client waits) for about ARG[1] milliseconds.
BUSY = """
local t = redis.call('TIME')
local start = t[1] * 1000 + t[2] / 1000
while true do
  t = redis.call('TIME')
  if t[1] * 1000 + t[2] / 1000 - start > tonumber(ARGV[1]) then return 1 end
end
"""


@pytest.fixture
async def lane(client: Any) -> AsyncIterator[Lane]:
    lane = Lane(client)
    yield lane
    await lane.aclose()


async def lane_client_id(lane: Lane) -> int:
    return int(await lane.execute(b"CLIENT", b"ID"))


async def test_concurrent_callers_each_get_their_own_reply(lane: Lane, namespace: str) -> None:
    keys = [f"{namespace}:{i}" for i in range(300)]
    await asyncio.gather(*(lane.execute(b"SET", k, f"value {k}") for k in keys))
    replies = await asyncio.gather(*(lane.execute(b"GET", k) for k in reversed(keys)))
    assert replies == [f"value {k}".encode() for k in reversed(keys)]


async def test_one_connection_serves_every_caller(lane: Lane, client: Any) -> None:
    ids = await asyncio.gather(*(lane_client_id(lane) for _ in range(50)))
    assert len(set(ids)) == 1
    # Taken from the client's pool, and held there as in use.
    assert len(client.connection_pool._in_use_connections) == 1


async def test_a_caller_that_stops_waiting_leaves_no_reply_to_the_next(
    lane: Lane, client: Any, namespace: str
) -> None:
    await client.set(f"{namespace}:a", b"A")
    await client.set(f"{namespace}:b", b"B")
    busy = asyncio.ensure_future(client.eval(BUSY, 0, 300))  # another connection
    await asyncio.sleep(0.05)
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(lane.execute(b"GET", f"{namespace}:a"), 0.05)
    # Its reply arrives later, and is dropped in turn: this caller gets its own.
    assert await lane.execute(b"GET", f"{namespace}:b") == b"B"
    assert await busy == 1
    assert await lane.execute(b"GET", f"{namespace}:a") == b"A"


async def test_errors_are_redis_py_errors_and_the_lane_goes_on(lane: Lane, namespace: str) -> None:
    key = f"{namespace}:list"
    await lane.execute(b"RPUSH", key, b"x")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        await lane.execute(b"HGETALL", key)
    with pytest.raises(redis.exceptions.NoScriptError):
        await lane.execute(b"EVALSHA", "0" * 40, 0)
    assert await lane.execute(b"LLEN", key) == 1


async def test_an_argument_redis_cannot_take_owes_no_reply(lane: Lane, namespace: str) -> None:
    await lane.execute(b"SET", f"{namespace}:k", b"v")
    with pytest.raises(TypeError):
        await lane.execute(b"SET", f"{namespace}:k", None)
    with pytest.raises(TypeError):
        await lane.execute(b"SET", f"{namespace}:k", True)
    # The next callers get their own replies, not one shifted by the refused command.
    assert await asyncio.wait_for(lane.execute(b"GET", f"{namespace}:k"), 5) == b"v"
    assert await asyncio.wait_for(lane.execute(b"PING"), 5) == b"PONG"


async def test_a_flushed_script_is_sent_again(lane: Lane, client: Any) -> None:
    script = client.register_script("return ARGV[1]")
    assert await lane.script(script, [], [b"one"]) == b"one"
    await client.script_flush()
    assert await lane.script(script, [], [b"two"]) == b"two"  # EVAL, which loads it
    assert await client.script_exists(script.sha) == [True]


async def test_a_killed_connection_is_let_go_and_a_new_one_taken(lane: Lane, client: Any) -> None:
    first = await lane_client_id(lane)
    await client.client_kill_filter(_id=first)
    for _ in range(200):  # the lane hears the connection close
        if lane._transport is None:
            break
        await asyncio.sleep(0.01)
    assert lane._transport is None
    assert await lane_client_id(lane) != first
    assert await lane.execute(b"PING") == b"PONG"


async def test_a_silent_connection_is_dropped_after_the_stall(
    lane: Lane, client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lane_module, "STALL", 0.05)
    first = await lane_client_id(lane)
    busy = asyncio.ensure_future(client.eval(BUSY, 0, 300))
    await asyncio.sleep(0.05)
    owed = asyncio.ensure_future(lane.execute(b"PING"))
    await asyncio.sleep(0.15)  # no reply for longer than the stall
    second_id = asyncio.ensure_future(lane_client_id(lane))
    with pytest.raises(redis.ConnectionError, match="no reply"):
        await owed
    await busy
    assert await asyncio.wait_for(second_id, 5) != first


async def test_closing_the_client_closes_the_lane(redis_server: RedisServer) -> None:
    client = redis.asyncio.Redis.from_url(redis_server.url)
    lane = Lane(client)
    lane_id = await lane_client_id(lane)
    await asyncio.wait_for(client.aclose(), 5)  # no wait on a connection it no longer reads
    admin = redis.asyncio.Redis.from_url(redis_server.url)
    try:
        for _ in range(100):
            listed = await admin.client_list()
            if all(int(c["id"]) != lane_id for c in listed):
                break
            await asyncio.sleep(0.01)
        assert all(int(c["id"]) != lane_id for c in listed)
    finally:
        await admin.aclose()


async def test_aclose_gives_the_connection_back(lane: Lane, client: Any) -> None:
    await lane.execute(b"PING")
    assert len(client.connection_pool._in_use_connections) == 1
    await lane.aclose()
    assert len(client.connection_pool._in_use_connections) == 0
    # The pool reconnects it for the client's own use.
    assert await client.ping() is True
    # And the lane takes a connection again when next used.
    assert await lane.execute(b"PING") == b"PONG"


async def test_resp3_client(redis_server: RedisServer, namespace: str) -> None:
    client = redis.asyncio.Redis.from_url(redis_server.url, protocol=3)
    try:
        cache = RedisCache(client, namespace=namespace)
        assert cache._state.lane is not None
        origin = Origin()
        async with make_client(cache, origin, default_ttl=60) as http:
            first = await http.get("/resp3")
            second = await http.get("/resp3")
        assert "stored" in first.headers["cache-status"]
        assert "hit" in second.headers["cache-status"]
        assert second.content == first.content
        assert origin.calls["/resp3"] == 1
    finally:
        await client.aclose()


@pytest.mark.parametrize("multiplex", [True, False])
async def test_the_middleware_serves_the_same_either_way(
    redis_server: RedisServer, namespace: str, multiplex: bool
) -> None:
    client = redis.asyncio.Redis.from_url(redis_server.url)
    try:
        cache = RedisCache(client, namespace=namespace, multiplex=multiplex)
        assert (cache._state.lane is not None) is multiplex
        origin = Origin()
        async with make_client(cache, origin, default_ttl=60) as http:
            responses = await asyncio.gather(*(http.get(f"/m/{i % 5}") for i in range(40)))
            again = [await http.get(f"/m/{i}") for i in range(5)]
        assert all(r.status_code == 200 for r in responses)
        assert all("hit" in r.headers["cache-status"] for r in again)
        assert sum(origin.calls.values()) == 5  # coalesced: one app call per URL
    finally:
        await client.aclose()


async def test_cache_aclose_gives_the_lane_connection_back(
    redis_server: RedisServer, namespace: str
) -> None:
    client = redis.asyncio.Redis.from_url(redis_server.url)
    try:
        cache = RedisCache(client, namespace=namespace)
        async with make_client(cache, Origin(), default_ttl=60) as http:
            await http.get("/x")
        assert len(client.connection_pool._in_use_connections) == 1
        await cache.aclose()
        assert len(client.connection_pool._in_use_connections) == 0
        assert await client.ping() is True  # a client handed in stays open
    finally:
        await client.aclose()


def test_only_a_plain_client_on_one_redis_has_a_lane() -> None:
    assert suits(redis.asyncio.Redis())
    assert not suits(redis.asyncio.Redis(decode_responses=True))
    assert not suits(redis.asyncio.Redis(single_connection_client=True))
    assert not suits(fakeredis.FakeAsyncRedis())
    assert not suits(redis.Redis())  # the sync client
    assert RedisCache(fakeredis.FakeAsyncRedis())._state.lane is None
    assert RedisCache(redis.asyncio.Redis(), multiplex=False)._state.lane is None
    assert RedisCache(redis.asyncio.Redis())._state.lane is not None


def test_multiplex_must_be_a_bool() -> None:
    with pytest.raises(ConfigError, match="multiplex"):
        RedisCache(redis.asyncio.Redis(), multiplex="yes")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="multiplex"):
        RedisCache.from_url("redis://127.0.0.1:1", multiplex=1)  # type: ignore[arg-type]


def test_pack_encodes_as_redis_py_does() -> None:
    assert pack([b"SET", "k", 12, 1.5, b"\x00v"]) == (
        b"*5\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n12\r\n$3\r\n1.5\r\n$2\r\n\x00v\r\n"
    )
    assert pack(["é"]) == "*1\r\n$2\r\né\r\n".encode()
    with pytest.raises(TypeError):
        pack([True])
    with pytest.raises(TypeError):
        pack([None])


async def test_an_urgent_command_is_written_before_the_loop_turns(
    lane: Lane, namespace: str
) -> None:
    """A likely miss's lookup goes out at once, with what was queued before it; others wait
    for the loop's turn, so that a burst shares one write. In the order they were given."""
    await lane.open()
    transport: Any = lane._transport
    written: list[bytes] = []
    real_write = transport.write

    def write(data: bytes) -> None:
        written.append(bytes(data))
        real_write(data)

    transport.write = write
    try:
        queued = asyncio.ensure_future(lane.execute(b"SET", f"{namespace}:k", b"1"))
        await asyncio.sleep(0)  # the task queues its command: not written yet
        assert lane._out and not written
        urgent = lane.execute(b"GET", f"{namespace}:k", urgent=True)
        step = urgent.send(None)  # runs up to its wait for the reply
        # Both commands went out in one write, before the loop turned, the queued one first.
        assert len(written) == 1 and not lane._out
        assert written[0].index(b"SET") < written[0].index(b"GET")
        assert await queued == b"OK"
        assert await asyncio.shield(step) == b"1"  # the reply the urgent command waited for
        urgent.close()
    finally:
        transport.write = real_write
