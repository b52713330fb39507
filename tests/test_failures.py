"""Fail-open behaviour, the simpler cases: Redis down, slow or holding garbage never breaks
a response.

Here: plain garbage, a wrong Redis type, an old schema or a huge Content-Length at an entry
key is a miss; bodies too large to store are delivered whole; an app that raises stores
nothing; Redis stopped and restarted, black-holed, or failing a store.
``tests/test_faults.py`` holds fault injection with a real Redis on loopback (killed under
load, slowed or black-holed through a TCP proxy, full, a pool too small), entries that are
near-misses of a valid one, bad data at variant keys, and apps failing mid-stream.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import time
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest
import redis.asyncio

from redis_cache_middleware import CacheMiddleware, RedisCache, keys
from redis_cache_middleware.entry import SCHEMA_VERSION, decode

from . import helpers
from .conftest import RedisServer
from .helpers import PRODUCT_TIMEOUT, Origin, Spec, http_scope

pytestmark = pytest.mark.anyio

#: These tests are about the Redis timeout: the product's default, not the suite's.
make_client = functools.partial(helpers.make_client, timeout=PRODUCT_TIMEOUT)


async def _base_key(cache: RedisCache, path: str, query: bytes = b"") -> str:
    uhash = cache.url_hash("http", b"testserver", path, query)
    return keys.url_key(cache.namespace, 0, uhash)


@pytest.mark.parametrize(
    "garbage",
    [
        pytest.param({b"v": SCHEMA_VERSION, b"status": b"200"}, id="missing-fields"),
        pytest.param({b"v": b"0", b"status": b"200", b"body": b"old"}, id="old-schema"),
        pytest.param(
            {
                b"v": SCHEMA_VERSION,
                b"status": b"200",
                b"headers": b"\xc1\xc1",
                b"body": b"x",
                b"stored_at": b"1",
                b"fresh_for": b"9",
                b"stale_for": b"0",
                b"age0": b"0",
                b"auth": b"0",
                b"tags": b"\x90",
            },
            id="truncated-msgpack",
        ),
        pytest.param({b"junk": b"\x00" * 100}, id="junk-field"),
    ],
)
async def test_garbage_hash_is_a_miss_then_overwritten(
    cache: RedisCache, redis_client: Any, garbage: dict[bytes, bytes]
) -> None:
    key = await _base_key(cache, "/g")
    await redis_client.hset(key, mapping=garbage)
    origin = Origin()
    async with make_client(cache, origin, default_ttl=60) as client:
        first = await client.get("/g")
        second = await client.get("/g")
    assert first.status_code == 200
    assert first.headers["cache-status"].endswith("stored")
    assert "hit" in second.headers["cache-status"]
    assert origin.calls["/g"] == 1
    assert decode(await redis_client.hgetall(key)) is not None


@pytest.mark.parametrize("kind", ["string", "list", "set", "zset"])
async def test_wrong_redis_type_at_key_is_a_miss_then_overwritten(
    cache: RedisCache, redis_client: Any, kind: str
) -> None:
    key = await _base_key(cache, "/w")
    if kind == "string":
        await redis_client.set(key, b"\x93\x01\x02\x03")
    elif kind == "list":
        await redis_client.rpush(key, b"a")
    elif kind == "set":
        await redis_client.sadd(key, b"a")
    else:
        await redis_client.zadd(key, {b"a": 1.0})
    origin = Origin()
    async with make_client(cache, origin, default_ttl=60) as client:
        first = await client.get("/w")
        second = await client.get("/w")
    assert first.status_code == 200 and first.headers["cache-status"].endswith("stored")
    assert "hit" in second.headers["cache-status"]
    assert await redis_client.type(key) == b"hash"


async def test_huge_fake_content_length_is_a_miss(cache: RedisCache, redis_client: Any) -> None:
    origin = Origin()
    async with make_client(cache, origin, default_ttl=60) as client:
        await client.get("/len")
        key = await _base_key(cache, "/len")
        import msgpack

        await redis_client.hset(
            key,
            b"headers",
            msgpack.packb([[b"content-length", b"999999999999"]], use_bin_type=True),
        )
        r = await client.get("/len")
        again = await client.get("/len")
    assert r.status_code == 200
    assert r.headers["cache-status"].endswith("stored")
    assert r.headers["content-length"] == str(len(r.content))
    # The entry was overwritten with the app's answer: the next request is a true hit.
    assert "hit" in again.headers["cache-status"] and again.content == r.content
    assert origin.calls["/len"] == 2
    assert (await redis_client.hget(key, b"headers")) != msgpack.packb(
        [[b"content-length", b"999999999999"]], use_bin_type=True
    )


async def test_streamed_5mb_body_delivered_whole_and_not_stored(cache: RedisCache) -> None:
    chunk = bytes(range(256)) * 4096  # 1 MiB
    origin = Origin(specs={"/big": Spec(chunks=[chunk] * 5)})
    async with make_client(cache, origin, default_ttl=60) as client:
        first = await client.get("/big")
        second = await client.get("/big")
    assert first.content == chunk * 5
    assert second.content == chunk * 5
    assert "hit" not in second.headers["cache-status"]
    assert origin.calls["/big"] == 2
    assert cache.stats.not_stored["too-large"] == 2


@pytest.mark.parametrize(
    ("chunk", "status"),
    [
        # The first chunk with the headers is over max_body_size already: the start says so.
        pytest.param(1 << 20, b"; detail=too-large", id="1MiB-chunks"),
        # The first chunks are kept, then dropped mid-stream; the start made no claim.
        pytest.param(1 << 18, b"", id="256KiB-chunks"),
    ],
)
@pytest.mark.parametrize("backend", ["fakeredis", "redis"])
async def test_streamed_50mib_memory_stays_bounded_and_chunks_interleave(
    cache: RedisCache, redis_client: Any, namespace: str, backend: str, chunk: int, status: bytes
) -> None:
    # Raw ASGI, no client buffering: 50 MiB in distinct chunks through the default
    # max_body_size. The app builds each chunk only once the previous one reached send.
    count = 50 * (1 << 20) // chunk
    delivered: list[tuple[int, int, bool]] = []  # (len, first byte, more_body)
    delivered_before: list[int] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x-a", b"1")]})
        for i in range(count):
            delivered_before.append(len(delivered))
            body = bytes((i % 251,)) * chunk
            await send({"type": "http.response.body", "body": body, "more_body": True})
            del body  # the app holds one chunk at a time
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    starts: list[Any] = []

    async def send(message: Any) -> None:
        if message["type"] == "http.response.start":
            starts.append(message)
        else:  # keep no body: only what identifies it
            body = message["body"]
            delivered.append((len(body), body[0] if body else -1, message["more_body"]))

    async def receive() -> Any:
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = http_scope("/stream")
    middleware = CacheMiddleware(app, cache=cache, default_ttl=60)
    limit = middleware.config.max_body_size
    assert limit == 1024 * 1024
    await redis_client.ping()  # the connection exists before tracing starts
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        await middleware(scope, receive, send)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert peak < 3 * limit, f"traced peak {peak / (1 << 20):.2f} MiB"
    assert delivered_before == list(range(count))
    assert delivered == [(chunk, i % 251, True) for i in range(count)] + [(0, -1, False)]
    cache_status = b"redis-cache; fwd=uri-miss; fwd-status=200" + status
    assert [(m["status"], m["headers"]) for m in starts] == [
        (200, [(b"x-a", b"1"), (b"cache-status", cache_status)])
    ]
    assert cache.stats.stored == 0 and cache.stats.not_stored["too-large"] == 1
    assert await cache.inspect_url("http://testserver/stream") == []
    kinds = {k: await redis_client.type(k) async for k in redis_client.scan_iter(f"{namespace}:*")}
    assert b"hash" not in kinds.values(), kinds


async def test_streamed_small_body_is_stored(cache: RedisCache) -> None:
    origin = Origin(specs={"/small": Spec(chunks=[b"a", b"b", b"c"])})
    async with make_client(cache, origin, default_ttl=60) as client:
        first = await client.get("/small")
        second = await client.get("/small")
    # A streamed response cannot promise "stored" before its end.
    assert first.headers["cache-status"] == "redis-cache; fwd=uri-miss; fwd-status=200"
    assert second.content == b"abc" and "hit" in second.headers["cache-status"]
    assert second.headers["content-length"] == "3"


async def test_declared_too_large_not_captured(cache: RedisCache) -> None:
    origin = Origin(specs={"/cl": Spec(body=b"x" * 2000)})
    async with make_client(cache, origin, default_ttl=60, max_body_size=1000) as client:
        r = await client.get("/cl")
    assert r.headers["cache-status"].endswith("detail=too-large")
    assert len(r.content) == 2000


async def test_app_raising_stores_nothing(cache: RedisCache) -> None:
    origin = Origin(specs={"/boom": Spec(raises=True)})
    async with make_client(cache, origin, default_ttl=60) as client:
        with pytest.raises(RuntimeError):
            await client.get("/boom")
    assert cache.stats.stored == 0


async def test_redis_stopped_mid_test_still_200(
    own_redis_server: RedisServer, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    from redis_cache_middleware.guard import warn

    warn.reset()
    cache = RedisCache.from_url(own_redis_server.url, namespace=namespace, breaker_cooldown=0.5)
    origin = Origin()
    try:
        async with make_client(cache, origin, default_ttl=60) as client:
            await client.get("/down")
            assert "hit" in (await client.get("/down")).headers["cache-status"]
            own_redis_server.stop()
            started = time.monotonic()
            with caplog.at_level(logging.WARNING, logger="redis_cache_middleware"):
                responses = [await client.get("/down") for _ in range(5)]
            elapsed = time.monotonic() - started
            assert [r.status_code for r in responses] == [200] * 5
            assert all("detail=redis-error" in r.headers["cache-status"] for r in responses)
            assert origin.calls["/down"] == 6
            assert cache.stats.redis_error >= 5
            # Warnings are rate-limited: one for the lookups, not one per request.
            lookups = [r for r in caplog.records if "lookup failed" in r.getMessage()]
            assert len(lookups) == 1
            # Each request waited at most the middleware timeout (0.1 s) for Redis.
            assert elapsed < 5 * 0.1 + 1.0
            # Five consecutive failures opened the circuit breaker: Redis is skipped now.
            assert cache.breaker.state == "open"
            skipped = await client.get("/down")
            assert skipped.status_code == 200 and cache.stats.breaker_skipped >= 1
            own_redis_server.start()
            await asyncio.sleep(0.1)
            recovered = None
            for _ in range(30):
                recovered = await client.get("/down")
                if "stored" in recovered.headers["cache-status"]:
                    break
                await asyncio.sleep(0.1)
            assert recovered is not None and "stored" in recovered.headers["cache-status"]
            assert "hit" in (await client.get("/down")).headers["cache-status"]
    finally:
        await cache.aclose()


@pytest.fixture
def blackhole() -> Iterator[int]:
    """A loopback port that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    accepted: list[socket.socket] = []
    server.settimeout(0.01)
    yield int(server.getsockname()[1])
    for s in accepted:
        s.close()
    server.close()


