"""A process that takes a URL's fill lock through the middleware, then hangs in the app.

``python -m tests.fill_owner URL NAMESPACE COALESCE_TIMEOUT PATH`` sends one GET for
``PATH`` through a ``CacheMiddleware`` over ``RedisCache.from_url(URL)``; the app prints
``filling`` once it is called (the middleware holds the fill lock by then, with its own TTL)
and never answers. A test kills the process there, as a worker dies mid-fill: the lock is
neither released nor renewed again.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import httpx

from redis_cache_middleware import CacheMiddleware, RedisCache


async def hang(scope: dict[str, Any], receive: Any, send: Any) -> None:
    print("filling", flush=True)
    await asyncio.Event().wait()


async def main(url: str, namespace: str, coalesce_timeout: float, path: str) -> None:
    cache = RedisCache.from_url(url, namespace=namespace)
    await cache.warm_up()
    app = CacheMiddleware(hang, cache=cache, default_ttl=60, coalesce_timeout=coalesce_timeout)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        await client.get(path)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]))
