"""The near cache (``near_cache_bytes``): hits from process memory, kept coherent by Redis.

Two ``RedisCache``s with clients of their own stand for two workers (A and B) on one
namespace, each behind the middleware on a small Starlette app. What A changes (a purge of
any kind, a clear, an unsafe request, a fresh store) must be seen by B's next requests once
Redis's invalidation has arrived: B polls for at most ``WITHIN`` seconds, and the delays seen
are printed (``-s``), never asserted. A killed tracking connection or a restarted Redis must
never let the near cache answer with what Redis no longer holds.
"""

from __future__ import annotations

import asyncio
import logging
import os
import statistics
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import fakeredis
import httpx
import pytest
import redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from redis_cache_middleware import CacheMiddleware, RedisCache
from redis_cache_middleware._redis.near import LEASE, NearCache, size_of
from redis_cache_middleware._redis.tracking import HEARTBEAT
from redis_cache_middleware.exceptions import ConfigError

from .cluster_fixtures import LocalCluster, SentinelSetup
from .conftest import RedisServer
from .helpers import uvicorn_on_loopback

pytestmark = pytest.mark.anyio

#: Seconds B may take to see what A changed.
WITHIN = 2.0
#: The delays seen, for the summary printed at the end of the module (``-s``).
DELAYS: list[float] = []


@dataclass
class Origin:
    """``/p/{name}``: ``"{name} v{n}"``, n counting the app's calls for the path (shared by
    the workers), cacheable for a minute, tagged ``tag-{name}``, with an ETag; a POST to it
    succeeds (and so invalidates it). ``/vary/{name}`` varies on Accept-Language."""

    calls: Counter[str] = field(default_factory=Counter)

    async def page(self, request: Request) -> Response:
        path = request.url.path
        if request.method == "POST":
            return Response("done")
        self.calls[path] += 1
        n = self.calls[path]
        name = request.path_params["name"]
        headers = {
            "cache-control": "max-age=60",
            "surrogate-key": f"tag-{name}",
            "etag": f'"{name}-{n}"',
        }
        if path.startswith("/vary/"):
            headers["vary"] = "accept-language"
            lang = request.headers.get("accept-language", "-")
            return Response(f"{name} {lang} v{n}", headers=headers)
        return Response(f"{name} v{n}", headers=headers)

    def app(self, cache: RedisCache) -> Starlette:
        app = Starlette(
            routes=[
                Route("/p/{name}", self.page, methods=["GET", "HEAD", "POST"]),
                Route("/vary/{name}", self.page),
            ]
        )
        app.add_middleware(CacheMiddleware, cache=cache)
        return app


@dataclass
class Worker:
    cache: RedisCache
    http: httpx.AsyncClient

    @property
    def near(self) -> NearCache:
        near = self.cache._state.near
        assert near is not None
        return near


async def worker(origin: Origin, url: str, namespace: str, **options: Any) -> Worker:
    options.setdefault("near_cache_bytes", 2**20)
    cache = RedisCache.from_url(url, namespace=namespace, **options)
    assert await cache.warm_up(timeout=5)
    http = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=origin.app(cache)), base_url="http://testserver"
    )
    return Worker(cache, http)


async def close(*workers: Worker) -> None:
    for w in workers:
        await w.http.aclose()
        await w.cache.aclose()


def is_near(response: httpx.Response) -> bool:
    return "detail=near" in response.headers.get("cache-status", "")


async def until_near(
    w: Worker, path: str, headers: dict[str, str] | None = None, timeout: float = 5
) -> str:
    """Request ``path`` until the near cache answers it (bounded); return the body."""
    deadline = time.monotonic() + timeout
    while True:
        response = await w.http.get(path, headers=headers)
        assert response.status_code == 200
        if is_near(response):
            return response.text
        assert time.monotonic() < deadline, f"no near hit for {path}: {response.headers}"
        await asyncio.sleep(0.02)


async def until_changed(w: Worker, path: str, old: str) -> float:
    """Request ``path`` until it no longer answers ``old``; return how long that took."""
    started = time.monotonic()
    while True:
        response = await w.http.get(path)
        if response.text != old:
            delay = time.monotonic() - started
            DELAYS.append(delay)
            return delay
        assert time.monotonic() - started < WITHIN, f"B still answers {old!r} from {path}"
        await asyncio.sleep(0.0005)


