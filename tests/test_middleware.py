"""The middleware end to end through httpx, on Starlette and FastAPI, over every backend.

Who may be served what (Authorization, cookies, credential headers), the host in the key and
cache poisoning are tested in ``tests/test_security.py``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import httpx
import pytest

from redis_cache_middleware import RedisCache

from .helpers import Origin, Spec, hit_raw, make_client, middleware_of

pytestmark = pytest.mark.anyio


async def test_hit_served_without_calling_app(cache: RedisCache, framework: str) -> None:
    origin = Origin()
    async with make_client(cache, origin, framework, default_ttl=60) as client:
        first = await client.get("/items/1?q=a")
        second = await client.get("/items/1?q=a")
    assert first.status_code == second.status_code == 200
    assert first.headers["cache-status"] == "redis-cache; fwd=uri-miss; fwd-status=200; stored"
    assert (
        second.headers["cache-status"] == "redis-cache; hit; ttl=60"
        or second.headers["cache-status"] == "redis-cache; hit; ttl=59"
    )
    assert second.content == first.content
    assert second.headers["age"] in ("0", "1")
    assert origin.calls["/items/1"] == 1
    assert "age" not in first.headers


async def test_hit_replays_headers_in_order_with_duplicates(
    cache: RedisCache, framework: str
) -> None:
    origin = Origin(
        specs={
            "/h": Spec(
                headers=[("x-b", "2"), ("x-a", "1"), ("x-a", "3"), ("link", "<a>; rel=x")],
                body=b"exact \x00\xff bytes",
            )
        }
    )
    async with make_client(cache, origin, framework, default_ttl=60) as client:
        first = await client.get("/h")
        second = await client.get("/h")
    strip = {"cache-status", "age"}
    assert [h for h in first.headers.raw if h[0].decode().lower() not in strip] == [
        h for h in second.headers.raw if h[0].decode().lower() not in strip
    ]
    assert second.headers.get_list("x-a") == ["1", "3"]
    assert second.content == b"exact \x00\xff bytes"
    assert origin.calls["/h"] == 1


async def test_query_is_keyed_as_sent_order_included(cache: RedisCache, framework: str) -> None:
    # request.url keeps the query as sent: a reordered query is another URL to the app.
    origin = Origin()
    async with make_client(cache, origin, framework, default_ttl=60) as client:
        a = await client.get("/q?a=1&b=2")
        again = await client.get("/q?a=1&b=2")
        b = await client.get("/q?b=2&a=1")
        c = await client.get("/q?a=1&b=3")
    assert "hit" in again.headers["cache-status"] and again.content == a.content
    assert "fwd=uri-miss" in b.headers["cache-status"]
    assert "fwd=uri-miss" in c.headers["cache-status"]
    assert origin.calls["/q"] == 3


async def test_ignore_query_params(cache: RedisCache, framework: str) -> None:
    origin = Origin()
    async with make_client(
        cache, origin, framework, default_ttl=60, ignore_query_params=["utm_*", "fbclid"]
    ) as client:
        await client.get("/p?id=1&utm_source=x")
        hit = await client.get("/p?fbclid=zz&id=1&utm_medium=y")
        miss = await client.get("/p?id=2&utm_source=x")
    assert "hit" in hit.headers["cache-status"]
    assert "fwd=uri-miss" in miss.headers["cache-status"]
    assert origin.calls["/p"] == 2


async def test_head_answered_from_get_entry(cache: RedisCache, framework: str) -> None:
    # HEAD on a miss (tests/test_head.py) fills the entry as a GET; here a GET filled it.
    origin = Origin()
    async with make_client(cache, origin, framework, default_ttl=60) as client:
        get = await client.get("/r")
        head_hit = await client.head("/r")
    assert "stored" in get.headers["cache-status"]
    assert "hit" in head_hit.headers["cache-status"]
    assert head_hit.content == b""
    assert head_hit.headers["content-length"] == str(len(get.content))
    assert origin.calls["/r"] == 1


async def test_streamed_response_passes_through_then_replays_whole(
    cache: RedisCache, framework: str
) -> None:
    origin = Origin(specs={"/st": Spec(chunks=[b"one,", b"two,", b"three"])})
    async with make_client(cache, origin, framework, default_ttl=60) as client:
        first = await client.get("/st")
        second = await client.get("/st")
    assert first.status_code == second.status_code == 200
    assert first.content == second.content == b"one,two,three"
    # Streamed: no length up front, and no claim of "stored" before the end.
    assert first.headers.raw == [(b"cache-status", b"redis-cache; fwd=uri-miss; fwd-status=200")]
    assert second.headers.raw in hit_raw((b"content-length", b"13"), ttl=60)
    assert origin.calls["/st"] == 1


async def test_vary_keeps_variants_apart(cache: RedisCache, framework: str) -> None:
    origin = Origin(
        specs={"/v": Spec(headers=[("vary", "Accept-Language")], echo_headers=("accept-language",))}
    )
    async with make_client(cache, origin, framework, default_ttl=60) as client:
        en = await client.get("/v", headers={"accept-language": "en"})
        fr = await client.get("/v", headers={"accept-language": "fr"})
        en2 = await client.get("/v", headers={"accept-language": "en"})
        fr2 = await client.get("/v", headers={"accept-language": "fr"})
        none = await client.get("/v")
        empty = await client.get("/v", headers={"accept-language": ""})
        none2 = await client.get("/v")
    assert "fwd=uri-miss" in en.headers["cache-status"]
    assert "fwd=vary-miss" in fr.headers["cache-status"]
    assert en2.content == en.content and "hit" in en2.headers["cache-status"]
    assert fr2.content == fr.content and "hit" in fr2.headers["cache-status"]
    assert b"accept-language=fr" in fr2.content
    # Absent and empty are different variants.
    assert "fwd=vary-miss" in none.headers["cache-status"]
    assert "fwd=vary-miss" in empty.headers["cache-status"]
    assert "hit" in none2.headers["cache-status"] and none2.content == none.content
    assert origin.calls["/v"] == 4


async def test_vary_change_never_serves_wrong_variant(cache: RedisCache, framework: str) -> None:
    spec = Spec(headers=[("vary", "accept-language")], echo_headers=("accept-language", "x-v"))
    origin = Origin(specs={"/vc": spec})
    async with make_client(cache, origin, framework, default_ttl=60) as client:
        await client.get("/vc", headers={"accept-language": "en", "x-v": "1"})
        # The app changes its Vary: now it varies on x-v only.
        spec.headers = [("vary", "x-v")]
        r2 = await client.get("/vc", headers={"accept-language": "de", "x-v": "2"})
        r3 = await client.get("/vc", headers={"accept-language": "en", "x-v": "1"})
        r4 = await client.get("/vc", headers={"accept-language": "fr", "x-v": "2"})
    assert "fwd=vary-miss" in r2.headers["cache-status"]
    # The marker now names x-v: the old accept-language=en variant is not served for x-v=1.
    assert "fwd=vary-miss" in r3.headers["cache-status"]
    assert b"call=3" in r3.content
    assert "hit" in r4.headers["cache-status"] and r4.content == r2.content
    # The new marker dropped the variant stored under the old Vary: two are left.
    assert await cache.purge_url("http://testserver/vc") == 2


async def test_variants_of_an_older_vary_never_come_back(cache: RedisCache) -> None:
    spec = Spec(headers=[("vary", "accept-language")], echo_headers=("accept-language",))
    origin = Origin(specs={"/back": spec})
    async with make_client(cache, origin, default_ttl=60) as client:
        await client.get("/back", headers={"accept-language": "en"})  # call 1, variant en
        spec.headers = []  # the app stops varying: a plain entry replaces the marker
        plain = await client.get("/back", headers={"accept-language": "de"})  # call 2
        spec.headers = [("vary", "accept-language")]  # and varies again
        refilled = await client.get(
            "/back", headers={"accept-language": "fr", "cache-control": "no-cache"}
        )  # call 3: a new marker
        en = await client.get("/back", headers={"accept-language": "en"})
    assert plain.headers["cache-status"].endswith("stored")
    assert refilled.headers["cache-status"].endswith("stored")
    # RFC 9111 4: the most recent response is used; call 1's variant is gone, not served.
    assert "fwd=vary-miss" in en.headers["cache-status"]
    assert b"call=4" in en.content and b"accept-language=en" in en.content
    assert origin.calls["/back"] == 4


async def test_variants_of_a_vary_that_changed_and_changed_back_never_come_back(
    cache: RedisCache,
) -> None:
    spec = Spec(headers=[("vary", "x-a")], echo_headers=("x-a", "x-b"))
    origin = Origin(specs={"/ab": spec})
    async with make_client(cache, origin, default_ttl=60) as client:
        await client.get("/ab", headers={"x-a": "1", "x-b": "1"})  # call 1 under Vary: x-a
        spec.headers = [("vary", "x-b")]
        await client.get("/ab", headers={"x-a": "2", "x-b": "2"})  # call 2 under Vary: x-b
        spec.headers = [("vary", "x-a")]
        await client.get("/ab", headers={"x-a": "3", "x-b": "3", "cache-control": "no-cache"})
        again = await client.get("/ab", headers={"x-a": "1", "x-b": "1"})
    assert "fwd=vary-miss" in again.headers["cache-status"]
    assert b"call=4" in again.content
    # Only the variants of the current Vary are left to purge.
    assert await cache.purge_url("http://testserver/ab") == 2


async def test_vary_star_never_stored(cache: RedisCache, framework: str) -> None:
    origin = Origin(specs={"/s": Spec(headers=[("vary", "*")])})
    async with make_client(cache, origin, framework, default_ttl=60) as client:
        r1 = await client.get("/s")
        r2 = await client.get("/s")
    assert r1.headers["cache-status"].endswith("detail=vary-star")
    assert "hit" not in r2.headers["cache-status"]
    assert origin.calls["/s"] == 2


async def test_vary_on_always_keys_on_header(cache: RedisCache, framework: str) -> None:
    origin = Origin(specs={"/t": Spec(echo_headers=("x-tenant",))})
    async with make_client(
        cache, origin, framework, default_ttl=60, vary_on=["X-Tenant"]
    ) as client:
        a = await client.get("/t", headers={"x-tenant": "a"})
        b = await client.get("/t", headers={"x-tenant": "b"})
        a2 = await client.get("/t", headers={"x-tenant": "a"})
    assert b"x-tenant=b" in b.content
    assert "hit" in a2.headers["cache-status"] and a2.content == a.content
    assert origin.calls["/t"] == 2


async def test_purge_url_removes_every_variant(cache: RedisCache) -> None:
    origin = Origin(specs={"/u": Spec(headers=[("vary", "accept")])})
    async with make_client(cache, origin, default_ttl=60) as client:
        for accept in ("a/b", "c/d", "e/f"):
            await client.get("/u?x=1", headers={"accept": accept})
        removed = await cache.purge_url("http://testserver/u?x=1")
        after = await client.get("/u?x=1", headers={"accept": "a/b"})
    assert removed == 3
    assert "fwd=uri-miss" in after.headers["cache-status"]
    assert await cache.purge_url("http://testserver/nothing") == 0


@pytest.mark.parametrize(
    ("headers", "detail"),
    [
        ([("cache-control", "no-store")], "no-store"),
        ([("cache-control", "private, max-age=60")], "private"),
        ([("set-cookie", "sid=1")], "set-cookie"),
        # A 200 with Content-Range is whole and stored (RFC 9110 14.4; the case this replaces
        # expected "partial"): see tests/test_conformance.py. A no-cache response without a
        # validator could never be revalidated, so it is not stored.
        ([("cache-control", "no-cache")], "no-cache-no-validator"),
    ],
)
async def test_response_never_stored(
    cache: RedisCache, headers: list[tuple[str, str]], detail: str, framework: str
) -> None:
    origin = Origin(specs={"/n": Spec(headers=headers)})
    async with make_client(cache, origin, framework, default_ttl=60) as client:
        r1 = await client.get("/n")
        r2 = await client.get("/n")
    assert (
        r1.headers["cache-status"] == f"redis-cache; fwd=uri-miss; fwd-status=200; detail={detail}"
    )
    assert "hit" not in r2.headers["cache-status"]
    assert origin.calls["/n"] == 2


async def test_set_cookie_cached_when_configured(cache: RedisCache, framework: str) -> None:
    origin = Origin(specs={"/c": Spec(headers=[("set-cookie", "theme=dark")])})
    async with make_client(
        cache, origin, framework, default_ttl=60, cache_set_cookie=True
    ) as client:
        await client.get("/c")
        client.cookies.clear()  # another client: one that sends the cookie passes the cache
        r2 = await client.get("/c")
    assert "hit" in r2.headers["cache-status"]
    assert r2.headers["set-cookie"] == "theme=dark"


async def test_status_outside_cacheable_set(cache: RedisCache) -> None:
    # Without explicit freshness: a 500 that says max-age=60 is stored now (RFC 9111 3;
    # tests/test_conformance.py), default_ttl applies to cacheable_statuses only.
    origin = Origin(specs={"/e": Spec(status=500)})
    async with make_client(cache, origin, default_ttl=60) as client:
        r = await client.get("/e")
    assert r.headers["cache-status"].endswith("fwd-status=500; detail=status")


async def test_404_is_cacheable_by_default(cache: RedisCache) -> None:
    origin = Origin(specs={"/missing": Spec(status=404)})
    async with make_client(cache, origin, default_ttl=60) as client:
        await client.get("/missing")
        r = await client.get("/missing")
    assert r.status_code == 404 and "hit" in r.headers["cache-status"]


async def test_default_ttl_none_stores_only_explicit_freshness(
    cache: RedisCache, framework: str
) -> None:
    origin = Origin(specs={"/explicit": Spec(headers=[("cache-control", "max-age=30")])})
    async with make_client(cache, origin, framework) as client:
        implicit = await client.get("/implicit")
        await client.get("/explicit")
        explicit = await client.get("/explicit")
    assert implicit.headers["cache-status"].endswith("detail=no-ttl")
    assert explicit.headers["cache-status"] in (
        "redis-cache; hit; ttl=30",
        "redis-cache; hit; ttl=29",
    )


async def test_s_maxage_wins_over_max_age(cache: RedisCache, framework: str) -> None:
    origin = Origin(specs={"/sm": Spec(headers=[("cache-control", "max-age=5, s-maxage=300")])})
    async with make_client(cache, origin, framework) as client:
        await client.get("/sm")
        r = await client.get("/sm")
    ttl = int(r.headers["cache-status"].rsplit("ttl=", 1)[1])
    assert 298 <= ttl <= 300


async def test_response_no_cache_stored_but_always_forwarded(
    cache: RedisCache, framework: str
) -> None:
    # With a validator: without one it could never be revalidated, and is not stored.
    headers = [("cache-control", "no-cache, max-age=60"), ("etag", '"v1"')]
    origin = Origin(specs={"/nc": Spec(headers=headers)})
    async with make_client(cache, origin, framework) as client:
        r1 = await client.get("/nc")
        r2 = await client.get("/nc")
    assert r1.headers["cache-status"].endswith("stored")
    assert "fwd=stale" in r2.headers["cache-status"]
    assert origin.calls["/nc"] == 2


@pytest.mark.parametrize(
    ("request_cc", "fwd", "stores"),
    [
        ("no-store", "request", False),
        ("no-cache", "request", True),
    ],
)
async def test_request_cache_control_forwarding(
    cache: RedisCache, request_cc: str, fwd: str, stores: bool, framework: str
) -> None:
    origin = Origin()
    async with make_client(cache, origin, framework, default_ttl=60) as client:
        await client.get("/rc")
        forced = await client.get("/rc", headers={"cache-control": request_cc})
        after = await client.get("/rc")
    assert forced.headers["cache-status"].startswith(f"redis-cache; fwd={fwd}")
    assert origin.calls["/rc"] == 2
    if stores:
        assert after.content == forced.content
    else:
        assert after.content != forced.content


async def test_request_max_age(cache: RedisCache, framework: str) -> None:
    origin = Origin()
    async with make_client(cache, origin, framework, default_ttl=60) as client:
        await client.get("/ma")
        advance_clock(client, 10)
        young_enough = await client.get("/ma", headers={"cache-control": "max-age=20"})
        too_old = await client.get("/ma", headers={"cache-control": "max-age=5"})
    assert "hit" in young_enough.headers["cache-status"]
    assert young_enough.headers["age"] == "10"
    assert "fwd=stale" in too_old.headers["cache-status"]


async def test_only_if_cached(cache: RedisCache, framework: str) -> None:
    origin = Origin()
    async with make_client(cache, origin, framework, default_ttl=60) as client:
        miss = await client.get("/oic", headers={"cache-control": "only-if-cached"})
        await client.get("/oic")
        hit = await client.get("/oic", headers={"cache-control": "only-if-cached"})
    assert miss.status_code == 504
    assert origin.calls["/oic"] == 1
    assert hit.status_code == 200


async def test_request_cache_control_ignored_when_not_honoured(
    cache: RedisCache, framework: str
) -> None:
    origin = Origin()
    async with make_client(
        cache, origin, framework, default_ttl=60, honour_request_cache_control=False
    ) as client:
        await client.get("/ig")
        r = await client.get("/ig", headers={"cache-control": "no-cache"})
    assert "hit" in r.headers["cache-status"]


async def test_age_and_ttl_follow_clock(cache: RedisCache) -> None:
    origin = Origin()
    async with make_client(cache, origin, default_ttl=60) as client:
        await client.get("/clock")
        advance_clock(client, 25)
        r = await client.get("/clock")
        advance_clock(client, 40)
        expired = await client.get("/clock")
    assert r.headers["age"] == "25"
    assert r.headers["cache-status"] == "redis-cache; hit; ttl=35"
    assert "fwd=stale" in expired.headers["cache-status"]


def advance_clock(client: httpx.AsyncClient, seconds: float) -> None:
    """Move the middleware's clock on: it is injected (``context.clock``), so every age it
    computes, in whichever module, reads this one."""
    context = middleware_of(client).context
    now = context.clock()
    context.clock = lambda: now + seconds


async def test_rules_override_default_ttl_and_never(cache: RedisCache) -> None:
    import re

    origin = Origin(specs={"/quotes/x": Spec(headers=[("cache-control", "max-age=300")])})
    rules = {"/fast/*": 5, re.compile(r"^/admin(/|$)"): None, "/quotes/*": 10}
    async with make_client(cache, origin, default_ttl=60, rules=rules) as client:
        await client.get("/fast/a/b")
        fast = await client.get("/fast/a/b")
        admin1 = await client.get("/admin/users")
        admin2 = await client.get("/admin/users")
        await client.get("/quotes/x")
        quote = await client.get("/quotes/x")
        await client.get("/other")
        other = await client.get("/other")
    assert fast.headers["cache-status"] == "redis-cache; hit; ttl=5"
    assert admin1.headers["cache-status"] == "redis-cache; fwd=bypass; fwd-status=200; detail=rule"
    assert "hit" not in admin2.headers["cache-status"]
    # A rule replaces the default TTL only: the response's own max-age still wins.
    assert quote.headers["cache-status"] == "redis-cache; hit; ttl=300"
    assert other.headers["cache-status"] == "redis-cache; hit; ttl=60"


async def test_exclude_leaves_request_untouched(cache: RedisCache) -> None:
    origin = Origin()
    async with make_client(cache, origin, default_ttl=60, exclude=["/health", "/private/*"]) as c:
        r1 = await c.get("/private/a")
        r2 = await c.get("/private/a")
        r3 = await c.get("/health")
    assert "cache-status" not in r1.headers and "cache-status" not in r3.headers
    assert origin.calls["/private/a"] == 2
    assert r2.content != r1.content


async def test_bypass_header_skips_lookup_and_refreshes(cache: RedisCache) -> None:
    origin = Origin()
    async with make_client(cache, origin, default_ttl=60, bypass_header="X-Cache-Bypass") as c:
        old = await c.get("/b")
        fresh = await c.get("/b", headers={"x-cache-bypass": "1"})
        after = await c.get("/b")
    assert fresh.headers["cache-status"] == "redis-cache; fwd=bypass; fwd-status=200; stored"
    assert fresh.content != old.content
    assert after.content == fresh.content and "hit" in after.headers["cache-status"]


async def test_bypass_token_must_match(cache: RedisCache) -> None:
    origin = Origin()
    async with make_client(
        cache, origin, default_ttl=60, bypass_header="x-cache-bypass", bypass_token="s3cret"
    ) as c:
        await c.get("/bt")
        wrong = await c.get("/bt", headers={"x-cache-bypass": "guess"})
        right = await c.get("/bt", headers={"x-cache-bypass": "s3cret"})
    assert "hit" in wrong.headers["cache-status"]
    assert "fwd=bypass" in right.headers["cache-status"]
    assert origin.calls["/bt"] == 2


async def test_cache_name_in_cache_status(cache: RedisCache) -> None:
    origin = Origin()
    async with make_client(cache, origin, default_ttl=60, cache_name="edge-1") as c:
        await c.get("/n")
        r = await c.get("/n")
    assert r.headers["cache-status"] == "edge-1; hit; ttl=60"


async def test_unsafe_methods_pass_through(cache: RedisCache) -> None:
    origin = Origin()
    async with make_client(cache, origin, default_ttl=60) as c:
        p1 = await c.post("/m")
        p2 = await c.post("/m")
    assert "cache-status" not in p1.headers
    assert p1.content != p2.content


async def test_app_cache_status_kept_and_ours_appended(cache: RedisCache) -> None:
    origin = Origin(specs={"/up": Spec(headers=[("cache-status", "origin-cache; hit")])})
    async with make_client(cache, origin, default_ttl=60) as c:
        r1 = await c.get("/up")
        r2 = await c.get("/up")
    assert r1.headers.get_list("cache-status") == [
        "origin-cache; hit",
        "redis-cache; fwd=uri-miss; fwd-status=200; stored",
    ]
    assert r2.headers.get_list("cache-status") == ["origin-cache; hit", "redis-cache; hit; ttl=60"]


async def test_expires_header_freshness(cache: RedisCache) -> None:
    from email.utils import formatdate

    now = time.time()
    origin = Origin(
        specs={
            "/exp": Spec(
                headers=[
                    ("date", formatdate(now, usegmt=True)),
                    ("expires", formatdate(now + 120, usegmt=True)),
                ]
            )
        }
    )
    async with make_client(cache, origin) as c:
        await c.get("/exp")
        r = await c.get("/exp")
    ttl = int(r.headers["cache-status"].rsplit("ttl=", 1)[1])
    assert 118 <= ttl <= 120


async def test_age_from_origin_counts(cache: RedisCache) -> None:
    origin = Origin(
        specs={"/aged": Spec(headers=[("cache-control", "max-age=100"), ("age", "30")])}
    )
    async with make_client(cache, origin) as c:
        await c.get("/aged")
        r = await c.get("/aged")
    assert r.headers["age"] == "30"
    assert r.headers.get_list("age") == ["30"]
    assert r.headers["cache-status"] == "redis-cache; hit; ttl=70"


async def test_websocket_scope_passes_through_untouched(
    cache: RedisCache, redis_client: Any, namespace: str
) -> None:
    from redis_cache_middleware import CacheMiddleware

    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope)
        message = await receive()
        await send({"type": "websocket.accept", "echo": message["type"]})

    async def receive() -> Any:
        return {"type": "websocket.connect"}

    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "websocket", "path": "/ws", "headers": [(b"host", b"example.com")]}
    await CacheMiddleware(app, cache=cache, default_ttl=60)(scope, receive, send)
    assert seen == [scope] and seen[0] is scope
    assert sent == [{"type": "websocket.accept", "echo": "websocket.connect"}]
    assert [k async for k in redis_client.scan_iter(match=f"{namespace}:*")] == []


def _ours(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "redis_cache_middleware"]


async def test_debug_log_tells_miss_store_and_hit(
    cache: RedisCache, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="redis_cache_middleware")
    origin = Origin()
    async with make_client(cache, origin, default_ttl=60) as client:
        await client.get("/logged/a?q=1")
        await client.get("/logged/a?q=1")
    records = _ours(caplog)
    assert all(r.levelno == logging.DEBUG for r in records)
    messages = [r.getMessage() for r in records]
    assert len(messages) == 3, messages
    miss, stored, hit = messages
    assert miss.startswith("miss (fwd=uri-miss)") and "GET '/logged/a'" in miss
    assert stored.startswith("stored (ttl=60 s") and "GET '/logged/a'" in stored
    assert hit.startswith("hit (redis-cache; hit; ttl=") and "GET '/logged/a'" in hit


async def test_debug_log_tells_each_other_decision_and_nothing_louder(
    cache: RedisCache, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="redis_cache_middleware")

    class BurstOrigin(Origin):
        async def respond(self, request: Any) -> Any:
            if request.url.path == "/burst":
                await asyncio.sleep(0.05)  # the burst's first fill is still under way
            return await super().respond(request)

    origin = BurstOrigin(specs={"/private": Spec(headers=[("cache-control", "private")])})
    async with make_client(cache, origin, default_ttl=60, rules={"/never": None}) as client:
        await client.get("/private")
        await client.get("/never")
        await client.get("/fresh", headers={"cache-control": "no-cache"})
        await asyncio.gather(*(client.get("/burst") for _ in range(3)))
        await client.post("/fresh")
        await cache.purge_url("http://testserver/burst")
    messages = [r.getMessage() for r in _ours(caplog)]
    expected = [
        "not stored (private; fwd-status=200): GET '/private'",
        "bypass (fwd=bypass; detail=rule): GET '/never'",
        "bypass (fwd=request): GET '/fresh'",
        "collapsed (redis-cache; fwd=uri-miss; fwd-status=200; collapsed; ttl=",
        "invalidated (1 removed): POST '/fresh' purged '/fresh'",
        "purged (url 'http://testserver/burst'): 1 removed",
    ]
    for text in expected:
        assert any(m.startswith(text) for m in messages), (text, messages)
    # Normal traffic says nothing at INFO or above.
    assert all(r.levelno == logging.DEBUG for r in _ours(caplog))


async def test_log_level_change_applies_from_the_next_request(
    cache: RedisCache, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="redis_cache_middleware")
    origin = Origin()
    async with make_client(cache, origin, default_ttl=60) as client:
        await client.get("/level")
        assert _ours(caplog) == []
        caplog.set_level(logging.DEBUG, logger="redis_cache_middleware")
        await client.get("/level")
    assert [r.getMessage().split(" ")[0] for r in _ours(caplog)] == ["hit"]
