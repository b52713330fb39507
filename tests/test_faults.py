"""Fault injection with a real Redis on loopback: killed, slow, black-holed, full, a pool too
small for the burst, garbage at our keys, and apps that fail or lose their client mid-stream.

Every test is bounded by a deadline; the Redis servers and the TCP proxy are the test's own
and are stopped in teardown. ``tests/test_failures.py`` holds the simpler fail-open cases:
plain garbage, a wrong type or an old schema at an entry key, bodies too large to store, an
app that raises, Redis stopped or black-holed for a few requests, a store that fails.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import random
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import msgpack
import pytest
import redis.asyncio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from redis_cache_middleware import CacheMiddleware, RedisCache, keys
from redis_cache_middleware import entry as entry_codec
from redis_cache_middleware.breaker import CLOSED, HALF_OPEN, OPEN
from redis_cache_middleware.entry import CachedEntry, decode
from redis_cache_middleware.guard import warn

from . import helpers
from .conftest import RedisServer
from .helpers import PRODUCT_TIMEOUT, Origin, Spec, http_scope
from .tcp_proxy import TcpProxy

if sys.version_info >= (3, 11):
    from asyncio import timeout as deadline
else:  # pragma: no cover - Python 3.10
    from async_timeout import timeout as deadline

pytestmark = pytest.mark.anyio

#: These tests are about the Redis timeout: the product's default, not the suite's.
make_client = functools.partial(helpers.make_client, timeout=PRODUCT_TIMEOUT)

#: The middleware's Redis timeout in these tests (its default), and the slack a loaded
#: 2-core CI machine may add on top of it to one request. A bound, not a benchmark.
TIMEOUT = 0.1
SLACK = 0.25

Message = dict[str, Any]


async def timed_get(client: httpx.AsyncClient, path: str, **kwargs: Any) -> tuple[float, Any]:
    started = time.monotonic()
    response = await client.get(path, **kwargs)
    return time.monotonic() - started, response


def base_key(cache: RedisCache, path: str, generation: int = 0) -> str:
    return keys.url_key(cache.namespace, generation, cache.hash_for_url(f"http://testserver{path}"))


@pytest.fixture(autouse=True)
def _fresh_warnings() -> None:
    warn.reset()


@pytest.fixture
async def proxy(redis_server: RedisServer) -> AsyncIterator[TcpProxy]:
    """A loopback TCP proxy in front of the session's real Redis."""
    from urllib.parse import urlsplit

    port = urlsplit(redis_server.url).port or 6379
    async with TcpProxy(port) as p:
        yield p


# -- Redis killed under load ----------------------------------------------------------------


