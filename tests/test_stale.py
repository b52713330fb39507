"""Staleness (RFC 5861) and conditional requests (RFC 9110 13, RFC 9111 4.3)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from email.utils import formatdate
from typing import Any

import httpx
import pytest
import redis.exceptions
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from redis_cache_middleware import CacheMiddleware, RedisCache, keys
from redis_cache_middleware.guard import warn

from .helpers import middleware_of

pytestmark = pytest.mark.anyio


class Versioned:
    """An origin serving a versioned document with an ETag, answering 304 when it matches.

    ``cache_control`` goes on every answer; ``fail`` makes it raise or answer with that
    status; ``delay`` slows it down; ``calls`` and ``conditional_calls`` count what it saw.

    Separate from ``helpers.Origin``, which answers fixed specs: revalidation needs an
    origin whose document changes (``version``), that compares the request's validators
    with its own, and that can fail, stall or be held at a ``gate`` between two requests.
    """

    def __init__(self, cache_control: str, delay: float = 0.0) -> None:
        self.cache_control = cache_control
        self.version = 1
        self.delay = delay
        self.fail: int | str | None = None
        self.calls = 0
        self.conditional_calls: Counter[str] = Counter()
        self.etags = True
        self.last_modified: str | None = None
        #: When set, every call waits for it (a handler held until the test lets it go).
        self.gate: asyncio.Event | None = None

    async def handle(self, request: Request) -> Response:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail == "raise":
            raise RuntimeError("origin down")
        if isinstance(self.fail, int):
            return Response(b"upstream error", status_code=self.fail)
        etag = f'"v{self.version}"'
        headers = {"cache-control": self.cache_control, "x-version": str(self.version)}
        if self.etags:
            headers["etag"] = etag
        if self.last_modified:
            headers["last-modified"] = self.last_modified
        inm = request.headers.get("if-none-match")
        ims = request.headers.get("if-modified-since")
        if inm is not None:
            self.conditional_calls["if-none-match"] += 1
            if inm == etag:
                return Response(status_code=304, headers=headers)
        elif ims is not None:
            self.conditional_calls["if-modified-since"] += 1
            if ims == self.last_modified:
                return Response(status_code=304, headers=headers)
        return Response(f"document v{self.version}".encode(), headers=headers)


def client_for(cache: RedisCache, origin: Versioned, **options: Any) -> httpx.AsyncClient:
    # A lookup over the Redis timeout goes to the app (fail open, tested in test_faults):
    # on a loaded machine the default 100 ms can pass, and a request sent to an app held at
    # a gate would wait for the gate. These tests are about staleness, so they allow 1 s.
    options.setdefault("timeout", 1.0)
    app = Starlette(routes=[Route("/doc", origin.handle)])
    app.add_middleware(CacheMiddleware, cache=cache, **options)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


async def wait_for_refreshes(client: httpx.AsyncClient) -> None:
    await middleware_of(client).background.drain(5)


# -- stale-while-revalidate ---------------------------------------------------------------


async def test_swr_answers_stale_at_once_and_refreshes_once(cache: RedisCache) -> None:
    origin = Versioned("max-age=1, stale-while-revalidate=30")
    async with client_for(cache, origin) as client:
        await client.get("/doc")
        await asyncio.sleep(1.1)
        origin.version = 2
        origin.gate = asyncio.Event()  # the refresh's app call is held until after the answers
        # An answer that waited for the refresh would wait for the gate: none may.
        stale = await asyncio.wait_for(
            asyncio.gather(*(client.get("/doc") for _ in range(20))), timeout=10
        )
        origin.gate.set()
        await wait_for_refreshes(client)
        fresh = await client.get("/doc")
    assert {r.content for r in stale} == {b"document v1"}
    assert all("; hit; " in r.headers["cache-status"] for r in stale)
    assert all(r.headers["cache-status"].endswith("; fwd=stale") for r in stale)
    # The refresh revalidated with the ETag; v2 is a new ETag, so the app sent the body.
    assert origin.calls == 2
    assert fresh.content == b"document v2"
    assert fresh.headers["cache-status"].startswith("redis-cache; hit; ttl=")


async def test_refresh_finding_the_entry_refreshed_elsewhere_does_not_call_the_app(
    cache: RedisCache,
) -> None:
    # Two middlewares stand for two processes. A's refresh is held before its lock attempt
    # until B has refreshed the entry (and B's store has released the lock): A then takes
    # the free lock, and must see the newer entry instead of calling the app again.
    origin = Versioned("max-age=1, stale-while-revalidate=30")
    async with client_for(cache, origin) as a, client_for(cache, origin) as b:
        await a.get("/doc")
        await asyncio.sleep(1.1)
        origin.version = 2
        held, b_done = asyncio.Event(), asyncio.Event()
        a_locks = middleware_of(a).context.locks
        acquire = a_locks.acquire

        async def late_acquire(*args: Any, **kwargs: Any) -> Any:
            held.set()
            await b_done.wait()
            return await acquire(*args, **kwargs)

        a_locks.acquire = late_acquire  # type: ignore[method-assign]
        assert (await a.get("/doc")).headers["cache-status"].endswith("fwd=stale")
        await held.wait()
        assert (await b.get("/doc")).headers["cache-status"].endswith("fwd=stale")
        await wait_for_refreshes(b)
        assert origin.calls == 2  # the first fill and B's refresh
        b_done.set()
        await wait_for_refreshes(a)
        after = await a.get("/doc")
    assert origin.calls == 2
    assert after.content == b"document v2" and "; hit; " in after.headers["cache-status"]
    uhash = cache.url_hash("http", b"testserver", "/doc", b"")
    lock = keys.lock_key(keys.url_key(cache.namespace, cache.generation, uhash))
    assert await cache.client.exists(lock) == 0  # A gave the lock back


async def test_swr_refresh_by_304_keeps_body_updates_headers(cache: RedisCache) -> None:
    origin = Versioned("max-age=1, stale-while-revalidate=30")
    async with client_for(cache, origin) as client:
        await client.get("/doc")
        await asyncio.sleep(1.1)
        origin.cache_control = "max-age=100, stale-while-revalidate=30"
        await client.get("/doc")
        await wait_for_refreshes(client)
        after = await client.get("/doc")
    assert origin.conditional_calls["if-none-match"] == 1
    assert after.content == b"document v1"
    assert after.headers["cache-control"] == "max-age=100, stale-while-revalidate=30"
    ttl = int(after.headers["cache-status"].rsplit("ttl=", 1)[1])
    assert 98 <= ttl <= 100


async def test_swr_answers_count_as_hits_with_their_latency(cache: RedisCache) -> None:
    origin = Versioned("max-age=1, stale-while-revalidate=30")
    async with client_for(cache, origin, max_background_refreshes=0) as client:
        await client.get("/doc")
        fresh = await client.get("/doc")
        after_fresh = cache.stats.hit_seconds
        await asyncio.sleep(1.1)
        stale = [await client.get("/doc") for _ in range(3)]
    assert "fwd=stale" not in fresh.headers["cache-status"]
    assert all(r.headers["cache-status"].endswith("; fwd=stale") for r in stale)
    counts = {k: v for k, v in cache.stats.snapshot().items() if k in ("hit", "miss", "stale")}
    assert counts == {"hit": 4, "miss": 1, "stale": 0}
    # hit_seconds sums the time of the same four answers that ``hit`` counts.
    assert 0 < after_fresh < cache.stats.hit_seconds


async def test_swr_from_config_default(cache: RedisCache) -> None:
    origin = Versioned("max-age=1")
    async with client_for(cache, origin, stale_while_revalidate=30) as client:
        await client.get("/doc")
        await asyncio.sleep(1.1)
        origin.version = 2
        stale = await client.get("/doc")
        await wait_for_refreshes(client)
        refreshed = await client.get("/doc")
    # The option's window answers at once from the stale entry ...
    assert stale.content == b"document v1"
    assert stale.headers["cache-status"].startswith("redis-cache; hit; ")
    assert stale.headers["cache-status"].endswith("; fwd=stale")
    # ... and a background refresh (one conditional call) stored v2 behind it.
    assert origin.calls == 2
    assert origin.conditional_calls["if-none-match"] == 1
    assert refreshed.content == b"document v2"
    assert refreshed.headers["cache-status"].startswith("redis-cache; hit; ttl=")


async def test_swr_past_window_goes_to_app(cache: RedisCache) -> None:
    origin = Versioned("max-age=1, stale-while-revalidate=1")
    async with client_for(cache, origin, keep_for_revalidation=0) as client:
        await client.get("/doc")
        await asyncio.sleep(2.1)
        origin.version = 2
        r = await client.get("/doc")
    # Past freshness plus the window (and the revalidation keep, 0 here) Redis dropped it.
    assert "hit" not in r.headers["cache-status"]
    assert r.content == b"document v2"


async def test_must_revalidate_disables_swr(cache: RedisCache) -> None:
    origin = Versioned("max-age=1, must-revalidate, stale-while-revalidate=30")
    async with client_for(cache, origin) as client:
        await client.get("/doc")
        await asyncio.sleep(1.1)
        r = await client.get("/doc")
    assert "; hit;" not in r.headers["cache-status"]


async def test_failing_refresh_leaves_stale_entry(
    cache: RedisCache, caplog: pytest.LogCaptureFixture
) -> None:
    origin = Versioned("max-age=1, stale-while-revalidate=30")
    warn.reset()  # rate-limited per process: another test may have just warned
    async with client_for(cache, origin) as client:
        await client.get("/doc")
        await asyncio.sleep(1.1)
        origin.fail = "raise"
        first = await client.get("/doc")
        await wait_for_refreshes(client)
        second = await client.get("/doc")
        await wait_for_refreshes(client)
    assert first.content == second.content == b"document v1"
    assert second.headers["cache-status"].endswith("fwd=stale")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    # Once: the second failure came within the rate limit's 10 s.
    assert warnings == [
        "redis-cache background refresh of /doc failed; the stale entry stays: "
        "RuntimeError: origin down"
    ]


async def test_refresh_answered_with_an_error_keeps_stale_entry_and_marks_no_pass(
    cache: RedisCache, redis_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    origin = Versioned("max-age=1, stale-while-revalidate=30")
    uhash = cache.url_hash("http", b"testserver", "/doc", b"")
    base = keys.url_key(cache.namespace, 0, uhash)
    warn.reset()  # rate-limited per process: another test may have just warned
    async with client_for(cache, origin) as client:
        await client.get("/doc")
        await asyncio.sleep(1.1)
        origin.fail = 500
        with caplog.at_level(logging.WARNING, logger="redis_cache_middleware"):
            first = await client.get("/doc")
            await wait_for_refreshes(client)
        # An error is no verdict on whether the URL is storable: no hit-for-pass, and
        # the next refresh takes the fill lock again.
        assert await redis_client.exists(keys.pass_key(base)) == 0
        assert await redis_client.exists(keys.lock_key(base)) == 0
        second = await client.get("/doc")
        await wait_for_refreshes(client)
        origin.fail = None
        origin.version = 2
        await client.get("/doc")
        await wait_for_refreshes(client)
        fresh = await client.get("/doc")
    assert first.content == second.content == b"document v1"
    assert second.headers["cache-status"].endswith("fwd=stale")
    assert origin.calls == 4  # the fill, two failed refreshes, the one that stored v2
    assert fresh.content == b"document v2" and "; hit; " in fresh.headers["cache-status"]
    # One warning: the second failed refresh came within the rate limit's 10 s.
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warnings] == [
        "redis-cache background refresh of /doc failed (the app answered 500); the stale entry"
        " stays"
    ]


@pytest.mark.parametrize("refusal", ["no-store", "private", "max-age=60, no-store"])
async def test_refresh_answered_not_to_be_stored_drops_the_stale_entry(
    cache: RedisCache, redis_client: Any, refusal: str
) -> None:
    # The origin now says its answer may not be kept: the old copy is out of date (RFC 9111
    # 4.3.3), so after the refresh nobody is served it again, not even within the window.
    origin = Versioned("max-age=1, stale-while-revalidate=30")
    uhash = cache.url_hash("http", b"testserver", "/doc", b"")
    base = keys.url_key(cache.namespace, 0, uhash)
    async with client_for(cache, origin) as client:
        await client.get("/doc")
        await asyncio.sleep(1.1)
        origin.version, origin.cache_control = 2, refusal
        stale = await client.get("/doc")
        await wait_for_refreshes(client)
        assert await redis_client.exists(base) == 0
        after = [await client.get("/doc") for _ in range(2)]
    assert stale.content == b"document v1" and stale.headers["cache-status"].endswith("fwd=stale")
    assert [r.content for r in after] == [b"document v2"] * 2
    assert all("; hit" not in r.headers["cache-status"] for r in after)
    assert origin.calls == 4  # the fill, the refresh, then each request after it
    assert cache.stats.invalidated == 1


async def test_revalidation_answered_not_to_be_stored_leaves_no_stale_stand_in(
    cache: RedisCache,
) -> None:
    # A stale entry revalidated in the foreground gets a full answer marked no-store: the
    # entry goes, so a later error is not hidden behind the old copy (stale-if-error).
    origin = Versioned("max-age=1, stale-if-error=60")
    async with client_for(cache, origin) as client:
        await client.get("/doc")
        await asyncio.sleep(1.1)
        origin.version, origin.cache_control = 2, "no-store"
        replaced = await client.get("/doc")
        origin.fail = 503
        failed = await client.get("/doc")
    assert replaced.content == b"document v2"
    assert replaced.headers["cache-status"].endswith("fwd=stale; fwd-status=200; detail=no-store")
    assert origin.conditional_calls["if-none-match"] == 1
    assert failed.status_code == 503 and failed.content == b"upstream error"


async def test_client_max_age_0_answered_not_to_be_stored_drops_the_fresh_entry(
    cache: RedisCache,
) -> None:
    origin = Versioned("max-age=60")
    async with client_for(cache, origin) as client:
        await client.get("/doc")
        origin.version, origin.cache_control = 2, "private"
        forced = await client.get("/doc", headers={"cache-control": "max-age=0"})
        after = await client.get("/doc")
    assert forced.content == b"document v2"
    # Without the drop, this would be a hit on v1, which the origin no longer serves.
    assert after.content == b"document v2" and "; hit" not in after.headers["cache-status"]


async def test_only_the_superseded_variant_is_dropped(cache: RedisCache) -> None:
    versions = {"en": 1, "fr": 1}
    policies = dict.fromkeys(versions, "max-age=1, stale-while-revalidate=30")

    async def page(request: Request) -> Response:
        lang = request.headers["accept-language"]
        headers = {"cache-control": policies[lang], "vary": "accept-language"}
        return Response(f"{lang} v{versions[lang]}".encode(), headers=headers)

    app = Starlette(routes=[Route("/page", page)])
    app.add_middleware(CacheMiddleware, cache=cache, timeout=1.0)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        for lang in ("en", "fr"):
            await client.get("/page", headers={"accept-language": lang})
        await asyncio.sleep(1.1)
        versions["en"], policies["en"] = 2, "private"
        await client.get("/page", headers={"accept-language": "en"})  # stale; refreshed
        await middleware_of(client).background.drain(5)
        en = await client.get("/page", headers={"accept-language": "en"})
        fr = await client.get("/page", headers={"accept-language": "fr"})
    assert en.content == b"en v2" and "; hit" not in en.headers["cache-status"]
    assert fr.content == b"fr v1" and fr.headers["cache-status"].endswith("fwd=stale")


async def test_drop_entry_keeps_an_entry_stored_since(cache: RedisCache, redis_client: Any) -> None:
    origin = Versioned("max-age=60")
    uhash = cache.url_hash("http", b"testserver", "/doc", b"")
    async with client_for(cache, origin) as client:
        await client.get("/doc")
        found = await cache.lookup(uhash, lambda names: [])
        assert found.entry is not None and found.key is not None
        # Another request has stored the URL again since this entry was read.
        assert await cache.drop_entry(uhash, found.key, found.entry.stored_at - 1) is False
        assert await redis_client.exists(found.key) == 1
        assert await cache.drop_entry(uhash, found.key, found.entry.stored_at) is True
        assert await redis_client.exists(found.key) == 0
        assert "; hit" not in (await client.get("/doc")).headers["cache-status"]


async def test_shutdown_with_refresh_in_flight_is_clean(cache: RedisCache) -> None:
    origin = Versioned("max-age=1, stale-while-revalidate=30", delay=0)
    app = Starlette(routes=[Route("/doc", origin.handle)])
    app.add_middleware(CacheMiddleware, cache=cache, shutdown_timeout=0.2, timeout=1.0)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        await client.get("/doc")
        await asyncio.sleep(1.1)
        origin.delay = 10  # the refresh will still be running at shutdown
        await client.get("/doc")
    middleware = middleware_of(client)
    assert len(middleware.background) == 1
    # Drive the lifespan protocol as a server would.
    messages = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    started = time.monotonic()
    await app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)
    assert time.monotonic() - started < 2
    assert [m["type"] for m in sent] == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]
    assert len(middleware.background) == 0


async def test_aclose_drains_refreshes(redis_client: Any, namespace: str) -> None:
    cache = RedisCache(redis_client, namespace=namespace)
    origin = Versioned("max-age=1, stale-while-revalidate=30")
    async with client_for(cache, origin, shutdown_timeout=0.1) as client:
        await client.get("/doc")
        await asyncio.sleep(1.1)
        origin.gate = asyncio.Event()  # the refresh's app call is held: never set
        stale = await client.get("/doc")
        background = middleware_of(client).background
        # The stale answer started one refresh, which is now inside the app, held.
        for _ in range(100):
            if origin.calls == 2:
                break
            await asyncio.sleep(0.01)
        assert stale.headers["cache-status"].endswith("; fwd=stale")
        assert origin.calls == 2 and len(background) == 1
        started = time.monotonic()
        await cache.aclose()
        # aclose waited shutdown_timeout for it, then cancelled it: nothing is left running.
        assert len(background) == 0
        assert time.monotonic() - started < 5
        assert origin.version == 1 and cache.stats.stored == 1


async def test_refreshes_are_bounded(cache: RedisCache) -> None:
    origin = Versioned("max-age=1, stale-while-revalidate=30")
    async with client_for(cache, origin, max_background_refreshes=0) as client:
        await client.get("/doc")
        await asyncio.sleep(1.1)
        r = await client.get("/doc")
    assert r.headers["cache-status"].endswith("fwd=stale")
    assert cache.stats.not_stored["refresh-limit"] == 1
    assert origin.calls == 1


# -- stale-if-error -----------------------------------------------------------------------


@pytest.mark.parametrize("failure", ["raise", 500, 502, 503, 504])
async def test_stale_if_error_serves_stale(cache: RedisCache, failure: int | str) -> None:
    origin = Versioned("max-age=1, stale-if-error=60")
    async with client_for(cache, origin) as client:
        await client.get("/doc")
        await asyncio.sleep(1.1)
        origin.fail = failure
        r = await client.get("/doc")
    assert r.status_code == 200
    assert r.content == b"document v1"
    assert "fwd=stale" in r.headers["cache-status"]
    assert "detail=stale-if-error" in r.headers["cache-status"]
    assert origin.calls == 2
    # Counted once, as a stale answer (the first request was the miss); not as a hit.
    counts = {k: v for k, v in cache.stats.snapshot().items() if k in ("hit", "miss", "stale")}
    assert counts == {"hit": 0, "miss": 1, "stale": 1}
    assert cache.stats.hit_seconds == 0


@pytest.mark.parametrize("failure", ["raise", 503])
@pytest.mark.parametrize(
    "keep",
    [
        pytest.param(0, id="entry-gone"),
        # The entry has an ETag, so keep_for_revalidation holds it in Redis past the window:
        # it is found, and revalidated, but may no longer stand in for an error.
        pytest.param(60, id="entry-still-stored"),
    ],
)
async def test_stale_if_error_past_window_lets_error_through(
    cache: RedisCache, failure: int | str, keep: int
) -> None:
    origin = Versioned("max-age=0, stale-if-error=1")
    async with client_for(cache, origin, keep_for_revalidation=keep) as client:
        await client.get("/doc")
        await asyncio.sleep(1.1)
        stored = await cache.inspect_url("http://testserver/doc")
        assert len(stored) == (1 if keep else 0)
        origin.fail = failure
        if failure == "raise":
            with pytest.raises(RuntimeError):
                await client.get("/doc")
        else:
            r = await client.get("/doc")
            assert r.status_code == 503 and r.content == b"upstream error"
            assert "detail=stale-if-error" not in r.headers["cache-status"]
        # The stale entry is neither served nor dropped: a later 304 may still refresh it.
        assert len(await cache.inspect_url("http://testserver/doc")) == (1 if keep else 0)
    assert origin.calls == 2


async def test_stale_if_error_not_for_other_statuses(cache: RedisCache) -> None:
    origin = Versioned("max-age=1, stale-if-error=60")
    async with client_for(cache, origin) as client:
        await client.get("/doc")
        await asyncio.sleep(1.1)
        origin.fail = 404
        r = await client.get("/doc")
    assert r.status_code == 404


# -- conditional requests -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("if_none_match", "status"),
    [
        ('"v1"', 304),
        ('W/"v1"', 304),
        ('"other", "v1"', 304),
        ("*", 304),
        ('"v2"', 200),
    ],
)
async def test_if_none_match_on_fresh_entry(
    cache: RedisCache, if_none_match: str, status: int
) -> None:
    origin = Versioned("max-age=60")
    async with client_for(cache, origin) as client:
        await client.get("/doc")
        r = await client.get("/doc", headers={"if-none-match": if_none_match})
    assert r.status_code == status
    assert origin.calls == 1
    assert "hit" in r.headers["cache-status"]
    if status == 304:
        assert r.content == b""
        assert r.headers["etag"] == '"v1"'
        assert r.headers["cache-control"] == "max-age=60"
        assert "x-version" not in r.headers  # not a field a 304 repeats
        assert "content-length" not in r.headers or r.headers["content-length"] == "0"


async def test_if_modified_since_on_fresh_entry(cache: RedisCache) -> None:
    origin = Versioned("max-age=60")
    origin.etags = False
    origin.last_modified = formatdate(time.time() - 3600, usegmt=True)
    async with client_for(cache, origin) as client:
        await client.get("/doc")
        same = await client.get("/doc", headers={"if-modified-since": origin.last_modified})
        older = await client.get(
            "/doc", headers={"if-modified-since": formatdate(time.time() - 7200, usegmt=True)}
        )
    assert same.status_code == 304
    assert same.headers["last-modified"] == origin.last_modified
    assert older.status_code == 200 and older.content == b"document v1"
    assert origin.calls == 1


async def test_head_conditional_hit(cache: RedisCache) -> None:
    origin = Versioned("max-age=60")
    async with client_for(cache, origin) as client:
        await client.get("/doc")
        r = await client.head("/doc", headers={"if-none-match": '"v1"'})
        other = await client.head("/doc", headers={"if-none-match": '"v0"'})
    # Both answered from the GET entry: the app saw only the first GET.
    assert origin.calls == 1 and not origin.conditional_calls
    assert r.status_code == 304 and r.content == b""
    assert r.headers["etag"] == '"v1"'
    assert r.headers["cache-status"].startswith("redis-cache; hit; ttl=")
    # A validator that does not match gets the full headers, still without a body.
    assert other.status_code == 200 and other.content == b""
    assert other.headers["content-length"] == str(len(b"document v1"))
    assert other.headers["cache-status"].startswith("redis-cache; hit; ttl=")


@pytest.mark.parametrize("validator", ["etag", "last-modified"])
async def test_stale_entry_revalidated_by_304(cache: RedisCache, validator: str) -> None:
    origin = Versioned("max-age=1")
    if validator == "last-modified":
        origin.etags = False
        origin.last_modified = formatdate(time.time() - 60, usegmt=True)
    async with client_for(cache, origin) as client:
        await client.get("/doc")
        await asyncio.sleep(1.1)
        origin.cache_control = "max-age=50"
        r = await client.get("/doc")
        again = await client.get("/doc")
    key = "if-none-match" if validator == "etag" else "if-modified-since"
    assert origin.conditional_calls[key] == 1
    assert r.status_code == 200 and r.content == b"document v1"
    assert r.headers["cache-status"] == "redis-cache; fwd=stale; fwd-status=304; stored"
    assert r.headers["cache-control"] == "max-age=50"
    assert again.headers["cache-status"].startswith("redis-cache; hit; ttl=")
    assert again.content == b"document v1"


async def test_revalidation_whose_store_fails_says_so(
    cache: RedisCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    origin = Versioned("max-age=1")
    async with client_for(cache, origin) as client:
        await client.get("/doc")
        await asyncio.sleep(1.1)

        async def refused(*args: Any, **kwargs: Any) -> None:
            raise redis.exceptions.ResponseError("OOM command not allowed")

        monkeypatch.setattr(cache, "store", refused)
        r = await client.get("/doc")
    assert origin.conditional_calls["if-none-match"] == 1
    # Served from the revalidated entry all the same, but without a claim of "stored".
    assert r.status_code == 200 and r.content == b"document v1"
    assert r.headers["cache-status"] == (
        "redis-cache; fwd=stale; fwd-status=304; detail=redis-error"
    )


async def test_stale_entry_replaced_by_200(cache: RedisCache) -> None:
    origin = Versioned("max-age=1")
    async with client_for(cache, origin) as client:
        await client.get("/doc")
        await asyncio.sleep(1.1)
        origin.version = 2
        r = await client.get("/doc")
        again = await client.get("/doc")
    assert origin.conditional_calls["if-none-match"] == 1
    assert r.content == b"document v2"
    assert r.headers["cache-status"] == "redis-cache; fwd=stale; fwd-status=200; stored"
    assert again.content == b"document v2" and "hit" in again.headers["cache-status"]


async def test_no_cache_entry_revalidated_every_time(cache: RedisCache) -> None:
    origin = Versioned("no-cache, max-age=60")
    async with client_for(cache, origin) as client:
        await client.get("/doc")
        r1 = await client.get("/doc")
        r2 = await client.get("/doc")
    assert origin.conditional_calls["if-none-match"] == 2
    assert r1.content == r2.content == b"document v1"
    assert "fwd=stale; fwd-status=304" in r1.headers["cache-status"]


async def test_client_conditional_passes_through_on_stale(cache: RedisCache) -> None:
    origin = Versioned("max-age=1")
    async with client_for(cache, origin) as client:
        await client.get("/doc")
        await asyncio.sleep(1.1)
        r = await client.get("/doc", headers={"if-none-match": '"v1"'})
        again = await client.get("/doc", headers={"if-none-match": '"v1"'})
    # The client's own validator goes to the app, whose 304 goes back to the client: the
    # stale entry does not answer it, and a 304 for one client is not stored for others.
    assert origin.calls == 3
    assert origin.conditional_calls["if-none-match"] == 2
    assert r.status_code == 304 and r.content == b""
    assert r.headers["cache-status"] == "redis-cache; fwd=stale; fwd-status=304; detail=status"
    assert again.status_code == 304
    assert "hit" not in again.headers["cache-status"]


async def test_add_etag_option(cache: RedisCache) -> None:
    origin = Versioned("max-age=60")
    origin.etags = False
    async with client_for(cache, origin, add_etag=True) as client:
        await client.get("/doc")
        hit = await client.get("/doc")
        etag = hit.headers["etag"]
        revalidated = await client.get("/doc", headers={"if-none-match": etag})
    assert etag.startswith('"') and len(etag) == 34
    assert revalidated.status_code == 304
