"""The Prometheus collector: what a scrape says after traffic through the middleware."""

from __future__ import annotations

import asyncio
import importlib
import sys

import fakeredis
import pytest

pytest.importorskip("prometheus_client", reason="the [prometheus] extra is not installed")

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from redis_cache_middleware import ConfigError, RedisCache
from redis_cache_middleware.prometheus import CacheCollector, register

from .helpers import Origin, Spec, make_client

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(registry: CollectorRegistry) -> tuple[Samples, dict[str, str]]:
    """Return every sample by (name, sorted labels), and every family's type."""
    samples: Samples = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        types[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples, types


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def test_fresh_cache_exports_zeros(registry: CollectorRegistry) -> None:
    cache = RedisCache(fakeredis.FakeAsyncRedis(), namespace="shop")
    register(cache, registry)
    samples, types = scrape(registry)
    for name in (
        "redis_cache_hits",
        "redis_cache_misses",
        "redis_cache_stale",
        "redis_cache_bypass",
        "redis_cache_stored",
        "redis_cache_purged",
        "redis_cache_invalidated",
        "redis_cache_redis_errors",
        "redis_cache_near_hits",
        "redis_cache_near_misses",
        "redis_cache_near_invalidations",
        "redis_cache_near_emptied",
        "redis_cache_in_place_waits",
        "redis_cache_in_place_answered",
    ):
        assert types[name] == "counter"
        assert value(samples, f"{name}_total", namespace="shop") == 0.0
    assert types["redis_cache_not_stored"] == "counter"
    assert not [k for k in samples if k[0] == "redis_cache_not_stored_total"]
    assert types["redis_cache_hit_latency_seconds"] == "summary"
    assert value(samples, "redis_cache_hit_latency_seconds_count", namespace="shop") == 0.0
    assert value(samples, "redis_cache_hit_latency_seconds_sum", namespace="shop") == 0.0
    assert types["redis_cache_near_bytes"] == "gauge"
    assert value(samples, "redis_cache_near_bytes", namespace="shop") == 0.0


@pytest.mark.anyio
async def test_scrape_reports_traffic(cache: RedisCache, registry: CollectorRegistry) -> None:
    register(cache, registry)
    origin = Origin(specs={"/private": Spec(headers=[("cache-control", "no-store")])})
    async with make_client(cache, origin, default_ttl=60) as client:
        await client.get("/a")  # miss, stored
        await client.get("/a")  # hit
        await client.get("/a")  # hit
        await client.get("/b")  # miss, stored
        await client.get("/private")  # miss, not stored: no-store
        await client.get("/private")  # miss, not stored: no-store
        await client.get("/b", headers={"cache-control": "no-cache"})  # bypass, stored
    assert await cache.purge_url("http://testserver/a") == 1
    ns = cache.namespace
    samples, _ = scrape(registry)
    assert value(samples, "redis_cache_hits_total", namespace=ns) == 2
    assert value(samples, "redis_cache_misses_total", namespace=ns) == 4
    assert value(samples, "redis_cache_bypass_total", namespace=ns) == 1
    assert value(samples, "redis_cache_stale_total", namespace=ns) == 0
    assert value(samples, "redis_cache_stored_total", namespace=ns) == 3
    assert value(samples, "redis_cache_not_stored_total", namespace=ns, reason="no-store") == 2
    assert value(samples, "redis_cache_purged_total", namespace=ns) == 1
    assert value(samples, "redis_cache_redis_errors_total", namespace=ns) == 0
    assert value(samples, "redis_cache_hit_latency_seconds_count", namespace=ns) == 2
    latency = value(samples, "redis_cache_hit_latency_seconds_sum", namespace=ns)
    assert latency == pytest.approx(cache.stats.hit_seconds)
    assert 0 < latency < 5


@pytest.mark.anyio
async def test_hit_latency_count_is_the_hit_count_with_stale_answers(
    cache: RedisCache, registry: CollectorRegistry
) -> None:
    register(cache, registry)
    origin = Origin(
        specs={
            "/swr": Spec(headers=[("cache-control", "max-age=1, stale-while-revalidate=60")]),
            "/sie": Spec(headers=[("cache-control", "max-age=1, stale-if-error=60")]),
        }
    )
    async with make_client(cache, origin, max_background_refreshes=0) as client:
        await client.get("/swr")  # miss
        await client.get("/sie")  # miss
        await client.get("/swr")  # hit
        await asyncio.sleep(1.1)
        await client.get("/swr")  # stale-while-revalidate: a hit
        await client.get("/swr")  # stale-while-revalidate: a hit
        origin.specs["/sie"] = Spec(status=503)
        r = await client.get("/sie")  # stale, answered by the stale entry
    assert "detail=stale-if-error" in r.headers["cache-status"]
    ns = cache.namespace
    samples, _ = scrape(registry)
    assert value(samples, "redis_cache_hits_total", namespace=ns) == 3
    assert value(samples, "redis_cache_misses_total", namespace=ns) == 2
    assert value(samples, "redis_cache_stale_total", namespace=ns) == 1
    assert value(samples, "redis_cache_hit_latency_seconds_count", namespace=ns) == 3
    latency = value(samples, "redis_cache_hit_latency_seconds_sum", namespace=ns)
    assert latency == pytest.approx(cache.stats.hit_seconds) and latency > 0


@pytest.mark.anyio
async def test_each_scrape_reads_the_counters_again(
    cache: RedisCache, registry: CollectorRegistry
) -> None:
    register(cache, registry)
    ns = cache.namespace
    origin = Origin()
    async with make_client(cache, origin, default_ttl=60) as client:
        await client.get("/a")
        first, _ = scrape(registry)
        await client.get("/a")
        second, _ = scrape(registry)
    assert value(first, "redis_cache_hits_total", namespace=ns) == 0
    assert value(second, "redis_cache_hits_total", namespace=ns) == 1
    assert value(second, "redis_cache_misses_total", namespace=ns) == 1


def test_not_stored_has_one_sample_per_reason(registry: CollectorRegistry) -> None:
    cache = RedisCache(fakeredis.FakeAsyncRedis(), namespace="shop")
    cache.stats.not_stored["private"] += 3
    cache.stats.not_stored["too-large"] += 1
    register(cache, registry)
    samples, _ = scrape(registry)
    not_stored = {k: v for k, v in samples.items() if k[0] == "redis_cache_not_stored_total"}
    assert not_stored == {
        ("redis_cache_not_stored_total", (("namespace", "shop"), ("reason", "private"))): 3.0,
        ("redis_cache_not_stored_total", (("namespace", "shop"), ("reason", "too-large"))): 1.0,
    }


def test_one_collector_for_several_caches(registry: CollectorRegistry) -> None:
    shop = RedisCache(fakeredis.FakeAsyncRedis(), namespace="shop")
    api = RedisCache(fakeredis.FakeAsyncRedis(), namespace="api")
    shop.stats.hit = 5
    api.stats.hit = 7
    registry.register(CacheCollector(shop, api))
    samples, _ = scrape(registry)
    assert value(samples, "redis_cache_hits_total", namespace="shop") == 5
    assert value(samples, "redis_cache_hits_total", namespace="api") == 7


def test_caches_sharing_a_namespace_are_refused() -> None:
    a = RedisCache(fakeredis.FakeAsyncRedis(), namespace="shop")
    b = RedisCache(fakeredis.FakeAsyncRedis(), namespace="shop")
    with pytest.raises(ConfigError, match="namespace"):
        CacheCollector(a, b)


def test_registering_twice_on_one_registry_fails(registry: CollectorRegistry) -> None:
    register(RedisCache(fakeredis.FakeAsyncRedis(), namespace="shop"), registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        register(RedisCache(fakeredis.FakeAsyncRedis(), namespace="api"), registry)


def test_register_returns_the_collector(registry: CollectorRegistry) -> None:
    cache = RedisCache(fakeredis.FakeAsyncRedis(), namespace="shop")
    collector = register(cache, registry)
    assert isinstance(collector, CacheCollector)
    assert collector.caches == (cache,)
    registry.unregister(collector)
    assert generate_latest(registry) == b""


def test_import_without_prometheus_client_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in [m for m in sys.modules if m.split(".")[0] == "prometheus_client"]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    monkeypatch.delitem(sys.modules, "redis_cache_middleware.prometheus")
    with pytest.raises(ImportError) as caught:
        importlib.import_module("redis_cache_middleware.prometheus")
    assert "pip install 'redis-cache-middleware[prometheus]'" in str(caught.value)