async def test_redis_killed_under_load_zero_failures_then_hits_resume(
    own_redis_server: RedisServer, namespace: str
) -> None:
    """Steady load from 8 clients; Redis is killed, stays down ~1.5 s, and is started again
    on the same port: not one request fails, and hits come back without restarting the app."""
    cache = RedisCache.from_url(own_redis_server.url, namespace=namespace, breaker_cooldown=1.0)
    # Connected before the load, as the app's lifespan does (ASGITransport runs none): eight
    # first lookups waiting on one cold connection on a loaded host can pass the 100 ms
    # timeout together and open the breaker before any hit, which is not what this tests.
    assert await cache.warm_up()
    origin = Origin()
    paths = [f"/load/{i}" for i in range(20)]
    results: list[tuple[float, int, str]] = []  # (time, status, cache-status)
    stop = asyncio.Event()

    async def worker(http: httpx.AsyncClient, seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            r = await http.get(rng.choice(paths))
            results.append((time.monotonic(), r.status_code, r.headers["cache-status"]))
            await asyncio.sleep(0.002)

    try:
        async with deadline(30), make_client(cache, origin, default_ttl=60) as http:
            workers = [asyncio.create_task(worker(http, seed)) for seed in range(8)]
            try:
                await asyncio.sleep(0.7)
                assert any("hit" in s for _, _, s in results), "no hits before the kill"
                killed_at = time.monotonic()
                await asyncio.to_thread(own_redis_server.stop)
                await asyncio.sleep(1.5)
                await asyncio.to_thread(own_redis_server.start)
                back_at = time.monotonic()
                # Wait (bounded) for hits served after Redis came back.
                first_hit = None
                while first_hit is None and time.monotonic() - back_at < 6:
                    await asyncio.sleep(0.05)
                    first_hit = next(
                        (t for t, _, s in results if t > back_at and "; hit" in s), None
                    )
            finally:
                stop.set()
                await asyncio.gather(*workers)
    finally:
        await cache.aclose()
    statuses = Counter(code for _, code, _ in results)
    assert statuses == {200: len(results)}, statuses
    down = [s for t, _, s in results if killed_at + 0.2 < t < back_at]
    assert len(down) > 20, "too little load while Redis was down"
    # While down, the app answered (a miss with the Redis error, or the breaker skipping).
    assert all("detail=redis-error" in s for s in down)
    assert first_hit is not None, "no hit within 6 s of Redis coming back"
    # Within the breaker's cool-down (1 s) plus a refill: a few seconds at most.
    assert first_hit - back_at < 4.0
    assert cache.stats.breaker_transitions["closed->open"] >= 1
    assert cache.stats.breaker_transitions["half-open->closed"] >= 1


# -- slow, black-holed or resetting Redis (TCP proxy) ---------------------------------------


@pytest.mark.parametrize("mode", ["delay", "blackhole", "close"])
async def test_slow_or_blackholed_redis_costs_at_most_the_timeout_then_breaker_opens(
    proxy: TcpProxy, namespace: str, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = redis.asyncio.Redis(port=proxy.port)  # redis-py's slow defaults, on purpose
    cache = RedisCache(client, namespace=namespace, breaker_threshold=5, breaker_cooldown=30)
    origin = Origin()
    try:
        async with deadline(20), make_client(cache, origin, default_ttl=60) as http:
            await http.get("/s")
            _, warm = await timed_get(http, "/s")
            assert "hit" in warm.headers["cache-status"]
            if mode == "delay":
                proxy.set_delay(0.5)  # five times the timeout, each way
            else:
                proxy.mode = mode
            with caplog.at_level(logging.WARNING, logger="redis_cache_middleware"):
                timed = [await timed_get(http, f"/s/{i}") for i in range(5)]
                assert cache.breaker.state == OPEN
                skipped = [await timed_get(http, f"/s/{i}") for i in range(5, 25)]
    finally:
        proxy.mode = "pass"
        await client.aclose()
    for elapsed, r in timed + skipped:
        assert r.status_code == 200
        assert "detail=redis-error" in r.headers["cache-status"]
        assert elapsed < TIMEOUT + SLACK, f"{elapsed:.3f} s for one request"
    # Open: Redis is not asked at all, so these cost (next to) nothing.
    assert sum(e for e, _ in skipped) < 20 * 0.05
    assert cache.stats.redis_error == 5
    assert cache.stats.breaker_skipped == 20
    assert cache.stats.breaker_transitions == {"closed->open": 1}
    messages = [r.getMessage() for r in caplog.records]
    assert "redis-cache circuit breaker closed -> open" in messages


async def test_short_delay_under_the_timeout_still_serves_hits(
    proxy: TcpProxy, namespace: str
) -> None:
    client = redis.asyncio.Redis(port=proxy.port)
    cache = RedisCache(client, namespace=namespace)
    origin = Origin()
    try:
        async with deadline(10), make_client(cache, origin, default_ttl=60) as http:
            await http.get("/d")
            proxy.set_delay(0.01)  # ~20 ms a round trip: slow, within the 100 ms timeout
            responses = [await http.get("/d") for _ in range(3)]
    finally:
        proxy.mode = "pass"
        await client.aclose()
    assert all("hit" in r.headers["cache-status"] for r in responses)
    assert cache.stats.redis_error == 0 and origin.calls["/d"] == 1


async def test_breaker_half_open_lets_one_probe_through_then_closes(
    proxy: TcpProxy, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Black-holed: 2 failures open the breaker; after the cool-down a burst of 10 requests
    sends exactly one probe to Redis; it fails and the breaker reopens. With Redis back, the
    next probe closes it and the cache works again. Every change is logged and counted."""
    client = redis.asyncio.Redis(port=proxy.port)
    cooldown = 0.3
    cache = RedisCache(client, namespace=namespace, breaker_threshold=2, breaker_cooldown=cooldown)
    origin = Origin()
    caplog.set_level(logging.WARNING, logger="redis_cache_middleware")
    try:
        async with deadline(20), make_client(cache, origin, default_ttl=60) as http:
            proxy.mode = "blackhole"
            for i in range(2):
                await http.get(f"/h/{i}")
            assert cache.breaker.state == OPEN
            assert (cache.stats.redis_error, cache.stats.breaker_skipped) == (2, 0)
            await asyncio.sleep(cooldown + 0.05)
            # Distinct URLs, so that no two requests share one lookup.
            burst = await asyncio.gather(*(timed_get(http, f"/h/b{i}") for i in range(10)))
            assert all(r.status_code == 200 for _, r in burst)
            assert max(e for e, _ in burst) < TIMEOUT + SLACK
            assert cache.stats.redis_error == 3  # the one probe, which failed
            assert cache.stats.breaker_skipped == 9
            assert cache.breaker.state == OPEN
            proxy.mode = "pass"
            await asyncio.sleep(cooldown + 0.05)
            probe = await http.get("/h/after")
            assert cache.breaker.state == CLOSED
            assert probe.headers["cache-status"].endswith("stored")
            assert "hit" in (await http.get("/h/after")).headers["cache-status"]
    finally:
        proxy.mode = "pass"
        await client.aclose()
    assert cache.stats.breaker_transitions == {
        f"{CLOSED}->{OPEN}": 1,
        f"{OPEN}->{HALF_OPEN}": 2,
        f"{HALF_OPEN}->{OPEN}": 1,
        f"{HALF_OPEN}->{CLOSED}": 1,
    }
    assert cache.stats.snapshot()["breaker_transitions"] == dict(cache.stats.breaker_transitions)
    changes = [
        r.getMessage() for r in caplog.records if r.getMessage().startswith("redis-cache circuit")
    ]
    assert changes == [
        "redis-cache circuit breaker closed -> open",
        "redis-cache circuit breaker open -> half-open",
        "redis-cache circuit breaker half-open -> open",
        "redis-cache circuit breaker open -> half-open",
        "redis-cache circuit breaker half-open -> closed",
    ]


# -- Redis full ------------------------------------------------------------------------------


async def test_redis_full_noeviction_writes_fail_reads_and_app_keep_working(
    own_redis_server: RedisServer, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    admin = redis.asyncio.Redis.from_url(own_redis_server.url)
    cache = RedisCache.from_url(own_redis_server.url, namespace=namespace)
    origin = Origin()
    stored = [f"/full/{i}" for i in range(5)]
    try:
        async with deadline(20), make_client(cache, origin, default_ttl=60) as http:
            for path in stored:
                await http.get(path)
            await admin.config_set("maxmemory-policy", "noeviction")
            await admin.config_set("maxmemory", "1")  # below what is used: every write is OOM
            with pytest.raises(redis.exceptions.OutOfMemoryError):
                await admin.set(f"{namespace}:probe", b"x")
            with caplog.at_level(logging.WARNING, logger="redis_cache_middleware"):
                # A burst of misses: each one's fill lock and store are refused.
                misses = await asyncio.gather(
                    *(timed_get(http, f"/full/new/{i}") for i in range(20))
                )
                # Then the entries stored before are still served from Redis.
                hits = [await http.get(path) for path in stored]
                again = await http.get("/full/new/0")
            missing = await admin.exists(*(base_key(cache, f"/full/new/{i}") for i in range(20)))
            await admin.config_set("maxmemory", "0")
            refilled = await http.get("/full/new/0")
    finally:
        await cache.aclose()
        await admin.aclose()
    for elapsed, r in misses:
        assert r.status_code == 200 and "hit" not in r.headers["cache-status"]
        # A response sent whole is stored before its headers go out: the refusal shows.
        assert r.headers["cache-status"].endswith("detail=redis-error")
        assert elapsed < 2 * TIMEOUT + SLACK
    # Nothing was written.
    assert missing == 0
    assert all("; hit" in r.headers["cache-status"] for r in hits)
    assert again.status_code == 200 and "hit" not in again.headers["cache-status"]
    assert cache.stats.stored == len(stored) + 1  # the one after the limit was lifted
    assert cache.stats.redis_error >= 20
    # Redis answered (with an error): that is not an outage, the breaker stays closed.
    assert cache.breaker.state == CLOSED and cache.stats.breaker_skipped == 0
    assert any("OutOfMemoryError" in r.getMessage() for r in caplog.records)
    assert refilled.headers["cache-status"].endswith("stored")
    assert origin.calls["/full/new/0"] == 3


# -- connection pool exhausted ------------------------------------------------------------


@pytest.mark.parametrize("multiplex", [False, True])
async def test_pool_exhausted_by_burst_waits_bounded_then_app_and_leaks_nothing(
    own_redis_server: RedisServer, namespace: str, multiplex: bool
) -> None:
    """50 concurrent requests for distinct URLs through a pool of 2 connections (whose own
    wait would be 10 s) to a Redis 10 ms away: each Redis call waits at most the
    middleware's timeout, then the request goes on without the cache; afterwards no
    connection is in use, none was made past the pool's size, and the server agrees.

    With the lane (``multiplex``), the burst's commands share one connection of the pool,
    pipelined: the pool is never exhausted, and that one connection is the only one held."""
    assert own_redis_server.port is not None
    admin = redis.asyncio.Redis.from_url(own_redis_server.url)
    async with deadline(30), TcpProxy(own_redis_server.port) as slow:
        pool = redis.asyncio.BlockingConnectionPool(port=slow.port, max_connections=2, timeout=10)
        client = redis.asyncio.Redis(connection_pool=pool)
        # A high threshold keeps the breaker out of the way: every request really waits.
        cache = RedisCache(
            client, namespace=namespace, breaker_threshold=10_000, multiplex=multiplex
        )
        origin = Origin()
        try:
            async with make_client(cache, origin, default_ttl=60) as http:
                slow.set_delay(0.005)
                started = time.monotonic()
                burst = await asyncio.gather(*(timed_get(http, f"/pool/{i}") for i in range(50)))
                total = time.monotonic() - started
                await asyncio.sleep(0.3)  # let calls cut short by the timeout unwind
                in_use = len(pool._in_use_connections)
                available = len(pool._available_connections)
                clients = await admin.client_list()
                errors = cache.stats.redis_error
                slow.mode = "pass"
                # The calm pass: no full collection of the suite's own heap in the middle of it
                # (tens of milliseconds, against the middleware's 100 ms bound).
                gc.collect()
                again = [await http.get(f"/pool/{i}") for i in range(50)]
                in_use_after = len(pool._in_use_connections)
        finally:
            await client.aclose()
            await pool.disconnect()
    await admin.aclose()
    assert [r.status_code for _, r in burst] == [200] * 50
    # lookup, fill lock and store: at most three bounded waits per request.
    assert max(e for e, _ in burst) < 3 * TIMEOUT + SLACK
    assert total < 5
    # The server's view: the pool's connections (at most 2) plus the admin connection.
    assert len(clients) - 1 <= 2, clients
    if multiplex:
        # One connection, the lane's, held for the cache's life; the other never needed.
        # (Calls may still time out behind the proxy's delays; each waited its bound.)
        assert in_use == 1 and available <= 1
        assert in_use_after == 1
        assert slow.accepted <= 2 + errors
    else:
        # The burst really queued on the pool: Redis calls timed out waiting for a connection.
        assert errors > 0
        assert in_use == 0 and available <= 2
        assert slow.accepted <= 2 + errors  # a call cut off mid-reply closes its connection
        assert in_use_after == 0 and len(pool._available_connections) <= 2
    # What the burst could not store, the calm second pass did (or serves it already).
    assert all(r.status_code == 200 for r in again)
    assert all(
        "; hit" in r.headers["cache-status"] or r.headers["cache-status"].endswith("stored")
        for r in again
    )


# -- bad data at our keys -----------------------------------------------------------------


def _valid_fields(body: bytes = b"fake") -> dict[bytes, bytes]:
    entry = CachedEntry(
        status=200,
        headers=[(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())],
        body=body,
        stored_at=time.time(),
        fresh_for=3600,
    )
    return entry_codec.encode(entry)


def _with(**changes: bytes) -> Callable[[], dict[bytes, bytes]]:
    def make() -> dict[bytes, bytes]:
        fields = _valid_fields()
        for name, value in changes.items():
            fields[name.encode()] = value
        return fields

    return make


def _truncated(field: str) -> Callable[[], dict[bytes, bytes]]:
    def make() -> dict[bytes, bytes]:
        fields = _valid_fields()
        fields[field.encode()] = fields[field.encode()][:-1]
        return fields

    return make


def _without(field: str) -> Callable[[], dict[bytes, bytes]]:
    def make() -> dict[bytes, bytes]:
        fields = _valid_fields()
        del fields[field.encode()]
        return fields

    return make


#: Hash shapes that must read as a miss. (Plain garbage, wrong types and an old schema are
#: in test_failures.py; these are near-misses of a valid entry, the ones a decoder gets wrong.)
BAD_HASHES: dict[str, Callable[[], dict[bytes, bytes]]] = {
    "headers-truncated-msgpack": _truncated("headers"),
    "tags-truncated-msgpack": _truncated("tags"),
    "varyreq-truncated-msgpack": _truncated("varyreq"),
    "headers-bin32-claims-4GiB": _with(headers=b"\xc6\xff\xff\xff\xff" + b"x" * 8),
    "headers-array32-claims-4G-items": _with(headers=b"\xdd\xff\xff\xff\xff"),
    "headers-not-pairs": _with(headers=msgpack.packb([[b"a"], 1])),
    "content-length-1TB-body-4B": _with(
        headers=msgpack.packb([[b"content-length", b"1000000000000"]], use_bin_type=True)
    ),
    "content-length-shorter-than-body": _with(
        headers=msgpack.packb([[b"content-length", b"2"]], use_bin_type=True)
    ),
    "missing-status": _without("status"),
    "missing-body": _without("body"),
    "missing-stored_at": _without("stored_at"),
    "missing-headers": _without("headers"),
    "status-out-of-range": _with(status=b"99999"),
    "status-not-a-number": _with(status=b"OK"),
    "fresh_for-nan": _with(fresh_for=b"nan"),
    "stored_at-inf": _with(stored_at=b"inf"),
    "fresh_for-negative": _with(fresh_for=b"-1"),
    "future-schema-version": _with(v=b"2"),
    "marker-truncated-vary": lambda: {b"v": entry_codec.SCHEMA_VERSION, b"vary": b"\x92\xa1"},
    "marker-unsorted-vary": lambda: {
        b"v": entry_codec.SCHEMA_VERSION,
        b"vary": msgpack.packb(["x-b", "x-a"]),
    },
    "marker-vary-not-strings": lambda: {
        b"v": entry_codec.SCHEMA_VERSION,
        b"vary": msgpack.packb([1, 2]),
    },
}


@pytest.mark.parametrize("shape", list(BAD_HASHES))
async def test_bad_hash_at_entry_key_is_a_miss_then_overwritten_then_a_hit(
    cache: RedisCache, redis_client: Any, shape: str
) -> None:
    key = base_key(cache, "/bad")
    await redis_client.hset(key, mapping=BAD_HASHES[shape]())
    origin = Origin()
    async with deadline(10), make_client(cache, origin, default_ttl=60) as http:
        first = await http.get("/bad")
        second = await http.get("/bad")
    assert first.status_code == 200 and first.content.startswith(b"/bad? call=1")
    assert "hit" not in first.headers["cache-status"]
    assert second.status_code == 200 and "; hit" in second.headers["cache-status"]
    assert second.content == first.content and origin.calls["/bad"] == 1
    stored = decode(await redis_client.hgetall(key))
    assert isinstance(stored, CachedEntry) and stored.body == first.content


@pytest.mark.parametrize(
    "shape", ["headers-truncated-msgpack", "content-length-1TB-body-4B", "list", "string"]
)
async def test_bad_data_at_variant_key_is_a_miss_then_overwritten(
    cache: RedisCache, redis_client: Any, shape: str
) -> None:
    origin = Origin(specs={"/var": Spec(headers=[("vary", "X-Lang")], echo_headers=("x-lang",))})
    async with deadline(10), make_client(cache, origin, default_ttl=60) as http:
        await http.get("/var", headers={"x-lang": "fr"})
        marker = await redis_client.hgetall(base_key(cache, "/var"))
        assert marker.get(b"vary") is not None
        members = await redis_client.smembers(keys.variants_key(base_key(cache, "/var")))
        (vhash,) = members
        vkey = keys.variant_key(base_key(cache, "/var"), vhash.decode())
        await redis_client.delete(vkey)
        if shape == "list":
            await redis_client.rpush(vkey, b"x")
        elif shape == "string":
            await redis_client.set(vkey, b"\x93\x01\x02")
        else:
            await redis_client.hset(vkey, mapping=BAD_HASHES[shape]())
        first = await http.get("/var", headers={"x-lang": "fr"})
        second = await http.get("/var", headers={"x-lang": "fr"})
    assert first.status_code == 200 and "hit" not in first.headers["cache-status"]
    assert first.content.startswith(b"/var? call=2")
    assert "; hit" in second.headers["cache-status"] and second.content == first.content
    assert isinstance(decode(await redis_client.hgetall(vkey)), CachedEntry)


async def test_wrong_type_at_variant_set_never_breaks_a_response(
    cache: RedisCache, redis_client: Any
) -> None:
    """The set listing a URL's variants holds a string: the first store of the URL's marker
    replaces it (as it replaces any variants of an older Vary), and every response is
    delivered."""
    base = base_key(cache, "/vs")
    await redis_client.set(keys.variants_key(base), b"junk")
    origin = Origin(specs={"/vs": Spec(headers=[("vary", "X-Lang")])})
    async with deadline(10), make_client(cache, origin, default_ttl=60) as http:
        # Warm the client and fakeredis's Lua runtime on another URL first: a cold start
        # on a loaded machine can take longer than the test's timeout for Redis.
        await http.get("/warm")
        responses = [await http.get("/vs", headers={"x-lang": "de"}) for _ in range(8)]
    assert all(r.status_code == 200 for r in responses)
    assert responses[0].headers["cache-status"].endswith("stored")
    assert all("; hit" in r.headers["cache-status"] for r in responses[1:])
    assert await redis_client.type(keys.variants_key(base)) == b"set"
    assert cache.stats.redis_error == 0
    assert cache.breaker.state == CLOSED and cache.stats.breaker_skipped == 0


# -- the app failing or the client leaving mid-stream ---------------------------------------


class Client:
    """One ASGI request driven by hand: records what the server would send to the client;
    ``disconnect_after`` body messages, ``receive`` says the client is gone (and ``send``
    raises, as servers do once the peer left, when ``send_raises``)."""

    def __init__(self, disconnect_after: int | None = None, send_raises: bool = False) -> None:
        self.sent: list[Message] = []
        self.disconnect_after = disconnect_after
        self.send_raises = send_raises
        self.gone = asyncio.Event()
        self._request_sent = False

    async def receive(self) -> Message:
        if not self._request_sent:
            self._request_sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.gone.wait()
        if self.send_raises:
            await asyncio.Event().wait()  # this server tells by raising from send only
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        if self.gone.is_set() and self.send_raises:
            raise OSError("client disconnected")
        self.sent.append(message)
        bodies = [m for m in self.sent if m["type"] == "http.response.body"]
        if self.disconnect_after is not None and len(bodies) >= self.disconnect_after:
            self.gone.set()

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")


RawApp = Callable[[dict[str, Any], Callable[[], Awaitable[Message]], Any], Awaitable[None]]


def _streaming(calls: Counter[str], fail_after: int | None, chunks: int = 4) -> RawApp:
    """A raw ASGI app streaming ``chunks`` parts (cacheable); it raises after ``fail_after``
    of them, or stops when the client disconnects."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        calls[scope["path"]] += 1
        await receive()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"cache-control", b"max-age=60")],
            }
        )
        for i in range(chunks):
            if fail_after is not None and i == fail_after:
                raise RuntimeError("the app failed mid-stream")
            await send({"type": "http.response.body", "body": b"part%d;" % i, "more_body": True})
            await asyncio.sleep(0)
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    return app


