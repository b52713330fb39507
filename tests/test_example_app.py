"""The example app end to end: cached quotes spare the upstream, writes purge cached reads."""

from __future__ import annotations

import random
import string
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import fakeredis
import httpx
import pytest

from example_app import create_app
from example_app.app import NAMESPACE
from redis_cache_middleware import RedisCache

from .conftest import RedisServer

pytestmark = pytest.mark.anyio

BASE_URL = "http://127.0.0.1:8000"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def app_client(
    *, rate_limit_calls: int = 5, rate_limit_period: float = 1.0
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a fresh example app, caching in its own namespace of a fakeredis."""
    redis = fakeredis.FakeAsyncRedis()
    cache = RedisCache(redis, namespace=f"example-test-{uuid.uuid4().hex[:12]}")
    app = create_app(
        cache,
        upstream_latency=0.01,
        rate_limit_calls=rate_limit_calls,
        rate_limit_period=rate_limit_period,
    )
    # What the lifespan's warm-up does, and a first script call: the example keeps the
    # product's 100 ms Redis timeout, which a cold Lua runtime on a loaded machine can miss.
    await cache.warm_up()
    await redis.eval("return 1", 0)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
            yield client
    finally:
        await cache.aclose()
        await redis.aclose()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with app_client() as c:
        yield c


async def upstream_calls(client: httpx.AsyncClient) -> int:
    response = await client.get("/upstream-calls")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    assert "stored" not in response.headers.get("cache-status", "")
    return int(response.json()["calls"])


async def test_index_lists_endpoints(client: httpx.AsyncClient) -> None:
    response = await client.get("/")
    assert response.status_code == 200
    endpoints = response.json()["endpoints"]
    assert "GET /quotes/{symbol}" in endpoints
    assert "PUT /users/{user_id}" in endpoints


async def check_quote_miss_then_hit(client: httpx.AsyncClient, symbol: str, other: str) -> None:
    """The first quote is a stored miss, the second a hit the upstream never sees."""
    assert await upstream_calls(client) == 0

    first = await client.get(f"/quotes/{symbol}")
    assert first.status_code == 200
    assert first.headers["cache-control"] == "public, max-age=10"
    assert first.headers["cache-status"] == "redis-cache; fwd=uri-miss; fwd-status=200; stored"
    assert "age" not in first.headers
    assert await upstream_calls(client) == 1
    quote = first.json()
    assert quote["symbol"] == symbol
    assert quote["price"] > 0

    second = await client.get(f"/quotes/{symbol}")
    assert second.status_code == 200
    assert second.headers["cache-status"] in ("redis-cache; hit; ttl=10", "redis-cache; hit; ttl=9")
    assert second.headers["age"] in ("0", "1")
    assert second.headers["cache-control"] == "public, max-age=10"
    assert second.content == first.content
    assert await upstream_calls(client) == 1

    # Another symbol is another URL: a miss that reaches the upstream.
    lower = await client.get(f"/quotes/{other.lower()}")
    assert lower.status_code == 200
    assert lower.json()["symbol"] == other
    assert lower.headers["cache-status"] == "redis-cache; fwd=uri-miss; fwd-status=200; stored"
    assert await upstream_calls(client) == 2


async def test_quote_is_a_miss_then_a_hit(client: httpx.AsyncClient) -> None:
    await check_quote_miss_then_hit(client, "AAPL", "MSFT")


async def test_quote_is_a_miss_then_a_hit_in_real_redis(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    app = create_app(upstream_latency=0.01)  # its cache comes from REDIS_URL
    cache = app.state.cache
    assert not isinstance(cache.client, fakeredis.FakeAsyncRedis)
    # The app's namespace is fixed: symbols of their own keep runs sharing a server apart.
    symbol, other = ("".join(random.choices(string.ascii_uppercase, k=10)) for _ in range(2))
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
            await check_quote_miss_then_hit(client, symbol, other)
        # The entry lives in that server: a cache of its own finds it there.
        async with RedisCache.from_url(redis_server.url, namespace=NAMESPACE) as reader:
            [entry] = await reader.inspect_url(f"{BASE_URL}/quotes/{symbol}")
        assert (entry.status, entry.fresh_for) == (200, 10)
    finally:
        await cache.aclose()


@pytest.mark.parametrize("symbol", ["TOOLONGSYMBOL", "AB1", "A-B"])
async def test_invalid_symbol_is_rejected(client: httpx.AsyncClient, symbol: str) -> None:
    response = await client.get(f"/quotes/{symbol}")
    assert response.status_code in (404, 422)
    assert await upstream_calls(client) == 0


async def test_upstream_rate_limit_answers_429_uncached() -> None:
    async with app_client(rate_limit_calls=2, rate_limit_period=60.0) as client:
        assert (await client.get("/quotes/AAA")).status_code == 200
        assert (await client.get("/quotes/BBB")).status_code == 200
        limited = await client.get("/quotes/CCC")
        assert limited.status_code == 429
        assert int(limited.headers["retry-after"]) >= 1
        assert "stored" not in limited.headers.get("cache-status", "")
        # Cached quotes are still served while the upstream is out of budget.
        assert "hit" in (await client.get("/quotes/AAA")).headers["cache-status"]
        assert await upstream_calls(client) == 2


async def test_put_purges_the_cached_user(client: httpx.AsyncClient) -> None:
    first = await client.get("/users/1")
    assert first.status_code == 200
    assert "stored" in first.headers["cache-status"]
    cached = await client.get("/users/1")
    assert "hit" in cached.headers["cache-status"]
    assert cached.json() == first.json()
    listed = await client.get("/users")
    assert "stored" in listed.headers["cache-status"]

    new = {"name": "Ada King", "email": "ada.king@example.com"}
    put = await client.put("/users/1", json=new)
    assert put.status_code == 200
    assert put.json() == {"id": 1, **new}

    after = await client.get("/users/1")
    assert after.status_code == 200
    assert after.json() == {"id": 1, **new}
    assert "hit" not in after.headers["cache-status"]
    users = (await client.get("/users")).json()
    assert {"id": 1, **new} in users


async def test_post_and_delete_purge(client: httpx.AsyncClient) -> None:
    # A 404 is cached too; creating the user must purge it.
    missing = await client.get("/users/4")
    assert missing.status_code == 404
    assert "hit" in (await client.get("/users/4")).headers["cache-status"]
    before = (await client.get("/users")).json()

    created = await client.post("/users", json={"name": "Edsger", "email": "ed@example.com"})
    assert created.status_code == 201
    assert created.headers["location"] == f"{BASE_URL}/users/4"
    assert (await client.get("/users/4")).json()["name"] == "Edsger"
    assert len((await client.get("/users")).json()) == len(before) + 1

    deleted = await client.delete("/users/4")
    assert deleted.status_code == 204
    assert (await client.get("/users/4")).status_code == 404
    assert len((await client.get("/users")).json()) == len(before)


async def test_invalid_user_body_is_rejected(client: httpx.AsyncClient) -> None:
    response = await client.post("/users", json={"name": "", "email": "nope"})
    assert response.status_code == 422
