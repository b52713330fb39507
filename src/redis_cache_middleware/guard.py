"""Every Redis call the middleware makes goes through ``guarded``: skipped while the circuit
breaker is open, bounded by the timeout, and any failure turned into ``SKIPPED`` so that the
request carries on without the cache (fail open, in one place).

May call: the cache's breaker and stats; nothing on the request path.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from redis.exceptions import ResponseError

from ._timeouts import Bound, run_bounded
from .stats import RateLimitedWarning

if TYPE_CHECKING:
    from .cache import RedisCache

T = TypeVar("T")

#: One rate-limited warning for every failure the request path carries on through.
warn = RateLimitedWarning()


class Skipped:
    """What ``guarded`` returns when Redis was not asked or did not answer in time."""


SKIPPED = Skipped()


async def guarded(
    cache: RedisCache, timeout: float, kind: str, call: Callable[[], Coroutine[Any, Any, T]]
) -> T | Skipped:
    """Run one Redis call for the middleware: skipped while the circuit breaker is open,
    bounded by ``timeout`` (in a task of its own for clients that need it:
    ``RedisCache.isolate_calls``), any failure logged (rate-limited), counted and returned
    as ``SKIPPED`` so that the request carries on without the cache.

    A timeout while the event loop lags (CPU overload of this process, see
    ``CircuitBreaker.loop_lag``) is not held against Redis: counted in ``stats.loop_lag``
    too, it neither opens the breaker nor resets its count of failures."""
    breaker = cache.breaker
    if not breaker.allow():
        cache.stats.breaker_skipped += 1
        return SKIPPED
    started = breaker.clock()
    try:
        if cache.isolate_calls:
            result = await run_bounded(call, timeout, isolate=True)
        else:
            # In the request's own task, under a Bound: asyncio.timeout's behaviour without
            # a timer of the event loop started and stopped for each call.
            bound = Bound(timeout)
            try:
                result = await call()
            except BaseException as exc:
                if bound.close(exc):
                    raise asyncio.TimeoutError from exc
                raise
            bound.close(None)
    except Exception as exc:
        stats = cache.stats
        stats.redis_error += 1
        if isinstance(exc, ResponseError):
            # Redis answered, with an error (OOM under noeviction, WRONGTYPE, READONLY):
            # not an outage, so the breaker must not stop the reads that still work.
            breaker.success()
        elif (lag := await breaker.loop_lag(exc, started, timeout)) is not None:
            # Redis may have answered in time, unread while the loop was busy: turning the
            # cache off for everyone would add the cache's load to the overload.
            stats.loop_lag += 1
            warn(
                f"{kind} loop lag",
                f"redis-cache {kind} timed out with the event loop {lag * 1000:.0f} ms behind "
                "(CPU overload, not counted against Redis), carrying on without the cache",
            )
            return SKIPPED
        else:
            breaker.failure()
        warn(kind, f"redis-cache {kind} failed, carrying on without the cache", exc)
        return SKIPPED
    breaker.success()
    return result