async def test_blackholed_redis_bounded_by_timeout(blackhole: int, namespace: str) -> None:
    # A client with redis-py's slow defaults: the middleware's own timeout still bounds it.
    client = redis.asyncio.Redis(port=blackhole)
    cache = RedisCache(client, namespace=namespace)
    origin = Origin()
    try:
        async with make_client(cache, origin, default_ttl=60, timeout=0.2) as http:
            started = time.monotonic()
            r = await http.get("/slow")
            elapsed = time.monotonic() - started
    finally:
        await client.aclose()
    assert r.status_code == 200
    assert "detail=redis-error" in r.headers["cache-status"]
    # Lookup (0.2 s) and no store: well under redis-py's multi-second default stall.
    assert elapsed < 1.0


async def test_hanging_redis_calls_end_at_the_timeout_and_the_task_carries_on(
    cache: RedisCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lookup and a store that never answer are each cut off at ``timeout`` (the guard's
    ``Bound``), on every backend: the response comes from the app, says redis-error, and the
    request's task is not left cancelled (the same client's next request works too)."""
    hung = asyncio.Event()

    async def hanging(*args: Any, **kwargs: Any) -> None:
        await hung.wait()  # never set

    origin = Origin()
    async with make_client(cache, origin, default_ttl=60, timeout=0.1) as client:
        monkeypatch.setattr(cache, "lookup", hanging)
        started = time.monotonic()
        first = await client.get("/hang")
        took = time.monotonic() - started
        monkeypatch.undo()
        monkeypatch.setattr(cache, "store", hanging)
        second = await client.get("/hang")
        monkeypatch.undo()
        third = await client.get("/hang")
    assert first.status_code == second.status_code == third.status_code == 200
    status = first.headers["cache-status"]
    assert status == "redis-cache; fwd=miss; fwd-status=200; detail=redis-error"
    assert took < 1.0  # the lookup's 0.1 s, not the hang
    assert [r.content.split(b" ")[1] for r in (first, second, third)] == [
        b"call=1",
        b"call=2",
        b"call=3",
    ]
    assert cache.stats.redis_error == 2


async def test_store_failure_still_delivers_response(
    cache: RedisCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken_store(*args: Any, **kwargs: Any) -> None:
        raise redis.exceptions.ConnectionError("gone")

    monkeypatch.setattr(cache, "store", broken_store)
    origin = Origin()
    async with make_client(cache, origin, default_ttl=60) as client:
        first = await client.get("/sf")
        second = await client.get("/sf")
    assert first.status_code == second.status_code == 200
    assert first.content.startswith(b"/sf? call=1") and second.content.startswith(b"/sf? call=2")
    # The first store went out with the response, as stores do while Redis takes them: its
    # header said "stored" before Redis failed it. After that failure, each store completes
    # before its response's headers, so Cache-Status shows the error.
    assert first.headers["cache-status"] == "redis-cache; fwd=uri-miss; fwd-status=200; stored"
    assert (
        second.headers["cache-status"]
        == "redis-cache; fwd=uri-miss; fwd-status=200; detail=redis-error"
    )
    assert cache.stats.redis_error == 2
    assert cache.stats.stored == 0
