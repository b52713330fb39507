"""The app the end-to-end tests serve with uvicorn (configured by environment variables).

For caching over real HTTP and across worker processes (``test_e2e_uvicorn.py``,
``test_coalesce.py``, ``test_security_entries.py``): a module so that uvicorn imports it in
each worker, and ``/slow`` counts its calls in Redis so that a test sees every worker's.
Hostile input over uvicorn goes to ``tests/attack_app.py``; in-process tests use
``helpers.Origin``.
"""

from __future__ import annotations

import asyncio
import os

import redis.asyncio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from redis_cache_middleware import CacheMiddleware, RedisCache

NAMESPACE = os.environ["E2E_NAMESPACE"]
DELAY = float(os.environ.get("E2E_DELAY", "0"))
calls = {"n": 0}
counter = redis.asyncio.Redis.from_url(os.environ["REDIS_URL"])


async def item(request: Request) -> Response:
    calls["n"] += 1
    return JSONResponse(
        {"id": request.path_params["id"], "q": request.query_params.get("q"), "pid": os.getpid()},
        headers={"cache-control": "max-age=30"},
    )


async def slow(request: Request) -> Response:
    # Counted in Redis so that a test sees the calls of every worker process.
    await counter.incr(f"{NAMESPACE}:calls:{request.url.path}")
    await asyncio.sleep(DELAY)
    return JSONResponse({"pid": os.getpid()}, headers={"cache-control": "max-age=30"})


async def count(request: Request) -> Response:
    return JSONResponse({"calls": calls["n"]}, headers={"cache-control": "no-store"})


async def version(request: Request) -> Response:
    # A number kept in Redis, bumped on each call of any worker: which fill a hit replays.
    number = await counter.incr(f"{NAMESPACE}:version:{request.url.path}")
    return JSONResponse({"v": number}, headers={"cache-control": "max-age=300"})


cache = RedisCache.from_url(
    os.environ["REDIS_URL"],
    namespace=NAMESPACE,
    near_cache_bytes=int(os.environ.get("E2E_NEAR_BYTES", "0")),
)
app = Starlette(
    routes=[
        Route("/items/{id}", item),
        Route("/slow/{id}", slow),
        Route("/calls", count),
        Route("/version/{id}", version),
    ]
)
app.add_middleware(CacheMiddleware, cache=cache, purge_token=os.environ.get("E2E_PURGE_TOKEN"))
