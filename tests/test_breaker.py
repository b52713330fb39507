"""The circuit breaker: pure state transitions, and the middleware skipping Redis while open."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis.asyncio

from redis_cache_middleware import ConfigError, RedisCache
from redis_cache_middleware.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker

from .helpers import Origin, make_client


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_threshold_consecutive_failures() -> None:
    clock = Clock()
    breaker = CircuitBreaker(threshold=3, cooldown=5, clock=clock)
    breaker.failure()
    breaker.failure()
    breaker.success()  # not consecutive any more
    breaker.failure()
    breaker.failure()
    assert breaker.state == CLOSED and breaker.allow()
    breaker.failure()
    assert breaker.state == OPEN and breaker.opened == 1
    assert breaker.allow() is False and breaker.skipped == 1


def test_breaker_half_open_lets_one_probe_through() -> None:
    clock = Clock()
    breaker = CircuitBreaker(threshold=1, cooldown=5, clock=clock)
    breaker.failure()
    clock.now += 4.9
    assert breaker.allow() is False
    clock.now += 0.2
    assert breaker.allow() is True  # the probe
    assert breaker.state == HALF_OPEN
    assert breaker.allow() is False  # only one probe at a time
    breaker.success()
    assert breaker.state == CLOSED and breaker.allow()


def test_breaker_failed_probe_reopens_for_another_cooldown() -> None:
    clock = Clock()
    breaker = CircuitBreaker(threshold=1, cooldown=5, clock=clock)
    breaker.failure()
    clock.now += 5
    assert breaker.allow()
    breaker.failure()
    assert breaker.state == OPEN and breaker.opened == 2
    clock.now += 4
    assert breaker.allow() is False


def test_breaker_probe_that_never_reports_is_retried_after_cooldown() -> None:
    clock = Clock()
    breaker = CircuitBreaker(threshold=1, cooldown=5, clock=clock)
    breaker.failure()
    clock.now += 5
    assert breaker.allow()  # a probe that was cancelled and never reported
    clock.now += 5
    assert breaker.allow()


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("breaker_threshold", 0),
        ("breaker_threshold", True),
        ("breaker_cooldown", 0),
        ("breaker_cooldown", float("nan")),
        ("breaker_cooldown", "5"),
    ],
)
def test_breaker_bad_config_names_option(option: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=option):
        RedisCache(redis.asyncio.Redis(), **{option: value})


@pytest.mark.anyio
async def test_open_breaker_skips_redis_without_waiting(namespace: str) -> None:
    # Nothing listens on this port: every call fails at once.
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = redis.asyncio.Redis(port=port, socket_connect_timeout=0.05)
    cache = RedisCache(client, namespace=namespace, breaker_threshold=2, breaker_cooldown=60)
    origin = Origin()
    try:
        async with make_client(cache, origin, default_ttl=60) as http:
            for _ in range(2):
                assert (await http.get("/b")).status_code == 200
            assert cache.breaker.state == OPEN
            errors = cache.stats.redis_error
            started = time.monotonic()
            responses = [await http.get("/b") for _ in range(20)]
            elapsed = time.monotonic() - started
    finally:
        await client.aclose()
    assert [r.status_code for r in responses] == [200] * 20
    assert all("detail=redis-error" in r.headers["cache-status"] for r in responses)
    assert cache.stats.redis_error == errors  # Redis was not even asked
    assert cache.stats.breaker_skipped == 20
    assert elapsed < 1.0
