"""The CPU a hit and a miss of ``ours`` cost in-process: the middleware called directly as an
ASGI app (no HTTP server) against the real redis-server on uvloop, with redis-py alone
sending the lookup's commands for scale, and a cProfile of each; also the hit request's ASGI
scope, which the other in-process measurements reuse.
"""

from __future__ import annotations

import asyncio
import cProfile
import io
import json
import pstats
import time
from typing import Any

from procs import RedisServer


def hit_scope() -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/items/42",
        "raw_path": b"/items/42",
        "query_string": b"q=hot",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"user-agent", b"wrk/4.1.0"),
            (b"accept", b"*/*"),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


async def _cpu_per_hit(redis_url: str, n: int, profile_n: int, misses: int) -> dict[str, object]:
    from apps._common import make_document
    from redis.asyncio import Redis

    from redis_cache_middleware import CacheMiddleware, RedisCache

    body = json.dumps(make_document(42, "hot")).encode()
    app_calls = {"n": 0}

    async def origin(scope: Any, receive: Any, send: Any) -> None:
        app_calls["n"] += 1
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    cache = RedisCache.from_url(redis_url, namespace="micro")
    middleware = CacheMiddleware(origin, cache=cache, default_ttl=60)
    template = hit_scope()
    sent = {"n": 0, "bytes": 0}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent["n"] += 1
        if message["type"] == "http.response.body":
            sent["bytes"] += len(message.get("body", b""))

    async def one() -> None:
        scope = dict(template)
        scope["headers"] = list(template["headers"])
        await middleware(scope, receive, send)

    await one()  # miss: stores
    for _ in range(500):  # warm: connections, caches, branch history
        await one()
    if app_calls["n"] != 1:
        raise RuntimeError(f"the microbenchmark's hits reached the app ({app_calls['n']} calls)")

    def timed() -> tuple[float, float]:
        return time.process_time(), time.perf_counter()

    c0, w0 = timed()
    for _ in range(n):
        await one()
    c1, w1 = timed()
    hits_ok = app_calls["n"] == 1

    # The same round trip with redis-py alone: what the lookup costs before any of our code.
    raw = Redis.from_url(redis_url)
    key_gen = "micro:gen"
    key = b"micro:missing"
    async for candidate in raw.scan_iter(match="micro:*"):
        if await raw.type(candidate) == b"hash" and await raw.hexists(candidate, "body"):
            key = candidate  # the stored entry: what the lookup's HGETALL reads
            break
    for _ in range(200):
        async with raw.pipeline(transaction=False) as pipe:
            pipe.get(key_gen)
            pipe.hgetall(key)
            await pipe.execute()
    r0, rw0 = timed()
    for _ in range(n):
        async with raw.pipeline(transaction=False) as pipe:
            pipe.get(key_gen)
            pipe.hgetall(key)
            await pipe.execute()
    r1, rw1 = timed()
    s0, sw0 = timed()
    for _ in range(n):
        await raw.hgetall(key)
    s1, sw1 = timed()
    await raw.aclose()

    # A profile of a shorter run, for whoever optimises the hit path.
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(profile_n):
        await one()
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)

    # Misses: a new query each time, the origin answering at once (no 20 ms sleep), so this
    # is the middleware's own cost of a miss: lookup, fill lock, capture, store.
    async def one_miss(i: int) -> None:
        scope = dict(template)
        scope["headers"] = list(template["headers"])
        scope["query_string"] = f"q=cpu-miss-{i}".encode()
        await middleware(scope, receive, send)

    for i in range(50):
        await one_miss(-1 - i)
    calls0 = app_calls["n"]
    m0, mw0 = timed()
    for i in range(misses):
        await one_miss(i)
    m1, mw1 = timed()
    miss_calls = app_calls["n"] - calls0
    await asyncio.sleep(0.2)  # let any background work finish before profiling
    miss_profiler = cProfile.Profile()
    miss_profiler.enable()
    for i in range(misses, misses + min(misses, 1000)):
        await one_miss(i)
    miss_profiler.disable()
    miss_out = io.StringIO()
    pstats.Stats(miss_profiler, stream=miss_out).sort_stats("tottime").print_stats(25)
    await cache.aclose()
    return {
        "hits": n,
        "hits_served_from_cache": hits_ok,
        "cpu_us_per_hit": round((c1 - c0) / n * 1e6, 2),
        "wall_us_per_hit": round((w1 - w0) / n * 1e6, 2),
        "redis_py_pipeline_get_hgetall_cpu_us": round((r1 - r0) / n * 1e6, 2),
        "redis_py_pipeline_get_hgetall_wall_us": round((rw1 - rw0) / n * 1e6, 2),
        "redis_py_single_hgetall_cpu_us": round((s1 - s0) / n * 1e6, 2),
        "redis_py_single_hgetall_wall_us": round((sw1 - sw0) / n * 1e6, 2),
        "misses": misses,
        "miss_origin_calls": miss_calls,
        "cpu_us_per_miss": round((m1 - m0) / misses * 1e6, 2),
        "wall_us_per_miss": round((mw1 - mw0) / misses * 1e6, 2),
        "body_bytes": len(body),
        "profile_hits": profile_n,
        "profile": out.getvalue(),
        "profile_miss": miss_out.getvalue(),
    }


def cpu_per_hit(
    redis_server: RedisServer, cpus: list[int] | None, n: int, profile_n: int, misses: int
) -> dict[str, object]:
    """Microbenchmark: our middleware called directly (no HTTP server): hits, then misses."""
    import os

    client = redis_server.client()
    client.flushall()
    client.close()
    old = os.sched_getaffinity(0)
    if cpus:
        os.sched_setaffinity(0, cpus)
    try:
        try:
            import uvloop

            loop_factory = uvloop.new_event_loop
            loop_name = "uvloop"
        except ImportError:  # pragma: no cover
            loop_factory = None
            loop_name = "asyncio"
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            result = runner.run(_cpu_per_hit(redis_server.url, n, profile_n, misses))
    finally:
        os.sched_setaffinity(0, old)
    result["loop"] = loop_name
    return result
