"""Variant ``litestar``: Litestar's built-in response cache, kept in a Redis store.

Its documented way: a ``RedisStore`` registered under a name in ``stores``, a
``ResponseCacheConfig(store=that name, default_expiration=60)``, and ``cache=True`` on the
route. It caches the whole HTTP response, keyed on method, path and sorted query.
"""

from __future__ import annotations

from litestar import Litestar, Response, get
from litestar.config.response_cache import ResponseCacheConfig
from litestar.stores.redis import RedisStore

from ._common import NAMESPACE, REDIS_URL, TTL, calls_payload, upstream

redis_store = RedisStore.with_client(url=REDIS_URL, namespace=NAMESPACE)


@get("/items/{item_id:int}", cache=True)
async def item(item_id: int, q: str | None = None) -> dict[str, object]:
    return await upstream(item_id, q)


@get("/__bench/calls", cache=False)
async def calls() -> Response[dict[str, object]]:
    return Response(calls_payload(), headers={"cache-control": "no-store"})


app = Litestar(
    route_handlers=[item, calls],
    stores={"redis_backed_store": redis_store},
    response_cache_config=ResponseCacheConfig(store="redis_backed_store", default_expiration=TTL),
)
