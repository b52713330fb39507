"""A response sent whole goes to the client as its store is sent to Redis, without waiting
for Redis's reply; the entry is still there for every request that comes after it.

Run against every backend: the lane's ordering (one connection, in order) on the real Redis,
the client's pool on fakeredis and on the cluster, where the fill lock the store releases
keeps another request from calling the app again.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from redis_cache_middleware import CacheMiddleware, RedisCache

from .helpers import TEST_TIMEOUT, Origin, http_scope, starlette_app

pytestmark = pytest.mark.anyio

Message = dict[str, Any]


async def receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


def status_of(messages: list[Message]) -> str:
    start = next(m for m in messages if m["type"] == "http.response.start")
    return dict(start["headers"])[b"cache-status"].decode()


def body_of(messages: list[Message]) -> bytes:
    return b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")


def collect(into: list[Message]) -> Any:
    async def send(message: Message) -> None:
        into.append(message)

    return send


def middleware(cache: RedisCache, origin: Origin) -> CacheMiddleware:
    return CacheMiddleware(starlette_app(origin), cache=cache, default_ttl=60, timeout=TEST_TIMEOUT)


class GatedStore:
    """``cache.store`` held back until ``open`` is set: Redis has not the entry yet."""

    def __init__(self, cache: RedisCache) -> None:
        self.real = cache.store
        self.open = asyncio.Event()
        self.entered = asyncio.Event()
        self.done = asyncio.Event()

    async def __call__(self, *args: Any, **kwargs: Any) -> None:
        self.entered.set()
        await self.open.wait()
        try:
            await self.real(*args, **kwargs)
        finally:
            self.done.set()


async def test_the_response_goes_out_before_redis_answers_the_store(
    cache: RedisCache,
) -> None:
    origin = Origin()
    app = middleware(cache, origin)
    gate = GatedStore(cache)
    cache.store = gate  # type: ignore[method-assign]
    sent: list[Message] = []
    whole = asyncio.Event()

    async def send(message: Message) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            whole.set()

    call = asyncio.create_task(app(http_scope("/early"), receive, send))
    await asyncio.wait_for(whole.wait(), 5)
    # The client has the whole response while the store is still held back, and the header
    # says it is stored: the store was sent as the response went out.
    assert gate.entered.is_set() and not gate.done.is_set()
    assert status_of(sent) == "redis-cache; fwd=uri-miss; fwd-status=200; stored"
    assert body_of(sent).startswith(b"/early? call=1")
    assert not call.done()  # the app's last send returns after the store's reply
    gate.open.set()
    await asyncio.wait_for(call, 5)
    assert cache.stats.stored == 1
    again: list[Message] = []
    await app(http_scope("/early"), receive, collect(again))
    assert status_of(again).startswith("redis-cache; hit")
    assert origin.calls["/early"] == 1


async def test_a_request_begun_as_the_response_ends_finds_the_entry(cache: RedisCache) -> None:
    """The next request of this process, started the moment the client has the last byte,
    is answered from the cache, not by the app again."""
    origin = Origin()
    app = middleware(cache, origin)
    follow_up: list[Message] = []
    started: list[asyncio.Task[None]] = []
    follow = collect(follow_up)

    async def send(message: Message) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body"):
            started.append(asyncio.create_task(app(http_scope("/next"), receive, follow)))

    await app(http_scope("/next"), receive, send)
    await asyncio.wait_for(started[0], 5)
    assert "hit" in status_of(follow_up).split("; ")
    assert body_of(follow_up).startswith(b"/next? call=1")
    assert origin.calls["/next"] == 1


async def test_another_worker_waits_for_a_store_still_under_way(
    cache: RedisCache, backend_url: str, namespace: str
) -> None:
    """Worker B asks for the URL after worker A's client has the response but before A's
    store reached Redis: the fill lock A holds until that store makes B wait for the entry,
    and B serves it without calling the app."""
    origin = Origin()
    worker_a = middleware(cache, origin)
    gate = GatedStore(cache)
    cache.store = gate  # type: ignore[method-assign]
    a_sent: list[Message] = []
    a_call = asyncio.create_task(worker_a(http_scope("/shared"), receive, collect(a_sent)))
    await asyncio.wait_for(gate.entered.wait(), 5)
    async with RedisCache.from_url(backend_url, namespace=namespace) as other:
        worker_b = middleware(other, origin)
        b_sent: list[Message] = []
        b_call = asyncio.create_task(worker_b(http_scope("/shared"), receive, collect(b_sent)))
        await asyncio.sleep(0.2)
        assert not b_call.done()  # waiting for A's fill, not at the app
        gate.open.set()
        await asyncio.wait_for(asyncio.gather(a_call, b_call), 10)
    assert status_of(a_sent).endswith("; stored")
    assert "collapsed" in status_of(b_sent) or "hit" in status_of(b_sent).split("; ")
    assert body_of(b_sent).startswith(b"/shared? call=1")
    assert origin.calls["/shared"] == 1


async def test_a_client_gone_while_the_response_is_sent_still_leaves_the_entry(
    cache: RedisCache,
) -> None:
    """A server whose ``send`` raises for a client that went away: the app's answer, which
    the cache held whole, is stored all the same (as when the store came first), and the
    next request is a hit."""
    origin = Origin()
    app = middleware(cache, origin)

    async def gone(message: Message) -> None:
        if message["type"] == "http.response.body":
            raise OSError("the client went away")

    with pytest.raises(OSError, match="went away"):
        await app(http_scope("/gone"), receive, gone)
    assert cache.stats.stored == 1
    again: list[Message] = []
    await app(http_scope("/gone"), receive, collect(again))
    assert status_of(again).startswith("redis-cache; hit")
    assert body_of(again).startswith(b"/gone? call=1") and origin.calls["/gone"] == 1