async def poll(what: str, check: Callable[[], bool], timeout: float = WITHIN) -> None:
    """Wait, letting the event loop run, until ``check()`` holds; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


def command_calls(client: redis.Redis) -> int:
    """Every command the server ran so far, but INFO (ours) and ROLE (tracking's beat)."""
    stats = client.info("commandstats")
    return sum(
        int(v["calls"]) for k, v in stats.items() if k not in ("cmdstat_info", "cmdstat_role")
    )


@pytest.fixture
async def pair(redis_server: RedisServer, namespace: str) -> AsyncIterator[tuple[Worker, Worker]]:
    origin = Origin()
    a = await worker(origin, redis_server.url, namespace)
    b = await worker(origin, redis_server.url, namespace)
    try:
        yield a, b
    finally:
        await close(a, b)


# -- options ----------------------------------------------------------------------------


@pytest.mark.parametrize("value", [-1, 1.5, "64", True, None, 2.0**20])
def test_near_cache_bytes_must_be_a_whole_number(value: object) -> None:
    with pytest.raises(ConfigError, match="near_cache_bytes"):
        RedisCache(fakeredis.FakeAsyncRedis(), near_cache_bytes=value)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="near_cache_bytes"):
        RedisCache.from_url("redis://127.0.0.1:1/0", near_cache_bytes=value)  # type: ignore[arg-type]


def test_near_cache_is_off_by_default() -> None:
    cache = RedisCache(fakeredis.FakeAsyncRedis())
    assert cache._state.near is None and cache._state.tracker is None
    assert RedisCache(fakeredis.FakeAsyncRedis(), near_cache_bytes=1)._state.near is not None


# -- the near cache alone ---------------------------------------------------------------


def test_keep_refuses_a_read_an_invalidation_overtook() -> None:
    from redis_cache_middleware.entry import CachedEntry
    from redis_cache_middleware.stats import CacheStats

    called: list[int] = []
    near = NearCache(10_000, CacheStats(), "ns:gen", lambda: called.append(1))
    entry = CachedEntry(200, [], b"x", time.time(), 60)
    far = time.monotonic() + 60
    near.keep("ns:0:{h}", "h", entry, far, near.serial)
    assert near.items == {}  # tracking not confirmed: nothing is kept
    near.confirm(time.monotonic() + 1)
    since = near.serial
    near.invalidate(["ns:0:{h}"])  # arrives before the read's reply
    near.keep("ns:0:{h}", "h", entry, far, since)
    assert near.get("ns:0:{h}", time.monotonic()) is None
    since = near.serial
    near.invalidate(["ns:0:{other}"])  # another key: no harm
    near.keep("ns:0:{h}", "h", entry, far, since)
    assert near.get("ns:0:{h}", time.monotonic()) is entry
    since = near.serial
    near.drop_url("h")  # this process stored the URL meanwhile
    near.keep("ns:0:{h}:v:x", "h", entry, far, since)
    assert near.get("ns:0:{h}", time.monotonic()) is None and not near.items
    since = near.serial
    near.invalidate(["ns:gen"])  # a clear somewhere: everything goes
    assert called == [1]
    near.keep("ns:0:{h}", "h", entry, far, since)
    assert not near.items
    near.keep("ns:0:{h}", "h", entry, time.monotonic() + 0.01, near.serial)
    assert not near.items  # would leave within SAFETY: not worth keeping
    near.keep("ns:0:{h}", "h", entry, far, near.serial)
    near.lost()
    assert not near.items and near.stats.near_emptied == 1 and not near.usable(time.monotonic())


def test_forgetting_touched_keys_refuses_reads_in_flight_but_keeps_what_is_held() -> None:
    from redis_cache_middleware._redis.near import TOUCHED_MEMORY
    from redis_cache_middleware.entry import CachedEntry
    from redis_cache_middleware.stats import CacheStats

    near = NearCache(10_000, CacheStats(), "ns:gen", lambda: None)
    near.confirm(time.monotonic() + 60)
    entry = CachedEntry(200, [], b"x", time.time(), 60)
    far = time.monotonic() + 60
    near.keep("ns:0:{held}", "held", entry, far, near.serial)
    since = near.serial  # a read of another key begins
    near.invalidate(f"ns:0:{{k{n}}}:lock" for n in range(TOUCHED_MEMORY + 1))
    assert len(near.touched) == 0  # forgotten...
    near.keep("ns:0:{late}", "late", entry, far, since)
    assert near.get("ns:0:{late}", time.monotonic()) is None  # ...so the read is refused
    assert near.get("ns:0:{held}", time.monotonic()) is entry  # lock churn drops nothing


