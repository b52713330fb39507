"""The app ``bench/soak.py`` serves with uvicorn: a small catalogue behind ``CacheMiddleware``.

Routes (all on 127.0.0.1, started by the soak script):

- ``GET /items/{id}``: a ~1 KB JSON document after a 2 ms "upstream"; cacheable for
  ``SOAK_TTL`` seconds (``Cache-Control: max-age``), tagged ``item:{id}``.
- ``GET /lang/{id}``: the same, in the request's ``Accept-Language``: ``Vary:
  Accept-Language``, one stored variant per language.
- ``POST /items/{id}``: "updates" the item and answers 204; the middleware's
  ``invalidate_on_unsafe`` purges the cached ``GET /items/{id}`` before the answer leaves.
- ``POST /purge/{id}``: the app's own code purges by tag (``cache.purge_tag``), as an app
  would after a write that touches several URLs.
- ``GET /health``: ``no-store``.

Configuration from the environment: ``SOAK_REDIS_URL``, ``SOAK_TTL`` (seconds, default 5),
``SOAK_NODELAY`` (``1``, the default: work around uvicorn leaving TCP_NODELAY off with
``--workers``; see ``_nodelay_with_workers``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from redis_cache_middleware import CacheMiddleware, RedisCache


def _nodelay_with_workers() -> None:
    """Set TCP_NODELAY on uvicorn's client connections, which ``--workers N`` leaves off.

    With workers, uvicorn binds the listening socket itself with ``proto=0``; asyncio sets
    TCP_NODELAY only on sockets whose ``proto`` is ``IPPROTO_TCP``, so every accepted
    connection keeps Nagle's algorithm. A response written in two parts (headers, then
    body) then waits for the client's delayed ACK: ~40 ms on every keep-alive request after
    the first, whatever the app (a bare ASGI app shows it too). Not the cache's doing; set
    it here so that the soak measures the cache, not that stall.
    """
    import socket

    from uvicorn.protocols.http.h11_impl import H11Protocol

    protocols: list[type] = [H11Protocol]
    with contextlib.suppress(ImportError):
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        protocols.append(HttpToolsProtocol)
    for protocol in protocols:
        original = protocol.connection_made  # type: ignore[attr-defined]

        def connection_made(self: Any, transport: Any, _original: Any = original) -> None:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            _original(self, transport)

        protocol.connection_made = connection_made  # type: ignore[attr-defined]


if os.environ.get("SOAK_NODELAY", "1") == "1":
    _nodelay_with_workers()

REDIS_URL = os.environ.get("SOAK_REDIS_URL", "redis://127.0.0.1:6399/0")
TTL = int(os.environ.get("SOAK_TTL", "5"))
UPSTREAM_DELAY = 0.002

cache = RedisCache.from_url(REDIS_URL, namespace="soak")

GREETINGS = {"en": "Hello", "fr": "Bonjour", "de": "Hallo", "es": "Hola"}


def _document(item_id: int, lang: str = "en") -> bytes:
    return json.dumps(
        {
            "id": item_id,
            "name": f"{GREETINGS.get(lang, 'Hello')}, item {item_id}",
            "lang": lang,
            "description": f"Soak test document number {item_id}. " * 20,
            "price": (item_id % 997) + 0.99,
        },
        separators=(",", ":"),
    ).encode()


async def item(request: Request) -> Response:
    item_id = int(request.path_params["id"])
    if request.method == "POST":
        return Response(status_code=204)
    await asyncio.sleep(UPSTREAM_DELAY)
    return Response(
        _document(item_id),
        media_type="application/json",
        headers={"cache-control": f"max-age={TTL}", "surrogate-key": f"item:{item_id}"},
    )


async def lang(request: Request) -> Response:
    item_id = int(request.path_params["id"])
    language = request.headers.get("accept-language", "en")[:2]
    await asyncio.sleep(UPSTREAM_DELAY)
    return Response(
        _document(item_id, language),
        media_type="application/json",
        headers={
            "cache-control": f"max-age={TTL}",
            "vary": "Accept-Language",
            "surrogate-key": f"item:{item_id}",
        },
    )


async def purge(request: Request) -> Response:
    removed = await cache.purge_tag(f"item:{int(request.path_params['id'])}")
    return Response(
        json.dumps({"removed": removed}),
        media_type="application/json",
        headers={"cache-control": "no-store"},
    )


async def health(request: Request) -> Response:
    return Response(b"ok", headers={"cache-control": "no-store"})


@asynccontextmanager
async def lifespan(_: Starlette) -> AsyncIterator[None]:
    yield
    await cache.aclose()


app = Starlette(
    routes=[
        Route("/items/{id:int}", item, methods=["GET", "HEAD", "POST"]),
        Route("/lang/{id:int}", lang),
        Route("/purge/{id:int}", purge, methods=["POST"]),
        Route("/health", health),
    ],
    lifespan=lifespan,
)
app.add_middleware(CacheMiddleware, cache=cache, default_ttl=TTL)
