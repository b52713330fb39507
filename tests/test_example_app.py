"""The example app end to end: cached quotes spare the upstream, writes purge cached reads."""

from __future__ import annotations

import asyncio
import random
import re
import socket
import string
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import fakeredis
import httpx
import pytest
import redis.asyncio as redis_asyncio

from example_app import create_app
from example_app.__main__ import banner
from example_app.__main__ import main as example_main
from example_app.app import (
    BYPASS_HEADER,
    NAMESPACE,
    PURGE_PATH,
    TOKEN_VARIABLE,
    token_from_env,
)
from example_app.embedded import EmbeddedRedis, PortInUse
from redis_cache_middleware import ConfigError, RedisCache, cli

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


# -- the purge endpoint, the bypass header and the namespace ------------------------------

TOKEN = "example-test-token-0123456789"


async def test_purge_endpoint_and_bypass_header_take_the_token() -> None:
    redis = fakeredis.FakeAsyncRedis()
    cache = RedisCache(redis, namespace=f"example-test-{uuid.uuid4().hex[:12]}")
    app = create_app(cache, token=TOKEN, upstream_latency=0.01)
    assert app.state.token == TOKEN
    await cache.warm_up()
    await redis.eval("return 1", 0)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
            index = (await client.get("/")).json()
            assert index["namespace"] == NAMESPACE == "example"
            assert f"POST {PURGE_PATH}" in index["endpoints"]
            await client.get("/quotes/ACME")
            # The bypass header with a wrong value is no bypass: a hit.
            wrong = await client.get("/quotes/ACME", headers={BYPASS_HEADER: "guess"})
            assert wrong.headers["cache-status"].startswith("redis-cache; hit")
            bypass = await client.get("/quotes/ACME", headers={BYPASS_HEADER: TOKEN})
            assert bypass.headers["cache-status"] == (
                "redis-cache; fwd=bypass; fwd-status=200; stored"
            )
            assert await upstream_calls(client) == 2
            refused = await client.request("PURGE", "/quotes/ACME")
            assert refused.status_code == 401
            purged = await client.request(
                "PURGE", "/quotes/ACME", headers={"Authorization": f"Bearer {TOKEN}"}
            )
            assert purged.json() == {"purged": 1}
            await client.get("/users/1")
            by_prefix = await client.post(
                PURGE_PATH,
                json={"prefixes": ["/users"]},
                headers={"Authorization": f"Bearer {TOKEN}"},
            )
            assert by_prefix.json() == {"purged": 1}
            after = await client.get("/quotes/ACME")
            assert after.headers["cache-status"].startswith("redis-cache; fwd=uri-miss")
    finally:
        await cache.aclose()
        await redis.aclose()


def test_token_comes_from_the_environment_or_is_made_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_VARIABLE, TOKEN)
    assert token_from_env() == TOKEN
    monkeypatch.setenv(TOKEN_VARIABLE, "")
    made_up = token_from_env()
    assert len(made_up) >= 16 and made_up != token_from_env()
    monkeypatch.setenv(TOKEN_VARIABLE, "short")
    with pytest.raises(ConfigError, match=r"^token \(CACHE_PURGE_TOKEN\): at least 16 char"):
        create_app(RedisCache(fakeredis.FakeAsyncRedis(), namespace="example"))


# -- python -m example_app: its Redis stand-in is reachable from outside ------------------


def test_embedded_redis_is_reachable_by_url_from_another_client(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with EmbeddedRedis(port=0) as embedded:
        assert embedded.port != 0
        assert embedded.url == f"redis://127.0.0.1:{embedded.port}/0"

        async def fill_and_look() -> int:
            cache = RedisCache.from_url(embedded.url, namespace=NAMESPACE)
            app = create_app(cache, token=TOKEN, upstream_latency=0.01)
            # What the lifespan's warm-up does (ASGITransport runs no lifespan), and a first
            # script: fakeredis over TCP in a thread, with a cold Lua runtime, can otherwise
            # miss the example's 100 ms Redis timeout on a loaded machine.
            await cache.warm_up()
            await cache.client.eval("return 1", 0)
            transport = httpx.ASGITransport(app=app)
            try:
                async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
                    first = await client.get("/quotes/ACME")
                    assert first.headers["cache-status"].endswith("; stored")
            finally:
                await cache.aclose()
            # Another client, as another process would open it.
            async with RedisCache.from_url(embedded.url, namespace=NAMESPACE) as reader:
                return len(await reader.inspect_url(f"{BASE_URL}/quotes/ACME"))

        assert asyncio.run(fill_and_look()) == 1
        assert cli.main(["--redis-url", embedded.url, "--namespace", NAMESPACE, "stats"]) == 0
        assert re.search(r"^entries +1$", capsys.readouterr().out, re.M)
    # Stopped: nothing listens there any more.
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", embedded.port)) != 0


def test_a_taken_port_is_said_plainly(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PortInUse, match=f"127.0.0.1:{port} is taken"):
            EmbeddedRedis(port).start()
        monkeypatch.delenv("REDIS_URL", raising=False)
        with pytest.raises(SystemExit) as stopped:
            example_main(["--port", "0", "--redis-port", str(port)])
        assert "pass --redis-port 0" in str(stopped.value.code)


def test_banner_says_where_everything_is() -> None:
    text = banner(
        host="127.0.0.1",
        port=8000,
        redis_url="redis://127.0.0.1:6399/0",
        embedded=True,
        token=TOKEN,
    )
    assert "namespace   example" in text
    assert "redis://127.0.0.1:6399/0 (fakeredis in this process" in text
    assert f"X-Cache-Bypass: {TOKEN}" in text
    assert text.endswith(f"export REDIS_URL=redis://127.0.0.1:6399/0 TOKEN={TOKEN}")
    # A token from the environment is not printed, nor a Redis password.
    chosen = banner(
        host="0.0.0.0", port=80, redis_url="redis://u:secret@db:6379/0", embedded=False, token=None
    )
    assert "secret" not in chosen and "<the token>" in chosen
    assert "redis://u:***@db:6379/0 (from REDIS_URL)" in chosen


@pytest.mark.parametrize("backend", ["fakeredis", "redis"])
async def test_localhost_and_127_0_0_1_are_one_site_when_declared(
    backend: str, redis_server: RedisServer
) -> None:
    # What ``python -m example_app`` declares: the newcomer's trial, where a PUT through
    # 127.0.0.1 left the localhost copy stale, now reaches both spellings.
    redis: Any = (
        fakeredis.FakeAsyncRedis()
        if backend == "fakeredis"
        else redis_asyncio.Redis.from_url(redis_server.url)
    )
    cache = RedisCache(redis, namespace=f"example-test-{uuid.uuid4().hex[:12]}")
    app = create_app(
        cache,
        token=TOKEN,
        upstream_latency=0.01,
        host_aliases={"localhost:8000": "127.0.0.1:8000"},
    )
    transport = httpx.ASGITransport(app=app)
    try:
        async with (
            httpx.AsyncClient(transport=transport, base_url="http://localhost:8000") as local,
            httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as loop,
        ):
            assert "stored" in (await local.get("/users/1")).headers["cache-status"]
            assert "hit" in (await loop.get("/users/1")).headers["cache-status"]
            new = {"name": "Ada King", "email": "ada.king@example.com"}
            assert (await loop.put("/users/1", json=new)).status_code == 200
            after = await local.get("/users/1")
            assert "hit" not in after.headers["cache-status"]
            assert after.json() == {"id": 1, **new}
    finally:
        await cache.aclose()
        await redis.aclose()