def test_an_entry_leaves_at_the_deadline_redis_gave_it() -> None:
    from redis_cache_middleware.entry import CachedEntry
    from redis_cache_middleware.stats import CacheStats

    near = NearCache(10_000, CacheStats(), "ns:gen", lambda: None)
    near.confirm(time.monotonic() + 60)
    entry = CachedEntry(200, [], b"x", time.time(), 600)  # fresh for 10 minutes, but...
    deadline = time.monotonic() + 0.3  # ...Redis said its key goes in 0.3 s
    near.keep("k", "h", entry, deadline, near.serial)
    assert near.get("k", deadline - 0.01) is entry
    assert near.get("k", deadline) is None and near.bytes == 0


# -- fakeredis --------------------------------------------------------------------------


async def test_fakeredis_turns_the_near_cache_off_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="redis_cache_middleware")
    cache = RedisCache(fakeredis.FakeAsyncRedis(), namespace="fake-near", near_cache_bytes=2**20)
    origin = Origin()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=origin.app(cache)), base_url="http://testserver"
    ) as http:
        await cache.warm_up()
        statuses = [(await http.get("/p/a")).headers["cache-status"] for _ in range(4)]
    assert "stored" in statuses[0]
    assert all("; hit;" in s and "near" not in s for s in statuses[1:])
    assert origin.calls["/p/a"] == 1
    warnings = [r for r in caplog.records if "near cache is off" in r.getMessage()]
    assert len(warnings) == 1 and "fakeredis" in warnings[0].getMessage()
    assert cache.stats.near_hit == 0
    await cache.aclose()


# -- one Redis --------------------------------------------------------------------------


async def test_a_near_hit_calls_neither_the_app_nor_redis(own_redis_server: RedisServer) -> None:
    origin = Origin()
    w = await worker(origin, own_redis_server.url, "near-calls")
    probe = redis.Redis(port=own_redis_server.port)
    try:
        first = await w.http.get("/p/a")
        from_redis = await w.http.get("/p/a")
        assert "stored" in first.headers["cache-status"] and not is_near(from_redis)
        before = command_calls(probe)
        answers = [await w.http.get("/p/a") for _ in range(20)]
        head = await w.http.head("/p/a")
        revalidated = await w.http.get("/p/a", headers={"if-none-match": '"a-1"'})
        assert command_calls(probe) == before
        assert origin.calls["/p/a"] == 1
        assert all(is_near(r) and r.text == "a v1" for r in answers)
        # A near hit answers as a Redis hit does, but for where it came from.
        same = {"cache-status", "age"}
        for r in answers:
            assert {k: v for k, v in r.headers.items() if k not in same} == {
                k: v for k, v in from_redis.headers.items() if k not in same
            }
            assert "age" in r.headers
        assert is_near(head) and head.content == b""
        assert head.headers["content-length"] == str(len("a v1"))
        assert revalidated.status_code == 304 and is_near(revalidated)
        assert w.cache.stats.near_hit == 22 and w.cache.stats.hit == 23
        assert w.cache.stats.near_bytes > len("a v1")
    finally:
        probe.close()
        await close(w)


async def test_stale_answers_from_the_near_cache_as_from_redis(
    redis_server: RedisServer, namespace: str
) -> None:
    """stale-while-revalidate and stale-if-error on an entry the near cache holds: served
    stale and refreshed behind the answer, or standing in for the app's error, as a Redis
    hit's entry is."""
    calls = Counter[str]()
    failing = {"now": False}

    async def page(request: Request) -> Response:
        path = request.url.path
        if failing["now"]:
            return Response("down", status_code=503)
        calls[path] += 1
        window = "stale-while-revalidate=30" if path == "/swr" else "stale-if-error=60"
        headers = {"cache-control": f"max-age=1, {window}"}
        return Response(f"{path} v{calls[path]}", headers=headers)

    cache = RedisCache.from_url(redis_server.url, namespace=namespace, near_cache_bytes=2**20)
    assert await cache.warm_up(timeout=5)
    app = Starlette(routes=[Route("/swr", page), Route("/sie", page)])
    app.add_middleware(CacheMiddleware, cache=cache)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            w = Worker(cache, http)
            for path in ("/swr", "/sie"):
                assert (await http.get(path)).headers["cache-status"].endswith("; stored")
                assert await until_near(w, path) == f"{path} v1"
            await asyncio.sleep(1.1)  # both past their freshness, within their stale windows
            stale = await http.get("/swr")
            assert stale.text == "/swr v1" and int(stale.headers["age"]) >= 1
            status = stale.headers["cache-status"]
            assert "; hit;" in status and "fwd=stale" in status and "detail=near" in status
            await poll("the background refresh", lambda: calls["/swr"] == 2)
            assert await until_near(w, "/swr") == "/swr v2"
            failing["now"] = True
            stand_in = await http.get("/sie")
            assert stand_in.status_code == 200 and stand_in.text == "/sie v1"
            assert "detail=stale-if-error" in stand_in.headers["cache-status"]
            assert calls["/sie"] == 1
    finally:
        await cache.aclose()


