"""CPU per hit in-process with each way of bounding a Redis call (``_timeouts.run_bounded``):
in the request's task, or in a task of its own (``RedisCache.isolate_calls``, used on Python
< 3.12 for clients with a socket timeout). The client has redis-py's default 5 s socket
timeout in both, so that only the bound differs. Rounds interleaved; prints JSON.

    python bench/isolation.py [--redis-url redis://127.0.0.1:6379/0] [--hits 20000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from typing import Any

from cpu_hit import hit_scope as scope  # the hit request cpu_hit.py times
from redis.asyncio import Redis

from redis_cache_middleware import CacheMiddleware, RedisCache

BODY = b'{"id": 42}' * 200


async def origin(scope: Any, receive: Any, send: Any) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(BODY))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": BODY})


async def receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def send(message: dict[str, Any]) -> None:
    return None


async def cpu_per_hit(middleware: CacheMiddleware, hits: int) -> float:
    for _ in range(500):  # warm up (the first one stores)
        await middleware(scope(), receive, send)
    started = time.process_time()
    for _ in range(hits):
        await middleware(scope(), receive, send)
    return (time.process_time() - started) / hits * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--hits", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--only",
        choices=["in-task", "own-task"],
        help="run one way only (for an instruction count under valgrind --tool=callgrind)",
    )
    args = parser.parse_args()
    client = Redis.from_url(args.redis_url, socket_timeout=5)
    results: dict[str, list[float]] = {"in-task": [], "own-task": []}
    try:
        for i in range(args.rounds):
            order = list(results) if i % 2 == 0 else list(reversed(results))
            for name in order:
                if args.only and name != args.only:
                    continue
                cache = RedisCache(client, namespace=f"iso-{uuid.uuid4().hex[:8]}")
                cache.isolate_calls = name == "own-task"
                middleware = CacheMiddleware(origin, cache=cache, default_ttl=60)
                results[name].append(await cpu_per_hit(middleware, args.hits))
                if cache.stats.hit < args.hits or cache.stats.redis_error:
                    raise SystemExit(f"{name}: not all hits ({cache.stats.snapshot()})")
    finally:
        await client.aclose()
    results = {name: v for name, v in results.items() if v}
    summary: dict[str, Any] = {
        name: {
            "median_us": round(statistics.median(v), 1),
            "min_us": round(min(v), 1),
            "max_us": round(max(v), 1),
        }
        for name, v in results.items()
    }
    if len(results) == 2:
        summary["own_task_extra_us"] = round(
            summary["own-task"]["median_us"] - summary["in-task"]["median_us"], 1
        )
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