async def _assert_nothing_stored(cache: RedisCache, redis_client: Any, path: str) -> None:
    base = base_key(cache, path)
    assert await redis_client.exists(base) == 0
    assert await redis_client.exists(keys.lock_key(base)) == 0, "fill lock left behind"
    assert cache.stats.stored == 0


async def test_app_raising_mid_stream_stores_nothing_client_got_what_was_sent(
    cache: RedisCache, redis_client: Any
) -> None:
    calls: Counter[str] = Counter()
    middleware = CacheMiddleware(_streaming(calls, fail_after=2), cache=cache, default_ttl=60)
    client = Client()
    async with deadline(10):
        with pytest.raises(RuntimeError, match="mid-stream"):
            await middleware(http_scope("/ms"), client.receive, client.send)
        await _assert_nothing_stored(cache, redis_client, "/ms")
        # Exactly what the app sent before failing, in order, nothing after.
        assert client.sent[0]["type"] == "http.response.start"
        assert client.sent[0]["status"] == 200
        assert (b"cache-control", b"max-age=60") in client.sent[0]["headers"]
        assert [m.get("more_body") for m in client.sent[1:]] == [True, True]
        assert client.body == b"part0;part1;"
        # The next request is a miss that reaches the app at once (no lock to wait out).
        started = time.monotonic()
        again = Client()
        await CacheMiddleware(_streaming(calls, None), cache=cache, default_ttl=60)(
            http_scope("/ms"), again.receive, again.send
        )
        assert time.monotonic() - started < 1.0
    assert again.body == b"part0;part1;part2;part3;" and calls["/ms"] == 2


