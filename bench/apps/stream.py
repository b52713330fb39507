"""The streaming-memory app: 200 MiB in 64 KiB chunks (``BENCH_STREAM_CHUNK`` bytes, each a
fresh bytes object; ``BENCH_STREAM_CHUNKS`` of them).

``BENCH_STREAM_CACHE=1`` puts our ``CacheMiddleware`` in front (default ``max_body_size``);
``0`` serves it bare, as the baseline of what uvicorn and Starlette hold on their own.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ._common import NAMESPACE, REDIS_URL, TTL, calls_payload

CHUNK = int(os.environ.get("BENCH_STREAM_CHUNK", str(64 * 1024)))
CHUNKS = int(os.environ.get("BENCH_STREAM_CHUNKS", "3200"))


async def chunks() -> AsyncIterator[bytes]:
    for i in range(CHUNKS):
        yield bytes((i % 251,)) * CHUNK  # a new object each time


async def big(request: Request) -> Response:
    return StreamingResponse(chunks(), media_type="application/octet-stream")


async def calls(request: Request) -> Response:
    return JSONResponse(calls_payload(), headers={"cache-control": "no-store"})


app = Starlette(routes=[Route("/big", big), Route("/__bench/calls", calls)])

if os.environ.get("BENCH_STREAM_CACHE", "1") == "1":
    from redis_cache_middleware import CacheMiddleware, RedisCache

    cache = RedisCache.from_url(REDIS_URL, namespace=NAMESPACE)
    app.add_middleware(CacheMiddleware, cache=cache, default_ttl=TTL)