async def test_closing_the_cache_stops_tracking_without_counting_a_loss(
    redis_server: RedisServer, namespace: str
) -> None:
    w = await worker(Origin(), redis_server.url, namespace)
    await w.http.get("/p/a")
    await until_near(w, "/p/a")
    await close(w)
    assert not w.near.items and not w.near.ready
    assert w.cache.stats.near_emptied == 0 and w.cache.stats.near_bytes == 0


async def test_a_vary_variant_is_held_too(pair: tuple[Worker, Worker]) -> None:
    a, b = pair
    fr, de = {"accept-language": "fr"}, {"accept-language": "de"}
    await a.http.get("/vary/x", headers=fr)
    await a.http.get("/vary/x", headers=de)
    assert await until_near(b, "/vary/x", fr) == "x fr v1"
    assert await until_near(b, "/vary/x", de) == "x de v2"
    await a.cache.purge_url("http://testserver/vary/x")
    response = await b.http.get("/vary/x", headers=fr)
    assert response.text == "x fr v3" or not is_near(response)


async def purge_url(a: Worker) -> None:
    await a.cache.purge_url("http://testserver/p/a")


async def purge_tag(a: Worker) -> None:
    assert await a.cache.purge_tag("tag-a") == 1


async def purge_prefix(a: Worker) -> None:
    assert await a.cache.purge_prefix("/p") >= 1


async def clear(a: Worker) -> None:
    await a.cache.clear()


async def post(a: Worker) -> None:
    assert (await a.http.post("/p/a")).status_code == 200


async def fresh_store(a: Worker) -> None:
    # no-cache: A fetches the page again and stores it over the old entry.
    response = await a.http.get("/p/a", headers={"cache-control": "no-cache"})
    assert response.text == "a v2" and "stored" in response.headers["cache-status"]


@pytest.mark.parametrize(
    "change",
    [purge_url, purge_tag, purge_prefix, clear, post, fresh_store],
    ids=lambda f: f.__name__,
)
async def test_a_change_in_one_worker_is_seen_by_the_other(
    pair: tuple[Worker, Worker], change: Callable[[Worker], Awaitable[None]]
) -> None:
    a, b = pair
    await a.http.get("/p/a")
    await a.http.get("/p/b")
    assert await until_near(b, "/p/a") == "a v1"
    assert await until_near(b, "/p/b") == "b v1"
    invalidations = b.cache.stats.near_invalidations
    await change(a)
    delay = await until_changed(b, "/p/a", "a v1")
    print(f"\n{change.__name__}: B saw it after {delay * 1000:.2f} ms")
    assert b.cache.stats.near_invalidations > invalidations
    if change not in (purge_prefix, clear):
        assert (await b.http.get("/p/b")).text == "b v1"  # other URLs stay
        assert await until_near(b, "/p/b") == "b v1"


async def test_this_process_sees_its_own_change_at_once(pair: tuple[Worker, Worker]) -> None:
    a, _ = pair
    await a.http.get("/p/a")
    assert await until_near(a, "/p/a") == "a v1"
    # No wait for the push: the purge itself dropped the near entry.
    await a.cache.purge_url("http://testserver/p/a")
    assert (await a.http.get("/p/a")).text == "a v2"
    assert await until_near(a, "/p/a") == "a v2"
    await a.cache.purge_tag("tag-a")
    assert (await a.http.get("/p/a")).text == "a v3"


def tracking_ids(server: RedisServer, name: str) -> list[int]:
    c = redis.Redis(port=server.port)
    try:
        return [
            int(info["id"])
            for info in c.client_list()
            if info.get("name") == name and "t" in info.get("flags", "")
        ]
    finally:
        c.close()