@pytest.mark.parametrize("send_raises", [False, True], ids=["send-ignored", "send-raises"])
async def test_client_disconnecting_mid_stream_stores_nothing(
    cache: RedisCache, redis_client: Any, send_raises: bool
) -> None:
    """A Starlette StreamingResponse whose client goes away after two chunks: the stream is
    cut (Starlette sees http.disconnect; or the server's send raises), nothing is stored."""
    calls: Counter[str] = Counter()
    release = asyncio.Event()

    async def endless(request: Request) -> Response:
        calls[request.url.path] += 1

        async def parts() -> AsyncIterator[bytes]:
            for i in range(100):
                yield b"chunk%d;" % i
                if i >= 1:
                    await release.wait()  # the rest would come later; the client leaves first

        return StreamingResponse(parts(), headers={"cache-control": "max-age=60"})

    app = Starlette(routes=[Route("/dc", endless)])
    middleware = CacheMiddleware(app, cache=cache, default_ttl=60)
    client = Client(disconnect_after=2, send_raises=send_raises)
    async with deadline(10):
        call = middleware(http_scope("/dc"), client.receive, client.send)
        if send_raises:
            # The app notices only when it sends again: let it, after the client left.
            async def let_it_send() -> None:
                await client.gone.wait()
                release.set()

            helper = asyncio.create_task(let_it_send())
            with pytest.raises(OSError, match="client disconnected"):
                await call
            await helper
        else:
            await call
        await _assert_nothing_stored(cache, redis_client, "/dc")
    assert client.body == b"chunk0;chunk1;"
    assert calls["/dc"] == 1
    assert all(m.get("more_body", False) for m in client.sent[1:])  # never completed


