"""Request coalescing: one app call per cold URL, in one process and across processes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from redis_cache_middleware import RedisCache, keys
from redis_cache_middleware.cache import FillLock

from .conftest import RedisServer, free_port
from .helpers import Origin, Spec, make_client

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parent.parent


class SlowOrigin(Origin):
    """An origin whose handler takes ``delay`` seconds."""

    def __init__(self, delay: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.delay = delay

    async def respond(self, request: Any) -> Any:
        await asyncio.sleep(self.delay)
        return await super().respond(request)


async def test_200_concurrent_misses_one_app_call(cache: RedisCache) -> None:
    origin = SlowOrigin(0.2)
    async with make_client(cache, origin, default_ttl=60) as client:
        responses = await asyncio.gather(*(client.get("/cold") for _ in range(200)))
    assert origin.calls["/cold"] == 1
    assert {r.status_code for r in responses} == {200}
    assert len({r.content for r in responses}) == 1
    statuses = [r.headers["cache-status"] for r in responses]
    assert sum("stored" in s for s in statuses) == 1
    assert sum("collapsed" in s for s in statuses) == 199
    assert cache.stats.collapsed == 199


async def test_variants_are_not_collapsed_into_each_other(cache: RedisCache) -> None:
    origin = SlowOrigin(
        0.1, specs={"/v": Spec(headers=[("vary", "x-lang")], echo_headers=("x-lang",))}
    )
    async with make_client(cache, origin, default_ttl=60) as client:
        await client.get("/v", headers={"x-lang": "warm"})  # learn the Vary
        responses = await asyncio.gather(
            *(client.get("/v", headers={"x-lang": lang}) for lang in ["en", "fr"] * 10)
        )
    for r in responses:
        lang = r.request.headers["x-lang"]
        assert f"x-lang={lang}".encode() in r.content
    assert origin.calls["/v"] == 3


async def test_coalescing_off_calls_app_for_each(cache: RedisCache) -> None:
    origin = SlowOrigin(0.05)
    async with make_client(cache, origin, default_ttl=60, coalesce=False) as client:
        await asyncio.gather(*(client.get("/each") for _ in range(10)))
    assert origin.calls["/each"] == 10


async def test_not_storable_fill_releases_waiters_and_remembers_pass(
    cache: RedisCache, redis_client: Any
) -> None:
    origin = SlowOrigin(0.2, specs={"/nostore": Spec(headers=[("cache-control", "no-store")])})
    async with make_client(cache, origin, default_ttl=60) as client:
        started = time.monotonic()
        responses = await asyncio.gather(*(client.get("/nostore") for _ in range(10)))
        elapsed = time.monotonic() - started
        base = keys.url_key(
            cache.namespace, 0, cache.url_hash("http", b"testserver", "/nostore", b"")
        )
        assert await redis_client.exists(keys.pass_key(base)) == 1
        # Hit-for-pass: the next burst is not serialised behind a lock at all.
        started = time.monotonic()
        await asyncio.gather(*(client.get("/nostore") for _ in range(10)))
        second = time.monotonic() - started
    assert {r.status_code for r in responses} == {200}
    assert origin.calls["/nostore"] == 20
    # One fill (0.2 s), then every waiter went to the app in parallel: not 10 x 0.2 s.
    assert elapsed < 1.0
    assert second < 0.6


async def test_dead_lock_owner_taken_over_within_lock_ttl(
    cache: RedisCache, redis_client: Any
) -> None:
    # A process that took the fill lock and died leaves exactly this: a lock with a TTL.
    uhash = cache.url_hash("http", b"testserver", "/orphan", b"")
    await cache.acquire_fill(uhash, FillLock("", "dead-owner"), 0.5, 0)
    origin = Origin()
    async with make_client(cache, origin, default_ttl=60, coalesce_timeout=3.0) as client:
        started = time.monotonic()
        response = await client.get("/orphan")
        elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert "stored" in response.headers["cache-status"]
    assert origin.calls["/orphan"] == 1
    assert 0.3 < elapsed < 1.5


async def test_waiters_give_up_after_coalesce_timeout(cache: RedisCache) -> None:
    uhash = cache.url_hash("http", b"testserver", "/stuck", b"")
    await cache.acquire_fill(uhash, FillLock("", "slow-owner"), 60, 0)
    origin = Origin()
    async with make_client(cache, origin, default_ttl=60, coalesce_timeout=0.3) as client:
        started = time.monotonic()
        responses = await asyncio.gather(*(client.get("/stuck") for _ in range(5)))
        elapsed = time.monotonic() - started
    assert {r.status_code for r in responses} == {200}
    assert 0.25 < elapsed < 2.0
    assert origin.calls["/stuck"] >= 1


async def test_owner_raising_releases_lock_for_waiters(cache: RedisCache) -> None:
    class FlakyOrigin(SlowOrigin):
        async def respond(self, request: Any) -> Any:
            if self.calls["/flaky"] == 0:
                self.calls["/flaky"] += 1
                await asyncio.sleep(0.1)
                raise RuntimeError("first call fails")
            return await super().respond(request)

    origin = FlakyOrigin(0.05)
    async with make_client(cache, origin, default_ttl=60) as client:
        results = await asyncio.gather(
            *(client.get("/flaky") for _ in range(5)), return_exceptions=True
        )
    errors = [r for r in results if isinstance(r, Exception)]
    assert len(errors) == 1
    assert all(r.status_code == 200 for r in results if not isinstance(r, Exception))
    assert origin.calls["/flaky"] <= 3


@pytest.fixture
def workers(redis_server: RedisServer, namespace: str) -> Iterator[tuple[str, redis.Redis]]:
    port = free_port()
    env = dict(
        os.environ,
        REDIS_URL=redis_server.url,
        E2E_NAMESPACE=namespace,
        E2E_DELAY="0.2",
    )
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "src"), env.get("PYTHONPATH", "")])
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "tests.e2e_app:app",
            "--workers",
            "4",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    client = redis.Redis.from_url(redis_server.url)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{base}/calls", timeout=1)
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("uvicorn did not start") from None
                time.sleep(0.2)
        time.sleep(1.0)  # let every worker come up
        yield base, client
    finally:
        process.terminate()
        process.wait(timeout=20)
        client.close()


async def test_four_processes_one_app_call(
    workers: tuple[str, redis.Redis], namespace: str
) -> None:
    base, client = workers
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(base_url=base, timeout=10, limits=limits) as http:
        responses = await asyncio.gather(*(http.get("/slow/1") for _ in range(200)))
    assert {r.status_code for r in responses} == {200}
    assert len({r.content for r in responses}) == 1
    # The handler counts its calls in Redis, across all four worker processes.
    assert int(client.get(f"{namespace}:calls:/slow/1") or 0) == 1
    pids = {r.json()["pid"] for r in responses}
    assert len(pids) == 1  # one process filled; the rest served its entry
