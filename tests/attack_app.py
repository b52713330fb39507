"""An app as real apps are, for attacks over a real uvicorn (``test_security.py``).

``/page`` reflects its canonical URL (``str(request.url)``), as apps do in a
``<link rel=canonical>``; ``/me`` greets the user its session cookie names. The middleware
runs with the README's quick-start settings (``default_ttl=60``, a purge token).

A module, not an in-process app, so that uvicorn imports it in its own process and raw bytes
(unescaped markup in a query) go through a real HTTP parser first; the in-process attack
tests use the ``Origin`` in ``test_security.py``.
"""

from __future__ import annotations

import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from redis_cache_middleware import CacheMiddleware, RedisCache


async def page(request: Request) -> Response:
    return HTMLResponse(f'<link rel="canonical" href="{request.url}">')


async def me(request: Request) -> Response:
    return HTMLResponse(f"hello {request.cookies.get('sid', 'anonymous')}")


cache = RedisCache.from_url(os.environ["REDIS_URL"], namespace=os.environ["E2E_NAMESPACE"])
app = Starlette(routes=[Route("/page", page), Route("/me", me), Route("/users/{rest:path}", me)])
app.add_middleware(
    CacheMiddleware, cache=cache, default_ttl=60, purge_token="a-token-of-sixteen-chars"
)
