"""Sentinel: from_url's sentinel form follows the master through a failover.

One master, one replica and one sentinel run locally; the master is killed while requests
flow through the middleware. None may fail (the cache fails open while there is no master),
and once the sentinel has promoted the replica the entries written before the kill are
served as hits again.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
import redis
from redis.asyncio import Redis

from redis_cache_middleware import RedisCache

from .cluster_fixtures import (
    CountingApp,
    SentinelSetup,
    serve_until,
    until_all_hits,
    wait_until,
)

pytestmark = pytest.mark.anyio


def _caught_up(setup: SentinelSetup) -> bool:
    c = setup.master.client()
    try:
        info = c.info("replication")
    finally:
        c.close()
    replica = info.get("slave0")
    return bool(replica) and int(replica["offset"]) >= int(info["master_repl_offset"])


async def test_sentinel_url_client_is_owned_and_closed(sentinel_setup: SentinelSetup) -> None:
    def sentinel_clients() -> int:
        c = sentinel_setup.sentinel.client()
        try:
            return len(c.client_list())
        finally:
            c.close()

    baseline = sentinel_clients()
    name = f"rcm-{uuid.uuid4().hex[:8]}"
    cache = RedisCache.from_url(sentinel_setup.url, namespace="s-own", client_name=name)
    assert isinstance(cache.client, Redis)
    app = CountingApp()
    async with app.client(cache) as http:
        for _ in range(2):
            assert (await http.get("/item/1")).text == "item 1"
    assert app.calls["/item/1"] == 1  # the second request was a hit, on the master

    def on_master() -> int:
        c = sentinel_setup.master.client()
        try:
            return sum(1 for client in c.client_list() if client["name"] == name)
        finally:
            c.close()

    assert on_master() >= 1
    assert sentinel_clients() > baseline  # the cache asked the sentinel for the master
    await cache.aclose()
    wait_until("the owned client's connections to close", lambda: on_master() == 0, 5)
    wait_until("the owned sentinel connections to close", lambda: sentinel_clients() == baseline, 5)


async def test_master_failover_fails_open_then_hits_resume(
    sentinel_setup: SentinelSetup,
) -> None:
    setup = sentinel_setup
    ns = f"s-{uuid.uuid4().hex[:10]}"
    cache = RedisCache.from_url(setup.url, namespace=ns)
    app = CountingApp()
    paths = [f"/item/{n}" for n in range(20)]
    try:
        async with app.client(cache) as http:
            for path in paths:
                await http.get(path)
            _, failures = await until_all_hits(http, app, paths, timeout=10)
            assert failures == []
            wait_until("the replica to catch up", lambda: _caught_up(setup), 10)

            setup.master.kill()
            killed_at = time.monotonic()

            def promoted_sync() -> bool:
                try:
                    return setup.master_port() == setup.replica.port
                except redis.RedisError:
                    return False

            async def promoted() -> bool:
                return await asyncio.to_thread(promoted_sync)

            rounds, failures, down_for = await serve_until(
                "the sentinel to promote the replica", http, app, paths, promoted, timeout=30
            )
            assert failures == [], failures[:5]
            assert rounds >= 2 and down_for > 0.5  # requests flowed while there was no master

            resumed_in, failures = await until_all_hits(http, app, paths, timeout=30)
            assert failures == [], failures[:5]
            print(  # shown with -s: how long each phase took
                f"\nsentinel failover: promoted {down_for:.1f}s after the kill ({rounds} rounds,"
                f" 0 failed), all hits again {resumed_in:.1f}s later; "
                f"total {time.monotonic() - killed_at:.1f}s"
            )
    finally:
        await cache.aclose()
