"""``cache_headers``: per-route settings as the headers the middleware honours.

Checked through the middleware on every backend: a FastAPI dependency, a decorator on
FastAPI and Starlette endpoints (async and sync, returning a model or a ``Response``), the
endpoint's own headers winning, and the arguments refused when the object is made.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from redis_cache_middleware import (
    CacheHeaders,
    CacheMiddleware,
    ConfigError,
    RedisCache,
    cache_headers,
)

from .helpers import TEST_TIMEOUT

pytestmark = pytest.mark.anyio

STORED = "redis-cache; fwd=uri-miss; fwd-status=200; stored"


class Item(BaseModel):
    """A return annotation FastAPI must resolve in this module (annotations are strings)."""

    name: str
    calls: int


def client_of(app: Any, cache: RedisCache, **options: Any) -> httpx.AsyncClient:
    app.add_middleware(CacheMiddleware, cache=cache, timeout=TEST_TIMEOUT, **options)
    transport = httpx.ASGITransport(app=app)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


def is_hit(response: httpx.Response) -> bool:
    return response.headers["cache-status"].startswith("redis-cache; hit; ttl=")


# -- what the headers say ----------------------------------------------------------------


def test_cache_control_in_a_fixed_order() -> None:
    headers = cache_headers(
        stale_if_error=600,
        stale_while_revalidate=30,
        s_maxage=300,
        max_age=60,
        public=True,
        tags=["products", "product:1", "products"],
        vary=["Accept-Language", "X-Tenant"],
    )
    assert headers.cache_control == (
        "public, max-age=60, s-maxage=300, stale-while-revalidate=30, stale-if-error=600"
    )
    assert headers.tags == ("products", "product:1")
    assert headers.vary == ("Accept-Language", "X-Tenant")
    assert cache_headers(no_store=True).cache_control == "no-store"
    assert cache_headers(tags=["t"]).cache_control is None
    assert cache_headers(max_age=0).cache_control == "max-age=0"


def test_apply_leaves_the_responses_own_headers() -> None:
    headers = cache_headers(max_age=60, tags=["a", "b"], vary=["Accept-Language", "X-Tenant"])
    response = Response(b"x", headers={"Cache-Control": "max-age=5", "Vary": "x-tenant"})
    response.headers.append("Surrogate-Key", "own")
    headers.apply(response)
    assert response.headers.getlist("cache-control") == ["max-age=5"]
    assert response.headers.getlist("surrogate-key") == ["own", "a b"]
    assert response.headers.getlist("vary") == ["x-tenant", "Accept-Language"]
    bare = Response(b"x")
    headers.apply(bare)
    assert bare.headers["cache-control"] == "max-age=60"
    assert bare.headers["vary"] == "Accept-Language, X-Tenant"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"max_age": -1}, "max_age: expected whole seconds >= 0 or None, got -1"),
        ({"s_maxage": 1.5}, "s_maxage: expected whole seconds"),
        ({"max_age": True}, "max_age: expected whole seconds"),
        ({"stale_while_revalidate": "30"}, "stale_while_revalidate: expected whole seconds"),
        ({"stale_if_error": -5}, "stale_if_error: expected whole seconds"),
        ({"public": 1, "max_age": 1}, "public: expected True or False"),
        ({"no_store": "yes"}, "no_store: expected True or False"),
        ({"no_store": True, "max_age": 60}, "no_store: cannot go with max_age"),
        ({"no_store": True, "public": True}, "no_store: cannot go with public"),
        ({"tags": "products"}, "tags: expected a list of strings, not one string"),
        ({"tags": 7}, "tags: expected a list of strings"),
        ({"tags": ["two words"]}, "tags: 'two words' is not 1-256 visible ASCII characters"),
        ({"tags": [""]}, "tags: '' is not"),
        ({"tags": ["caf\u00e9"]}, "tags: 'caf\u00e9' is not"),
        ({"tags": [3]}, "tags: 3 is not"),
        ({"tags": ["x" * 257]}, "tags: a tag has 1-256 characters"),
        ({"tags": [f"t{i}" for i in range(65)]}, "tags: at most 64 tags, got 65"),
        ({"vary": "Accept"}, "vary: expected a list of strings"),
        ({"vary": ["X Tenant"]}, "vary: 'X Tenant' is not a header name"),
        ({"vary": ["*"]}, "vary: '*' makes a response never match again"),
        ({}, "cache_headers: give at least one of"),
    ],
)
def test_bad_arguments_are_refused_naming_them(arguments: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        cache_headers(**arguments)
    assert str(caught.value).startswith(message)


# -- FastAPI: dependency and decorator, through the middleware ---------------------------


async def test_dependency_makes_a_route_cacheable_and_purgeable_by_tag(
    cache: RedisCache,
) -> None:
    calls = {"n": 0}
    app = FastAPI()
    products = cache_headers(max_age=60, tags=["products"])

    @app.get("/products/{pid}", dependencies=[Depends(products)])
    async def product(pid: int) -> Item:
        calls["n"] += 1
        return Item(name=f"product {pid}", calls=calls["n"])

    @app.get("/plain")
    async def plain() -> Item:
        calls["n"] += 1
        return Item(name="plain", calls=calls["n"])

    async with client_of(app, cache) as client:  # default_ttl None: only what routes mark
        first = await client.get("/products/1")
        assert first.headers["cache-status"] == STORED
        assert first.headers["cache-control"] == "max-age=60"
        assert "surrogate-key" not in first.headers  # for the cache only
        second = await client.get("/products/1")
        assert is_hit(second) and second.json() == first.json() == {"name": "product 1", "calls": 1}
        assert "no-ttl" in (await client.get("/plain")).headers["cache-status"]
        assert await cache.purge_tag("products") == 1
        third = await client.get("/products/1")
        assert third.headers["cache-status"] == STORED
        assert third.json()["calls"] == 3


async def test_router_dependency_covers_its_routes_and_the_route_can_override(
    cache: RedisCache,
) -> None:
    router = APIRouter(dependencies=[Depends(cache_headers(max_age=60, public=True))])

    @router.get("/a")
    async def a() -> dict[str, str]:
        return {"route": "a"}

    @router.get("/b")
    async def b(response: Response) -> dict[str, str]:
        response.headers["Cache-Control"] = "no-store"  # the endpoint's own word wins
        return {"route": "b"}

    app = FastAPI()
    app.include_router(router)
    async with client_of(app, cache) as client:
        assert (await client.get("/a")).headers["cache-control"] == "public, max-age=60"
        assert is_hit(await client.get("/a"))
        refused = await client.get("/b")
        assert refused.headers["cache-control"] == "no-store"
        assert refused.headers["cache-status"].endswith("detail=no-store")


async def test_decorator_on_async_sync_and_response_returning_endpoints(
    cache: RedisCache,
) -> None:
    calls = {"n": 0}
    app = FastAPI()
    per_tenant = cache_headers(s_maxage=30, vary=["X-Tenant"], tags=["items"])

    @app.get("/async/{number}")
    @per_tenant.decorate
    async def async_item(number: int, request: Request) -> Item:
        calls["n"] += 1
        return Item(name=f"{number} for {request.headers.get('x-tenant')}", calls=calls["n"])

    @app.get("/sync")
    @per_tenant.decorate
    def sync_item() -> Item:
        calls["n"] += 1
        return Item(name="sync", calls=calls["n"])

    @app.get("/response")
    @per_tenant.decorate
    async def response_item() -> JSONResponse:
        calls["n"] += 1
        return JSONResponse({"calls": calls["n"]})

    async with client_of(app, cache) as client:
        for path in ("/async/7", "/sync", "/response"):
            first = await client.get(path, headers={"X-Tenant": "a"})
            assert first.headers["cache-status"] == STORED, path
            assert first.headers["cache-control"] == "s-maxage=30"
            assert first.headers["vary"] == "X-Tenant"
            again = await client.get(path, headers={"X-Tenant": "a"})
            assert is_hit(again) and again.content == first.content, path
            other = await client.get(path, headers={"X-Tenant": "b"})
            assert "fwd=vary-miss" in other.headers["cache-status"], path
        assert calls["n"] == 6
        # FastAPI still reads the wrapped endpoint's parameters: `number` is an int.
        assert (await client.get("/async/seven")).status_code == 422
        assert calls["n"] == 6
        assert await cache.purge_tag("items") == 6


async def test_decorator_uses_the_endpoints_own_response_parameter(cache: RedisCache) -> None:
    app = FastAPI()

    @app.get("/own")
    @cache_headers(max_age=60, tags=["own"]).decorate
    async def own(response: Response) -> dict[str, str]:
        response.headers["Cache-Control"] = "max-age=5"
        return {"own": "yes"}

    async with client_of(app, cache) as client:
        first = await client.get("/own")
        assert first.headers["cache-control"] == "max-age=5"
        assert first.headers["cache-status"] == STORED
        [entry] = await cache.inspect_url("http://testserver/own")
        assert (entry.fresh_for, entry.tags) == (5, ("own",))


# -- Starlette ---------------------------------------------------------------------------


async def test_decorator_on_starlette_endpoints(cache: RedisCache) -> None:
    headers = cache_headers(max_age=60, tags=["s"])

    @headers.decorate
    async def page(request: Request) -> Response:
        return PlainTextResponse(f"page {request.path_params['n']}")

    @headers.decorate
    async def wrong(request: Request) -> Any:
        return {"not": "a response"}

    app = Starlette(routes=[Route("/page/{n}", page), Route("/wrong", wrong)])
    async with client_of(app, cache) as client:
        first = await client.get("/page/1")
        assert first.headers["cache-status"] == STORED
        assert is_hit(await client.get("/page/1"))
        with pytest.raises(TypeError, match="returned dict, not a Response"):
            await client.get("/wrong")
    assert isinstance(headers, CacheHeaders)
