"""Variant ``fastapi_cache2``: FastAPI with fastapi-cache2's ``@cache`` on the route (Redis).

Its documented set-up: ``FastAPICache.init(RedisBackend(redis.asyncio client))`` in the
lifespan, ``@cache(expire=60)`` under the route decorator. It caches the endpoint's return
value (not the HTTP response), so a hit still goes through FastAPI's serialisation.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from fastapi_cache import FastAPICache
from fastapi_cache.backends.redis import RedisBackend
from fastapi_cache.decorator import cache
from redis import asyncio as aioredis

from ._common import NAMESPACE, REDIS_URL, TTL, calls_payload, upstream


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    client = aioredis.from_url(REDIS_URL)
    FastAPICache.init(RedisBackend(client), prefix=NAMESPACE)
    yield
    await client.aclose()


app = FastAPI(lifespan=lifespan)


@app.get("/items/{item_id}")
@cache(expire=TTL)
async def item(item_id: int, q: str | None = None) -> dict[str, object]:
    return await upstream(item_id, q)


@app.get("/__bench/calls")
async def calls() -> JSONResponse:
    return JSONResponse(calls_payload(), headers={"cache-control": "no-store"})
