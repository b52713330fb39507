"""The middleware's CPU per hit, in-process, from Redis and from the near cache.

``CacheMiddleware`` called directly as an ASGI app (no HTTP server) by 32 concurrent tasks,
1,000 hits each on one URL, as wrk's 32 connections do in ``run.py``'s hit runs: so that
concurrent lookups share one Redis call on the lane, as they do there. Prints the process's
CPU per hit without and with ``near_cache_bytes``, on uvloop when it is installed.

    python bench/near_cpu.py --url redis://127.0.0.1:6379/0
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from typing import Any

from cpu_hit import hit_scope

from redis_cache_middleware import CacheMiddleware, RedisCache

BODY = b"x" * 2000
TASKS = 32
HITS = 1000


async def origin(scope: Any, receive: Any, send: Any) -> None:
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(BODY)).encode()),
        (b"cache-control", b"max-age=60"),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": BODY})


async def receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def send(message: Any) -> None:
    return None


async def measure(url: str, near_cache_bytes: int) -> float:
    namespace = f"bench-near-cpu-{uuid.uuid4().hex[:8]}"
    cache = RedisCache.from_url(url, namespace=namespace, near_cache_bytes=near_cache_bytes)
    await cache.warm_up()
    app = CacheMiddleware(origin, cache=cache)
    for _ in range(3):  # stored, read from Redis (and kept), then a hit
        await app(hit_scope(), receive, send)

    async def worker() -> None:
        for _ in range(HITS):
            await app(hit_scope(), receive, send)
            await asyncio.sleep(0)

    started = time.process_time()
    await asyncio.gather(*(worker() for _ in range(TASKS)))
    per_hit = (time.process_time() - started) / (TASKS * HITS)
    assert cache.stats.hit >= TASKS * HITS
    assert (cache.stats.near_hit >= TASKS * HITS) == bool(near_cache_bytes)
    await cache.clear()
    await cache.aclose()
    return per_hit * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    try:
        import uvloop

        run: Any = uvloop.run
    except ImportError:
        run = asyncio.run
    for round_no in range(args.rounds):
        redis_us = run(measure(args.url, 0))
        near_us = run(measure(args.url, 2**24))
        print(f"round {round_no + 1}: from Redis {redis_us:.1f} us/hit, near {near_us:.1f} us/hit")


if __name__ == "__main__":
    main()