async def test_client_leaving_after_a_complete_response_still_stores_it(
    cache: RedisCache, redis_client: Any
) -> None:
    """For contrast: an app that finishes its (whole) response is stored even when the
    client reads no further; a disconnect only matters when it cuts the response short."""
    calls: Counter[str] = Counter()
    middleware = CacheMiddleware(_streaming(calls, None, chunks=1), cache=cache, default_ttl=60)
    client = Client(disconnect_after=1)
    async with deadline(10):
        await middleware(http_scope("/whole"), client.receive, client.send)
    assert isinstance(decode(await redis_client.hgetall(base_key(cache, "/whole"))), CachedEntry)


@pytest.mark.parametrize("kind", ["string-without-ttl", "list"])
async def test_foreign_data_at_fill_lock_does_not_make_misses_wait(
    cache: RedisCache, redis_client: Any, kind: str
) -> None:
    """Our fill locks always expire (``PX``); something else at the lock key (no TTL, or
    another type) is not a lock of ours and must not make every miss of the URL wait
    ``coalesce_timeout`` for a fill that never comes."""
    lock = keys.lock_key(base_key(cache, "/lk"))
    if kind == "list":
        await redis_client.rpush(lock, b"x")
    else:
        await redis_client.set(lock, b"someone-else")
    origin = Origin()
    async with deadline(15), make_client(cache, origin, default_ttl=60) as http:
        elapsed, first = await timed_get(http, "/lk")
        second = await http.get("/lk")
    assert first.status_code == 200 and elapsed < 1.0, f"{elapsed:.2f} s"
    assert "; hit" in second.headers["cache-status"]
