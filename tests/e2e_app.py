"""The app the end-to-end test serves with uvicorn (configured by environment variables)."""

from __future__ import annotations

import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from redis_cache_middleware import CacheMiddleware, RedisCache

calls = {"n": 0}


async def item(request: Request) -> Response:
    calls["n"] += 1
    return JSONResponse(
        {"id": request.path_params["id"], "q": request.query_params.get("q"), "pid": os.getpid()},
        headers={"cache-control": "max-age=30"},
    )


async def count(request: Request) -> Response:
    return JSONResponse({"calls": calls["n"]}, headers={"cache-control": "no-store"})


cache = RedisCache.from_url(os.environ["REDIS_URL"], namespace=os.environ["E2E_NAMESPACE"])
app = Starlette(routes=[Route("/items/{id}", item), Route("/calls", count)])
app.add_middleware(CacheMiddleware, cache=cache)
