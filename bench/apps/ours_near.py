"""Variant ``ours_near``: ``ours`` with a 64 MiB near cache (``near_cache_bytes``): hot hits
from process memory, kept coherent by Redis's client-side caching.

Set up exactly as the project's README says; the counter route answers ``no-store``, so the
middleware passes it through uncached.
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


app = FastAPI(lifespan=lifespan)
app.add_middleware(CacheMiddleware, cache=cache, default_ttl=TTL)


@app.get("/items/{item_id}")
async def item(item_id: int, q: str | None = None) -> dict[str, object]:
    return await upstream(item_id, q)


@app.get("/__bench/calls")
async def calls() -> JSONResponse:
    return JSONResponse(calls_payload(), headers={"cache-control": "no-store"})