async def test_a_killed_tracking_connection_empties_then_comes_back(
    own_redis_server: RedisServer,
) -> None:
    origin = Origin()
    url = own_redis_server.url
    a = await worker(origin, url, "near-kill")
    b = await worker(origin, url, "near-kill", client_name="worker-b")
    probe = redis.Redis(port=own_redis_server.port)
    try:
        await a.http.get("/p/a")
        assert await until_near(b, "/p/a") == "a v1"
        (tracking,) = tracking_ids(own_redis_server, "worker-b")
        probe.client_kill_filter(_id=tracking)
        await poll("B to notice", lambda: b.cache.stats.near_emptied == 1)
        assert not b.near.items and not b.near.usable(time.monotonic())
        # Changed while B has no tracking: B must not answer from memory.
        await a.cache.purge_url("http://testserver/p/a")
        response = await b.http.get("/p/a")
        assert response.text == "a v2" and not is_near(response)
        # Tracking comes back on a new connection, and so do near hits (and invalidations).
        assert await until_near(b, "/p/a") == "a v2"
        assert tracking_ids(own_redis_server, "worker-b") != [tracking]
        await a.cache.purge_url("http://testserver/p/a")
        await until_changed(b, "/p/a", "a v2")
    finally:
        probe.close()
        await close(a, b)


async def test_a_silent_redis_stops_near_answers_within_the_lease(
    own_redis_server: RedisServer,
) -> None:
    # CLIENT PAUSE: the connection stays up but nothing is answered, pushes included, as
    # on a network that drops packets. The near cache must stop answering within LEASE.
    origin = Origin()
    w = await worker(origin, own_redis_server.url, "near-pause", breaker_cooldown=0.5)
    probe = redis.Redis(port=own_redis_server.port)
    try:
        await w.http.get("/p/a")
        assert await until_near(w, "/p/a") == "a v1"
        probe.execute_command("CLIENT", "PAUSE", 3000, "ALL")
        paused = time.monotonic()
        await asyncio.sleep(LEASE + HEARTBEAT + 0.1)
        response = await w.http.get("/p/a")
        assert time.monotonic() - paused < 3.0  # still paused when it was asked
        assert not is_near(response) and response.text == "a v2"  # the app, failing open
        probe.execute_command("CLIENT", "UNPAUSE")
        assert await until_near(w, "/p/a", timeout=10) in ("a v1", "a v2")
    finally:
        probe.close()
        await close(w)


async def test_lock_and_index_churn_keeps_what_is_held(pair: tuple[Worker, Worker]) -> None:
    a, b = pair
    await a.http.get("/p/a")
    assert await until_near(b, "/p/a") == "a v1"
    invalidations = b.cache.stats.near_invalidations
    for n in range(30):  # misses and stores of other URLs: locks, entries, indexes change
        await a.http.get(f"/p/other{n}")
    await poll("the pushes", lambda: b.cache.stats.near_invalidations > invalidations + 30)
    response = await b.http.get("/p/a")
    assert is_near(response) and response.text == "a v1"


def test_a_forked_child_forgets_the_parents_tracking() -> None:
    from redis_cache_middleware._redis import tracking
    from redis_cache_middleware.entry import CachedEntry

    cache = RedisCache(fakeredis.FakeAsyncRedis(), namespace="fork", near_cache_bytes=2**20)
    near = cache._state.near
    assert near is not None
    near.confirm(time.monotonic() + 60)
    near.keep("fork:0:{h}", "h", CachedEntry(200, [], b"x", time.time(), 60), 1e12, 0)
    assert near.items
    tracking._forget_in_child()  # what os.register_at_fork runs in the child
    assert not near.items and not near.usable(time.monotonic())


async def test_a_redis_restart_never_answers_stale_then_near_hits_resume(
    own_redis_server: RedisServer,
) -> None:
    origin = Origin()
    w = await worker(
        origin, own_redis_server.url, "near-restart", socket_timeout=0.5, breaker_cooldown=0.5
    )
    try:
        await w.http.get("/p/a")
        assert await until_near(w, "/p/a") == "a v1"
        own_redis_server.stop()
        await poll("the loss to be seen", lambda: w.cache.stats.near_emptied == 1)
        down = [await w.http.get("/p/a") for _ in range(3)]
        assert all(r.text != "a v1" and not is_near(r) for r in down)  # the app answered
        own_redis_server.start()
        deadline = time.monotonic() + 10
        while True:
            response = await w.http.get("/p/a")
            assert response.text != "a v1"
            if is_near(response):
                break
            assert time.monotonic() < deadline, "near hits did not resume"
            await asyncio.sleep(0.05)
    finally:
        await close(w)


