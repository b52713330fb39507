"""Variant ``cashews``: FastAPI with cashews' ``@cache`` decorator on the route (Redis backend).

Its documented FastAPI set-up: ``cache.setup("redis://...")`` and ``@cache(ttl=...)`` under the
route decorator; like fastapi-cache2 it caches the return value, keyed on the arguments.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from cashews import cache
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from ._common import NAMESPACE, REDIS_URL, TTL, calls_payload, upstream

cache.setup(REDIS_URL, prefix="")


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    yield
    await cache.close()


app = FastAPI(lifespan=lifespan)


@app.get("/items/{item_id}")
@cache(ttl=f"{TTL}s", prefix=NAMESPACE)
async def item(item_id: int, q: str | None = None) -> dict[str, object]:
    return await upstream(item_id, q)


@app.get("/__bench/calls")
async def calls() -> JSONResponse:
    return JSONResponse(calls_payload(), headers={"cache-control": "no-store"})
