"""Variant ``ours_outer``: ``ours_near`` with the middleware wrapped around the whole FastAPI
app (``CacheMiddleware(app, ...)``, as the README's "Fastest hits" shows) instead of added
with ``add_middleware``: a hit is answered before FastAPI's own outer layers run.

The counter route answers ``no-store``, so the middleware passes it through uncached.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from redis_cache_middleware import CacheMiddleware, RedisCache

from ._common import NAMESPACE, REDIS_URL, TTL, calls_payload, upstream

cache = RedisCache.from_url(REDIS_URL, namespace=NAMESPACE, near_cache_bytes=64 * 2**20)


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    yield
    await cache.aclose()


api = FastAPI(lifespan=lifespan)


@api.get("/items/{item_id}")
async def item(item_id: int, q: str | None = None) -> dict[str, object]:
    return await upstream(item_id, q)


@api.get("/__bench/calls")
async def calls() -> JSONResponse:
    return JSONResponse(calls_payload(), headers={"cache-control": "no-store"})


app = CacheMiddleware(api, cache=cache, default_ttl=TTL)