async def test_memory_stays_within_near_cache_bytes(redis_server: RedisServer) -> None:
    limit = 128 * 1024
    origin = Origin()
    w = await worker(origin, redis_server.url, f"near-flood-{uuid.uuid4().hex[:8]}")
    w.cache._state.near.max_bytes = limit  # type: ignore[union-attr]
    try:
        for n in range(400):
            await w.http.get(f"/p/{'x' * 1000}{n}")
            await w.http.get(f"/p/{'x' * 1000}{n}")  # read from Redis: kept
            near = w.near
            assert near.bytes <= limit
            assert near.bytes == sum(size_of(k, i.value) for k, i in near.items.items())
        assert 10 < len(w.near.items) < 400  # evicted, least recently used first
        assert w.cache.stats.near_bytes == w.near.bytes
        newest = f"/p/{'x' * 1000}399"
        assert is_near(await w.http.get(newest))
    finally:
        await close(w)


async def test_prometheus_exports_the_near_cache(pair: tuple[Worker, Worker]) -> None:
    from prometheus_client import CollectorRegistry

    from redis_cache_middleware.prometheus import register

    a, b = pair
    registry = CollectorRegistry()
    register(b.cache, registry)
    await a.http.get("/p/a")
    await until_near(b, "/p/a")
    await a.cache.purge_url("http://testserver/p/a")
    await until_changed(b, "/p/a", "a v1")
    await until_near(b, "/p/a")
    ns = b.cache.namespace

    def sample(name: str) -> float:
        found = registry.get_sample_value(name, {"namespace": ns})
        assert found is not None, name
        return found

    assert sample("redis_cache_near_hits_total") == b.cache.stats.near_hit >= 1
    assert sample("redis_cache_near_misses_total") == b.cache.stats.near_miss >= 1
    assert sample("redis_cache_near_invalidations_total") >= 1
    assert sample("redis_cache_near_bytes") == b.near.bytes > 0
    assert sample("redis_cache_near_emptied_total") == 0


# -- Sentinel ---------------------------------------------------------------------------


async def test_sentinel_failover_empties_then_tracks_the_new_master(
    sentinel_setup: SentinelSetup,
) -> None:
    setup = sentinel_setup
    origin = Origin()
    ns = f"near-s-{uuid.uuid4().hex[:8]}"
    options = {"breaker_cooldown": 0.5, "socket_timeout": 0.5}
    a = await worker(origin, setup.url, ns, **options)
    b = await worker(origin, setup.url, ns, **options)
    try:
        await a.http.get("/p/a")
        assert await until_near(b, "/p/a") == "a v1"
        await poll("the replica to catch up", lambda: _caught_up(setup), 10)
        setup.master.kill()
        await poll("B to lose tracking", lambda: b.cache.stats.near_emptied >= 1)
        # Promoted by the sentinel, the replica holds the entry: B tracks it there.
        assert await until_near(b, "/p/a", timeout=40) == "a v1"
        assert setup.master_port() == setup.replica.port
        await until_a_master(a)
        await a.cache.purge_url("http://testserver/p/a")
        await until_changed(b, "/p/a", "a v1")
    finally:
        await close(a, b)


