"""Bounding Redis calls: a call that swallows its cancellation must not hold the request."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import sys
from typing import Any

import fakeredis
import httpx
import pytest
import redis.asyncio
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.sentinel import Sentinel

from redis_cache_middleware import RedisCache
from redis_cache_middleware._timeouts import (
    WAIT_FOR_SWALLOWS_CANCELLATION,
    run_bounded,
    sends_under_wait_for,
)

from .helpers import Origin, make_client

pytestmark = pytest.mark.anyio


class Swallowing:
    """A call that, cancelled, carries on, as redis-py's does when ``asyncio.wait_for``
    swallows the cancellation: it then waits for ``release`` and answers late."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.swallowed = asyncio.Event()
        self.cancelled = 0
        self.finished = False

    async def __call__(self) -> str:
        while True:
            try:
                await self.release.wait()
                break
            except asyncio.CancelledError:
                self.cancelled += 1
                if self.cancelled > 1:
                    raise  # a second cancellation goes through
                # swallowed: the first cancellation is lost, and the call goes on
                self.swallowed.set()
        self.finished = True
        return "late"


async def test_isolated_call_is_left_at_the_deadline_whatever_it_does() -> None:
    call = Swallowing()
    with pytest.raises(asyncio.TimeoutError):
        # If run_bounded waited for the call, it would wait for release, which never comes.
        await asyncio.wait_for(run_bounded(call, 0.05, isolate=True), 5)
    await asyncio.sleep(0)  # let the abandoned task see its cancellation
    # The task got the cancellation and swallowed it (as the library would): it is still
    # running, and ends by itself once its wait is over, with nobody waiting for it.
    assert call.cancelled == 1 and not call.finished
    call.release.set()
    for _ in range(10):
        await asyncio.sleep(0)
    assert call.finished


async def test_in_task_bound_cannot_end_a_call_that_swallows_its_cancellation() -> None:
    # Why isolation exists: under a timeout in the caller's own task, a call that swallows
    # the cancellation holds the caller until it ends, past the deadline.
    call = Swallowing()

    async def release_later() -> None:
        await call.swallowed.wait()
        await asyncio.sleep(0.1)  # well past the deadline
        call.release.set()

    releaser = asyncio.ensure_future(release_later())
    result = await asyncio.wait_for(run_bounded(call, 0.05, isolate=False), 5)
    await releaser
    assert result == "late" and call.cancelled == 1


async def test_isolated_call_answering_in_time_returns_its_result() -> None:
    async def quick() -> int:
        return 7

    assert await run_bounded(quick, 1.0, isolate=True) == 7


async def test_isolated_call_error_reaches_the_caller() -> None:
    async def failing() -> None:
        raise redis.ConnectionError("gone")

    with pytest.raises(redis.ConnectionError):
        await run_bounded(failing, 1.0, isolate=True)


async def test_cancelled_caller_cancels_the_isolated_call() -> None:
    started, finished = asyncio.Event(), asyncio.Event()

    async def slow() -> None:
        started.set()
        try:
            await asyncio.sleep(10)
        finally:
            finished.set()

    caller = asyncio.ensure_future(run_bounded(slow, 10, isolate=True))
    await started.wait()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    await asyncio.wait_for(finished.wait(), 5)


async def test_abandoned_call_failing_later_is_not_logged_as_lost(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = asyncio.Event()

    async def swallow_then_fail() -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await release.wait()
        await asyncio.sleep(0)
        raise redis.ConnectionError("retries exhausted")

    with pytest.raises(asyncio.TimeoutError):
        await run_bounded(swallow_then_fail, 0.02, isolate=True)
    for _ in range(10):
        await asyncio.sleep(0)
    gc.collect()  # asyncio logs a lost exception when the task is collected
    assert "never retrieved" not in caplog.text


def _clients() -> list[Any]:
    return [
        pytest.param(lambda: redis.asyncio.Redis(port=1), True, id="redis-py-defaults"),
        pytest.param(
            lambda: redis.asyncio.Redis(port=1, socket_timeout=None), False, id="no-socket-timeout"
        ),
        pytest.param(lambda: RedisCluster(host="127.0.0.1", port=1), True, id="cluster-defaults"),
        pytest.param(
            lambda: Sentinel([("127.0.0.1", 1)]).master_for("m"), False, id="sentinel-master"
        ),
        pytest.param(lambda: fakeredis.FakeAsyncRedis(), True, id="fakeredis"),
        pytest.param(lambda: object(), True, id="unknown-client"),
    ]


@pytest.mark.parametrize(("make", "sends"), _clients())
def test_sends_under_wait_for_reads_the_client_settings(make: Any, sends: bool) -> None:
    assert sends_under_wait_for(make()) is sends


@pytest.mark.parametrize(
    ("options", "isolated"),
    [
        pytest.param({}, False, id="from-url-defaults"),
        pytest.param({"socket_timeout": 1.0}, True, id="from-url-socket-timeout"),
    ],
)
async def test_from_url_isolates_only_with_a_socket_timeout(
    options: dict[str, Any], isolated: bool
) -> None:
    cache = RedisCache.from_url("redis://127.0.0.1:1/0", **options)
    try:
        assert cache.isolate_calls is (isolated and WAIT_FOR_SWALLOWS_CANCELLATION)
    finally:
        await cache.aclose()


def test_isolation_only_where_wait_for_can_swallow() -> None:
    cache = RedisCache(redis.asyncio.Redis(port=1), namespace="t")
    assert cache.isolate_calls is (sys.version_info < (3, 12))


async def test_request_is_not_held_by_a_lookup_that_swallows_its_cancellation(
    monkeypatch: pytest.MonkeyPatch, namespace: str
) -> None:
    """Through the middleware: the lookup swallows the timeout's cancellation and waits on;
    the request is answered by the app at the deadline, as a Redis error."""
    cache = RedisCache(fakeredis.FakeAsyncRedis(), namespace=namespace)
    cache.isolate_calls = True
    call = Swallowing()

    async def lookup(*args: Any, **kwargs: Any) -> Any:
        await call()
        raise AssertionError("the request must not wait for this")

    monkeypatch.setattr(cache, "lookup", lookup)
    origin = Origin()
    async with make_client(cache, origin, default_ttl=60, timeout=0.05) as client:
        response: httpx.Response = await asyncio.wait_for(client.get("/held"), 5)
    call.release.set()
    assert response.status_code == 200 and origin.calls["/held"] == 1
    assert "detail=redis-error" in response.headers["cache-status"]
    assert cache.stats.redis_error == 1
