"""Admin calls and start-up: bounded without a socket timeout, warm before the first request."""

from __future__ import annotations

import gc
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from redis_cache_middleware import CacheMiddleware, RedisCache
from redis_cache_middleware.exceptions import ConfigError

from .conftest import RedisServer, free_port
from .helpers import TEST_TIMEOUT
from .tcp_proxy import TcpProxy

pytestmark = pytest.mark.anyio


@pytest.fixture
async def proxy(redis_server: RedisServer) -> AsyncIterator[TcpProxy]:
    port = redis_server.port or int(redis_server.url.rsplit(":", 1)[1].split("/")[0])
    async with TcpProxy(port) as p:
        yield p


def test_from_url_has_no_socket_timeout_by_default_and_still_checks_one() -> None:
    cache = RedisCache.from_url("redis://127.0.0.1:1/0")
    kwargs = cache.client.connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] is None
    assert kwargs["socket_connect_timeout"] == 0.5
    assert cache.admin_timeout == 5.0
    bounded = RedisCache.from_url("redis://127.0.0.1:1/0", socket_timeout=0.25)
    assert bounded.client.connection_pool.connection_kwargs["socket_timeout"] == 0.25
    for bad in (0, -1, float("nan"), True, "1"):
        with pytest.raises(ConfigError, match="socket_timeout"):
            RedisCache.from_url("redis://127.0.0.1:1/0", socket_timeout=bad)
    for bad in (0, -1, float("inf"), True, "1"):
        with pytest.raises(ConfigError, match="admin_timeout"):
            RedisCache.from_url("redis://127.0.0.1:1/0", admin_timeout=bad)


async def test_admin_calls_are_bounded_on_a_blackholed_redis(proxy: TcpProxy) -> None:
    # No socket timeout: without admin_timeout a purge would wait for ever.
    async with RedisCache.from_url(
        f"redis://127.0.0.1:{proxy.port}/0", namespace="adm", admin_timeout=0.3
    ) as cache:
        assert await cache.warm_up()  # connected while the proxy still passes bytes
        proxy.mode = "blackhole"
        calls: list[Any] = [
            lambda: cache.purge_url("http://example.com/a"),
            lambda: cache.purge_tag("t"),
            lambda: cache.purge_prefix("/a", host="example.com"),
            lambda: cache.inspect_url("http://example.com/a"),
            lambda: cache.scan_stats(),
            lambda: cache.clear(),
        ]
        for call in calls:
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                await call()
            assert time.monotonic() - started < 0.3 + 0.5


async def test_warm_up_reads_the_generation_and_reports_a_dead_redis(
    redis_client: Any, namespace: str
) -> None:
    cache = RedisCache(redis_client, namespace=namespace)
    await redis_client.set(f"{namespace}:gen", 7)
    assert await cache.warm_up()
    assert cache.generation == 7
    dead = RedisCache.from_url(f"redis://127.0.0.1:{free_port()}/0", namespace=namespace)
    started = time.monotonic()
    assert not await dead.warm_up(timeout=0.5)
    assert time.monotonic() - started < 1.5
    await dead.aclose()


async def test_lifespan_startup_warms_the_cache_up(redis_client: Any, namespace: str) -> None:
    await redis_client.set(f"{namespace}:gen", 3)
    cache = RedisCache(redis_client, namespace=namespace)
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "lifespan"
        while True:
            message = await receive()
            seen.append(message["type"])
            if message["type"] == "lifespan.startup":
                # The middleware warmed up before the app saw startup.
                assert cache.generation == 3
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return

    messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])

    async def receive() -> Any:
        return next(messages)

    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    middleware = CacheMiddleware(app, cache=cache)
    await middleware({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)
    assert seen == ["lifespan.startup", "lifespan.shutdown"]
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


@pytest.mark.parametrize("freeze_gc", [True, False])
async def test_startup_heap_is_frozen_once_the_app_has_started(
    redis_client: Any, namespace: str, freeze_gc: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from redis_cache_middleware import middleware as middleware_module

    monkeypatch.setattr(middleware_module, "_frozen", False)
    gc.unfreeze()
    cache = RedisCache(redis_client, namespace=namespace)
    frozen_at_startup: list[int] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                # Not yet: the app's own startup objects are made before it says complete.
                frozen_at_startup.append(gc.get_freeze_count())
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def run_lifespan() -> None:
        messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])

        async def receive() -> Any:
            return next(messages)

        async def send(message: Any) -> None:
            pass

        middleware = CacheMiddleware(app, cache=cache, freeze_gc=freeze_gc)
        await middleware({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)

    try:
        await run_lifespan()
        assert frozen_at_startup == [0]
        frozen = gc.get_freeze_count()
        assert (frozen > 0) is freeze_gc
        # Once a process: a second app (or middleware) does not freeze again.
        await run_lifespan()
        assert gc.get_freeze_count() <= frozen  # frozen objects freed since go from the count
    finally:
        gc.unfreeze()


async def test_the_whole_app_wrapped_runs_its_lifespan_and_answers_hits_before_it(
    redis_client: Any, namespace: str
) -> None:
    """``CacheMiddleware(api, ...)`` around a whole FastAPI app (the README's fastest hits):
    FastAPI's own lifespan runs through it, and a hit never enters FastAPI."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI

    events: list[str] = []
    entered: list[str] = []

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> Any:
        events.append("startup")
        yield
        events.append("shutdown")

    api = FastAPI(lifespan=lifespan)

    @api.get("/item")
    async def item() -> dict[str, int]:
        return {"n": len(entered)}

    async def counting(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            entered.append(scope["path"])
        await api(scope, receive, send)

    cache = RedisCache(redis_client, namespace=namespace)
    app = CacheMiddleware(counting, cache=cache, default_ttl=60, timeout=TEST_TIMEOUT)
    messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    sent: list[str] = []

    async def receive() -> Any:
        return next(messages)

    async def send(message: Any) -> None:
        sent.append(message["type"])

    await app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)
    assert events == ["startup", "shutdown"]
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        first = await http.get("/item")
        second = await http.get("/item")
    assert first.headers["cache-status"].endswith("; stored")
    assert second.headers["cache-status"].startswith("redis-cache; hit")
    assert second.json() == {"n": 1} and entered == ["/item"]