async def until_a_master(w: Worker, timeout: float = 10) -> None:
    """Wait until the sentinel names a master to this worker's client too: just after a
    promotion it may still answer "no master found" for a moment."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            await w.cache.client.ping()
            return
        except redis.RedisError:
            assert time.monotonic() < deadline, "the sentinel named no master"
            await asyncio.sleep(0.05)


def _caught_up(setup: SentinelSetup) -> bool:
    c = setup.master.client()
    try:
        info = c.info("replication")
    except redis.RedisError:
        return False
    finally:
        c.close()
    replica = info.get("slave0")
    return bool(replica) and int(replica["offset"]) >= int(info["master_repl_offset"])


# -- a cluster --------------------------------------------------------------------------


async def test_cluster_near_hits_and_invalidations(redis_cluster: LocalCluster) -> None:
    origin = Origin()
    ns = f"near-c-{uuid.uuid4().hex[:8]}"
    a = await worker(origin, redis_cluster.url, ns)
    b = await worker(origin, redis_cluster.url, ns)
    try:
        assert b.near.ready and len(b.cache._state.tracker._links) == 3  # type: ignore[union-attr]
        paths = [f"/p/c{n}" for n in range(12)]  # over every primary
        for path in paths:
            await a.http.get(path)
        for path in paths:
            await until_near(b, path)
        await a.cache.purge_tag(*(f"tag-c{n}" for n in range(12)))
        for path in paths:
            await until_changed(b, path, f"{path[3:]} v1")
        await a.cache.clear()
        await until_changed(b, "/p/c0", "c0 v2")
    finally:
        await close(a, b)


async def test_cluster_failover_empties_then_tracks_the_promoted_primary(
    failover_cluster: LocalCluster,
) -> None:
    from .test_cluster import caught_up, is_primary

    cluster = failover_cluster
    origin = Origin()
    ns = f"near-cf-{uuid.uuid4().hex[:8]}"
    a = await worker(origin, cluster.url, ns, breaker_cooldown=0.5)
    b = await worker(origin, cluster.url, ns, breaker_cooldown=0.5)
    paths = [f"/p/f{n}" for n in range(12)]
    try:
        for path in paths:
            await a.http.get(path)
        for path in paths:
            await until_near(b, path)
        victim = cluster.primaries()[0]
        replica = cluster.replica_of(victim)
        await poll("the replica to catch up", lambda: caught_up(victim.client()), 10)
        victim.kill()
        await poll("B to lose tracking", lambda: b.cache.stats.near_emptied >= 1, 5)
        assert not b.near.items

        async def promoted() -> bool:
            return await asyncio.to_thread(is_primary, replica.client())

        deadline = time.monotonic() + 40
        while not await promoted():
            assert time.monotonic() < deadline, "the replica was not promoted"
            await asyncio.sleep(0.2)
        # Tracked on every primary again (the promoted one among them): near hits resume...
        bodies = {path: await until_near(b, path, timeout=40) for path in paths}
        tracker = b.cache._state.tracker
        assert tracker is not None and f"127.0.0.1:{replica.port}" in {
            link.name for link in tracker._links
        }
        # ...and so do invalidations, from every primary.
        await a.cache.purge_tag(*(f"tag-f{n}" for n in range(12)))
        for path in paths:
            await until_changed(b, path, bodies[path])
    finally:
        await close(a, b)


# -- uvicorn workers --------------------------------------------------------------------


def test_four_uvicorn_workers_see_one_purge(redis_server: RedisServer, namespace: str) -> None:
    token = "t" * 32
    env = {"E2E_NEAR_BYTES": str(2**20), "E2E_PURGE_TOKEN": token}
    with uvicorn_on_loopback(
        "tests.e2e_app:app",
        redis_url=redis_server.url,
        namespace=namespace,
        probe="/calls",
        args=["--workers", "4"],
        env=env,
        settle=1.0,
    ) as base:
        url = f"{base}/version/1"

        def fetch() -> httpx.Response:
            # A connection of its own each time: the workers take turns.
            return httpx.get(url, timeout=5)

        assert fetch().json() == {"v": 1}
        near = 0
        for _ in range(200):
            response = fetch()
            assert response.json() == {"v": 1}
            near += is_near(response)
        assert near > 100  # most answers came from the workers' memory
        purged = httpx.request("PURGE", url, headers={"authorization": f"Bearer {token}"})
        assert purged.status_code == 200 and purged.json() == {"purged": 1}
        # Within WITHIN seconds every worker answers with the new fill, and goes on doing so.
        deadline = time.monotonic() + WITHIN
        streak = 0
        while streak < 80:
            v = fetch().json()["v"]
            streak = streak + 1 if v >= 2 else 0
            assert time.monotonic() < deadline or streak, "a worker still answers v=1"
        counter = redis.Redis.from_url(redis_server.url)
        try:
            assert int(counter.get(f"{namespace}:version:/version/1") or 0) == 2
        finally:
            counter.close()


def teardown_module() -> None:
    if DELAYS:
        ordered = sorted(DELAYS)
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        print(
            f"\nnear cache propagation over {len(ordered)} changes: "
            f"p50 {statistics.median(ordered) * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms, "
            f"max {ordered[-1] * 1000:.2f} ms (pid {os.getpid()})"
        )
