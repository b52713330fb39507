"""Prometheus metrics for a ``RedisCache``, read from ``cache.stats`` at each scrape.

Needs ``prometheus-client`` (``pip install 'redis-cache-middleware[prometheus]'``). The
collector keeps no state of its own: every scrape reads ``cache.stats.snapshot()``, the
counters of this process, so each worker exports its own (use prometheus-client's
multiprocess mode or scrape each worker, as for any other counter).

FastAPI, with the metrics on ``/metrics``::

    from fastapi import FastAPI
    from prometheus_client import make_asgi_app
    from redis_cache_middleware import CacheMiddleware, RedisCache
    from redis_cache_middleware.prometheus import register

    cache = RedisCache.from_url("redis://localhost:6379/0", namespace="shop")
    register(cache)                       # on prometheus_client.REGISTRY
    app = FastAPI()
    app.add_middleware(CacheMiddleware, cache=cache, default_ttl=60, exclude=["/metrics*"])
    app.mount("/metrics", make_asgi_app())

or with a route of your own::

    from fastapi import Response
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

Metrics (every sample labelled with the cache's ``namespace``):

=========================================  ===================================================
``redis_cache_hits_total``                 answered from the cache (fresh, or stale within
                                           stale-while-revalidate)
``redis_cache_misses_total``               nothing usable stored: sent to the app
``redis_cache_stale_total``                stored but too old: sent to the app (a
                                           stale-if-error answer counts here, once)
``redis_cache_bypass_total``               lookup skipped (bypass header, request no-cache)
``redis_cache_stored_total``               responses stored
``redis_cache_not_stored_total{reason}``   responses not stored, by reason (``no-store``, ...)
``redis_cache_purged_total``               entries removed by purges (and invalidations)
``redis_cache_invalidated_total``          entries removed after a successful POST, PUT, ...
                                           or superseded by an answer not to be stored
``redis_cache_redis_errors_total``         Redis errors and timeouts (the cache failed open)
``redis_cache_hit_latency_seconds``        summary: ``_count`` hits (as ``hits_total``),
                                           ``_sum`` seconds spent answering them
``redis_cache_near_hits_total``            hits the near cache answered (also in
                                           ``hits_total``; ``near_cache_bytes``)
``redis_cache_near_misses_total``          lookups the near cache, in use, could not answer
``redis_cache_near_invalidations_total``   keys Redis said changed (tracking pushes)
``redis_cache_near_emptied_total``         times the near cache was emptied because its
                                           tracking connection was lost
``redis_cache_near_bytes``                 gauge: bytes the near cache holds
=========================================  ===================================================
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

try:
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        Metric,
        SummaryMetricFamily,
    )
    from prometheus_client.registry import REGISTRY, Collector, CollectorRegistry
except ImportError as exc:  # pragma: no cover - exercised without prometheus-client only
    raise ImportError(
        "redis_cache_middleware.prometheus needs prometheus-client: "
        "pip install 'redis-cache-middleware[prometheus]'"
    ) from exc

from .cache import RedisCache
from .exceptions import ConfigError

PREFIX = "redis_cache"

#: ``(metric name without _total, snapshot key, help)`` of each plain counter.
COUNTERS: tuple[tuple[str, str, str], ...] = (
    (
        "hits",
        "hit",
        "Requests answered from the cache: fresh, or stale within stale-while-revalidate.",
    ),
    ("misses", "miss", "Requests with nothing usable stored, sent to the app."),
    (
        "stale",
        "stale",
        "Requests whose stored entry was too old to answer, sent to the app "
        "(stale-if-error answers included).",
    ),
    ("bypass", "bypass", "Requests that skipped the lookup (bypass header, no-cache)."),
    ("stored", "stored", "Responses stored."),
    ("collapsed", "collapsed", "Misses answered by another request's fill (coalescing)."),
    ("purged", "purged", "Entries removed by purges (including invalidations)."),
    (
        "invalidated",
        "invalidated",
        "Entries removed because an unsafe request (POST, PUT, ...) to their URL succeeded.",
    ),
    ("redis_errors", "redis_error", "Redis errors and timeouts; the cache failed open."),
    ("near_hits", "near_hit", "Hits answered from the near cache (also counted in hits)."),
    ("near_misses", "near_miss", "Lookups the near cache, in use, could not answer."),
    ("near_invalidations", "near_invalidations", "Keys Redis said changed (tracking)."),
    (
        "near_emptied",
        "near_emptied",
        "Times the near cache was emptied because its tracking connection was lost.",
    ),
    (
        "in_place_waits",
        "in_place_waits",
        "Likely misses' lookups that waited for their reply in place (wait_in_place).",
    ),
    (
        "in_place_answered",
        "in_place_answered",
        "Waits in place whose reply came within wait_in_place.",
    ),
)


class CacheCollector(Collector):
    """A Prometheus collector exporting the counters of one or more caches.

    Every sample carries a ``namespace`` label, so several caches (with different
    namespaces) can share one collector: ``CacheCollector(shop_cache, api_cache)``.
    """

    def __init__(self, cache: RedisCache, *more: RedisCache) -> None:
        caches = (cache, *more)
        namespaces = [c.namespace for c in caches]
        if len(set(namespaces)) != len(namespaces):
            raise ConfigError(f"caches: two caches share a namespace: {namespaces}")
        self.caches = caches

    def describe(self) -> Iterable[Metric]:
        """Return the metric families without samples, so registering checks the names."""
        return list(self._families({}))

    def collect(self) -> Iterable[Metric]:
        """Return the metric families with the current value of every counter."""
        snapshots = {c.namespace: c.stats.snapshot() for c in self.caches}
        return list(self._families(snapshots))

    def _families(self, snapshots: Mapping[str, Mapping[str, object]]) -> Iterator[Metric]:
        for name, key, documentation in COUNTERS:
            family = CounterMetricFamily(f"{PREFIX}_{name}", documentation, labels=["namespace"])
            for namespace, snapshot in snapshots.items():
                family.add_metric([namespace], _number(snapshot.get(key)))
            yield family
        not_stored = CounterMetricFamily(
            f"{PREFIX}_not_stored",
            "Responses not stored, by reason.",
            labels=["namespace", "reason"],
        )
        for namespace, snapshot in snapshots.items():
            reasons = snapshot.get("not_stored")
            if isinstance(reasons, Mapping):
                for reason, count in sorted(reasons.items()):
                    not_stored.add_metric([namespace, str(reason)], _number(count))
        yield not_stored
        latency = SummaryMetricFamily(
            f"{PREFIX}_hit_latency_seconds",
            "Time spent answering hits (fresh and stale-while-revalidate), from the lookup "
            "to the last byte handed on.",
            labels=["namespace"],
        )
        for namespace, snapshot in snapshots.items():
            latency.add_metric(
                [namespace],
                count_value=int(_number(snapshot.get("hit"))),
                sum_value=_number(snapshot.get("hit_seconds")),
            )
        yield latency
        held = GaugeMetricFamily(
            f"{PREFIX}_near_bytes", "Bytes the near cache holds.", labels=["namespace"]
        )
        for namespace, snapshot in snapshots.items():
            held.add_metric([namespace], _number(snapshot.get("near_bytes")))
        yield held


def register(cache: RedisCache, registry: CollectorRegistry = REGISTRY) -> CacheCollector:
    """Register a ``CacheCollector`` for ``cache`` on ``registry`` and return it.

    Registering a second cache's collector on the same registry raises ``ValueError``
    (duplicated metric names): export several caches with one ``CacheCollector(a, b)``.
    """
    collector = CacheCollector(cache)
    registry.register(collector)
    return collector


def _number(value: object) -> float:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    return 0.0
