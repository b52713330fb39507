"""Purging: by URL, tag, prefix and namespace, the on_purge hook, and automatic invalidation."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
import redis.asyncio
import redis.exceptions
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from redis_cache_middleware import CacheMiddleware, RedisCache, keys
from redis_cache_middleware.cache import PurgeEvent

from .helpers import Origin, Spec, make_client

pytestmark = pytest.mark.anyio


def _status(response: Any) -> str:
    return str(response.headers["cache-status"])


async def test_purge_tag_removes_tagged_entries_only(cache: RedisCache) -> None:
    origin = Origin(
        specs={
            "/p/1": Spec(headers=[("surrogate-key", "product:1 products")]),
            "/p/2": Spec(headers=[("surrogate-key", "product:2 products")]),
            "/c/1": Spec(headers=[("cache-tag", "category:1, products")]),
            "/other": Spec(),
        }
    )
    async with make_client(cache, origin, default_ttl=60) as client:
        first = await client.get("/p/1")
        for path in ("/p/2", "/c/1", "/other"):
            await client.get(path)
        assert await cache.purge_tag("product:1") == 1
        assert "hit" not in _status(await client.get("/p/1"))
        assert "hit" in _status(await client.get("/p/2"))
        assert await cache.purge_tag("products") == 3
        for path in ("/p/1", "/p/2", "/c/1"):
            assert "hit" not in _status(await client.get(path))
        assert "hit" in _status(await client.get("/other"))
    # The tag headers are for the cache: stripped before the client sees them.
    assert "surrogate-key" not in first.headers
    assert await cache.purge_tag("nobody-uses-this") == 0


async def test_tag_header_kept_when_configured(cache: RedisCache) -> None:
    origin = Origin(specs={"/k": Spec(headers=[("surrogate-key", "a b")])})
    async with make_client(cache, origin, default_ttl=60, keep_tag_header=True) as client:
        r = await client.get("/k")
        hit = await client.get("/k")
    assert r.headers["surrogate-key"] == "a b"
    assert hit.headers["surrogate-key"] == "a b"


async def test_tag_rules_add_tags(cache: RedisCache) -> None:
    origin = Origin()
    async with make_client(
        cache, origin, default_ttl=60, tag_rules={"/users/*": ["users"]}
    ) as client:
        await client.get("/users/1")
        await client.get("/users/2")
        await client.get("/teams/1")
        assert await cache.purge_tag("users") == 2
        assert "hit" in _status(await client.get("/teams/1"))


async def test_purge_tag_covers_every_vary_variant(cache: RedisCache) -> None:
    origin = Origin(specs={"/v": Spec(headers=[("vary", "accept"), ("surrogate-key", "v")])})
    async with make_client(cache, origin, default_ttl=60) as client:
        for accept in ("a/a", "b/b"):
            await client.get("/v", headers={"accept": accept})
        assert await cache.purge_tag("v") == 2
        assert "hit" not in _status(await client.get("/v", headers={"accept": "a/a"}))


async def test_tag_sets_are_pruned_and_expire(cache: RedisCache, redis_client: Any) -> None:
    origin = Origin(
        specs={
            "/short": Spec(headers=[("cache-control", "max-age=1"), ("surrogate-key", "t")]),
            "/long": Spec(headers=[("cache-control", "max-age=100"), ("surrogate-key", "t")]),
        }
    )
    tkey = keys.tag_key(cache.namespace, 0, "t")
    async with make_client(cache, origin) as client:
        await client.get("/short")
        assert await redis_client.zcard(tkey) == 1
        assert 0 < await redis_client.pttl(tkey) <= 1000
        await asyncio.sleep(1.1)
        await client.get("/long")
        # The expired member was pruned when the next one was added...
        assert await redis_client.zcard(tkey) == 1
        # ...and the set lives as long as its longest member.
        assert 99_000 < await redis_client.pttl(tkey) <= 100_000


async def test_index_ttls_never_go_down(cache: RedisCache, redis_client: Any) -> None:
    """A shorter-lived entry stored after a longer-lived one leaves every index it joins
    (its tag set, its host's path indexes, the set of hosts) living as long as the longer
    one: each index key's TTL only grows."""
    origin = Origin(
        specs={
            "/long": Spec(headers=[("cache-control", "max-age=100"), ("surrogate-key", "t")]),
            "/short": Spec(headers=[("cache-control", "max-age=1"), ("surrogate-key", "t")]),
        }
    )
    ns = cache.namespace
    lex, exp = keys.prefix_keys(ns, 0, b"testserver")
    indexes = (keys.tag_key(ns, 0, "t"), lex, exp, keys.hosts_key(ns, 0))
    async with make_client(cache, origin) as client:
        await client.get("/long")
        for key in indexes:
            assert 99_000 < await redis_client.pttl(key) <= 100_000, key
        await client.get("/short")
        for key in indexes:
            assert 98_000 < await redis_client.pttl(key) <= 100_000, key
    hosts = await redis_client.zrange(keys.hosts_key(ns, 0), 0, -1, withscores=True)
    assert [host for host, _ in hosts] == [b"testserver"]
    assert hosts[0][1] > time.time() * 1000 + 98_000  # the later, shorter store kept its expiry


async def test_purge_prefix_leaves_siblings(cache: RedisCache) -> None:
    origin = Origin()
    paths = ["/users", "/users?page=2", "/users/1", "/users/1/posts", "/users2", "/userspace/x"]
    async with make_client(cache, origin, default_ttl=60) as client:
        for p in paths:
            await client.get(p)
        assert await cache.purge_prefix("/users") == 4
        for p in ("/users2", "/userspace/x"):
            assert "hit" in _status(await client.get(p)), p
        for p in ("/users", "/users?page=2", "/users/1", "/users/1/posts"):
            assert "hit" not in _status(await client.get(p)), p


async def test_purge_prefix_with_trailing_slash_keeps_the_parent(cache: RedisCache) -> None:
    origin = Origin()
    async with make_client(cache, origin, default_ttl=60) as client:
        for p in ("/docs", "/docs/a", "/docs/b/c"):
            await client.get(p)
        assert await cache.purge_prefix("/docs/") == 2
        assert "hit" in _status(await client.get("/docs"))


async def test_purge_prefix_by_host(cache: RedisCache) -> None:
    origin = Origin()
    async with make_client(cache, origin, default_ttl=60) as client:
        await client.get("/a/1", headers={"host": "one.example"})
        await client.get("/a/1", headers={"host": "two.example:8080"})
        assert await cache.purge_prefix("/a", host="one.example") == 1
        assert "hit" in _status(await client.get("/a/1", headers={"host": "two.example:8080"}))
        assert await cache.purge_prefix("/a", host="two.example:8080") == 1
    with pytest.raises(ValueError, match="path_prefix"):
        await cache.purge_prefix("a")


async def test_clear_then_fresh_stores(cache: RedisCache) -> None:
    origin = Origin()
    async with make_client(cache, origin, default_ttl=60) as client:
        await client.get("/x")
        assert "hit" in _status(await client.get("/x"))
        await cache.clear()
        after = await client.get("/x")
        again = await client.get("/x")
    assert "fwd=uri-miss" in _status(after) and "stored" in _status(after)
    assert "hit" in _status(again) and again.content == after.content


async def test_clear_seen_by_another_process_at_once_when_strict(
    redis_client: Any, namespace: str
) -> None:
    # Two RedisCache objects on one Redis stand for two worker processes.
    one = RedisCache(redis_client, namespace=namespace)
    two = RedisCache(redis_client, namespace=namespace, generation_check_interval=0)
    origin = Origin()
    async with (
        make_client(one, origin, default_ttl=60) as c1,
        make_client(two, origin, default_ttl=60) as c2,
    ):
        await c1.get("/shared")
        assert "hit" in _status(await c2.get("/shared"))
        await one.clear()
        assert "hit" not in _status(await c2.get("/shared"))


async def test_clear_seen_by_another_process_within_interval(
    redis_client: Any, namespace: str
) -> None:
    one = RedisCache(redis_client, namespace=namespace)
    two = RedisCache(redis_client, namespace=namespace, generation_check_interval=0.3)
    origin = Origin()
    async with (
        make_client(one, origin, default_ttl=60) as c1,
        make_client(two, origin, default_ttl=60) as c2,
    ):
        await c1.get("/shared")
        assert "hit" in _status(await c2.get("/shared"))
        await one.clear()
        # The calling process sees the clear at once...
        assert "hit" not in _status(await c1.get("/shared"))
        await asyncio.sleep(0.35)
        # ...another one at its next generation check.
        after = await c2.get("/shared")
        assert "hit" not in _status(after) or after.content == (await c1.get("/shared")).content


async def test_purge_during_concurrent_reads(
    cache: RedisCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    origin = Origin()
    readers, reads = 5, 4

    async def burst(client: Any) -> list[Any]:
        async def reader() -> list[Any]:
            return [await client.get("/hot") for _ in range(reads)]

        batches = await asyncio.gather(*(reader() for _ in range(readers)))
        return [response for batch in batches for response in batch]

    async with make_client(cache, origin, default_ttl=60) as client:
        old = (await client.get("/hot")).content
        unlink = cache._purger._unlink
        seen: dict[str, list[Any]] = {}

        async def unlink_amid_reads(groups: Any) -> list[int]:
            # Concurrent reads while the purge runs: before its UNLINK and after it.
            seen["before"] = await burst(client)
            removed = await unlink(groups)
            seen["after"] = await burst(client)
            return removed

        monkeypatch.setattr(cache._purger, "_unlink", unlink_amid_reads)
        removed = await cache.purge_url("http://testserver/hot")
        final = await client.get("/hot")
    assert removed == 1
    # Before the UNLINK every read is a hit on the old entry.
    assert all(r.status_code == 200 and r.content == old for r in seen["before"])
    assert all("; hit" in _status(r) for r in seen["before"])
    # After it no read sees the old entry; the concurrent misses make one app call between
    # them (one fills, the others wait for its entry), and every later read is a hit.
    after = seen["after"]
    assert all(r.status_code == 200 and r.content != old for r in after)
    assert len({r.content for r in after}) == 1
    assert sum(_status(r).endswith("; stored") for r in after) == 1
    assert sum("collapsed" in _status(r) for r in after) == readers - 1
    assert sum("; hit" in _status(r) for r in after) == readers * (reads - 1)
    assert "hit" in _status(final) and final.content == after[0].content
    assert origin.calls["/hot"] == 2


async def test_on_purge_hook_receives_events(redis_client: Any, namespace: str) -> None:
    events: list[PurgeEvent] = []

    async def hook(event: PurgeEvent) -> None:
        events.append(event)

    cache = RedisCache(redis_client, namespace=namespace, on_purge=hook)
    origin = Origin(specs={"/t": Spec(headers=[("surrogate-key", "x")])})
    async with make_client(cache, origin, default_ttl=60) as client:
        await client.get("/t")
        await cache.purge_tag("x")
        await cache.purge_url("http://testserver/t")
        await cache.purge_prefix("/t")
        await cache.clear()
    assert events == [
        PurgeEvent("tag", ("x",), 1),
        PurgeEvent("url", ("http://testserver/t",), 0),
        PurgeEvent("prefix", ("/t",), 0),
        PurgeEvent("clear", (), None),
    ]


async def test_failing_on_purge_hook_is_logged_not_raised(
    redis_client: Any, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    def hook(event: PurgeEvent) -> None:
        raise RuntimeError("cdn down")

    cache = RedisCache(redis_client, namespace=namespace, on_purge=hook)
    assert await cache.purge_url("http://testserver/none") == 0
    assert any("on_purge hook failed" in r.getMessage() for r in caplog.records)


UNSAFE = pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])


@UNSAFE
async def test_unsafe_method_invalidates_get(cache: RedisCache, method: str) -> None:
    origin = Origin()
    async with make_client(cache, origin, default_ttl=60) as client:
        await client.get("/items/1")
        await client.get("/items/2")
        response = await client.request(method, "/items/1")
        after = await client.get("/items/1")
        other = await client.get("/items/2")
    assert response.status_code == 200
    assert "hit" not in _status(after) and _status(after).endswith("; stored")
    assert "hit" in _status(other)
    assert cache.stats.invalidated == 1
    assert origin.calls["/items/1"] == 3  # GET, the unsafe request, the GET after it


@UNSAFE
@pytest.mark.parametrize("status", [404, 409, 500, 503])
async def test_unsafe_error_response_does_not_invalidate(
    cache: RedisCache, method: str, status: int
) -> None:
    origin = Origin(specs={"/fail": Spec()})
    async with make_client(cache, origin, default_ttl=60) as client:
        await client.get("/fail")
        origin.specs["/fail"] = Spec(status=status)
        response = await client.request(method, "/fail")
        origin.specs["/fail"] = Spec()
        after = await client.get("/fail")
    assert response.status_code == status
    assert "hit" in _status(after)
    assert cache.stats.invalidated == 0


async def test_invalidation_follows_same_host_location(cache: RedisCache) -> None:
    origin = Origin(
        specs={
            "/users": Spec(
                status=201,
                headers=[
                    ("location", "/users/9"),
                    ("content-location", "http://testserver/users/9?full=1"),
                ],
            )
        }
    )
    async with make_client(cache, origin, default_ttl=60) as client:
        for p in ("/users/9", "/users/9?full=1", "/users/10"):
            await client.get(p)
        origin.specs["/users/9"] = Spec(headers=[("location", "http://elsewhere.example/users/10")])
        await client.post("/users")
        assert "hit" not in _status(await client.get("/users/9"))
        assert "hit" not in _status(await client.get("/users/9?full=1"))
        # A Location on another host is never purged.
        await client.put("/users/9")
        assert "hit" in _status(await client.get("/users/10"))
    assert cache.stats.invalidated >= 2


async def test_invalidation_can_be_turned_off(cache: RedisCache) -> None:
    origin = Origin()
    async with make_client(cache, origin, default_ttl=60, invalidate_on_unsafe=False) as c:
        await c.get("/keep")
        await c.post("/keep")
        assert "hit" in _status(await c.get("/keep"))


async def test_invalidation_calls_on_purge_behind_the_response(
    redis_client: Any, namespace: str
) -> None:
    events: list[PurgeEvent] = []
    release = asyncio.Event()

    async def hook(event: PurgeEvent) -> None:
        await release.wait()  # a slow CDN
        events.append(event)

    cache = RedisCache(redis_client, namespace=namespace, on_purge=hook)
    origin = Origin()
    async with make_client(cache, origin, default_ttl=60) as client:
        await client.get("/users")
        await client.get("/users/9")
        origin.specs["/users"] = Spec(status=201, headers=[("location", "/users/9")])
        response = await asyncio.wait_for(client.post("/users"), 5)
        # The client has its answer while the hook still waits, and the purge is done.
        assert response.status_code == 201 and events == []
        assert "hit" not in _status(await client.get("/users/9"))
        release.set()
        await cache.aclose()  # waits for the hook calls still running
    assert events == [
        PurgeEvent("invalidate", ("http://testserver/users", "http://testserver/users/9"), 2)
    ]


async def test_invalidation_calls_a_sync_on_purge_with_purgeable_urls(
    redis_client: Any, namespace: str
) -> None:
    events: list[PurgeEvent] = []
    cache = RedisCache(redis_client, namespace=namespace, on_purge=events.append)
    origin = Origin()
    async with make_client(cache, origin, default_ttl=60) as client:
        await client.get("/items/a b?x=1")
        await client.put("/items/a b?x=1")
        await client.post("/items/none")
        origin.specs["/items/error"] = Spec(status=500)
        await client.post("/items/error")  # an error answer invalidates nothing
        await client.get("/items/a b?x=1")
        await cache.aclose()
    assert events == [
        PurgeEvent("invalidate", ("http://testserver/items/a%20b?x=1",), 1),
        PurgeEvent("invalidate", ("http://testserver/items/none",), 0),
    ]
    # The URLs are the ones purge_url takes: forwarding them purges the same entries.
    assert await cache.purge_url(events[0].values[0]) == 1


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_failing_on_purge_hook_never_breaks_an_invalidation(
    redis_client: Any, namespace: str, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    def sync_hook(event: PurgeEvent) -> None:
        raise RuntimeError("cdn down")

    async def async_hook(event: PurgeEvent) -> None:
        raise RuntimeError("cdn down")

    hook = sync_hook if kind == "sync" else async_hook
    cache = RedisCache(redis_client, namespace=namespace, on_purge=hook)
    origin = Origin()
    async with make_client(cache, origin, default_ttl=60) as client:
        await client.get("/f")
        response = await client.delete("/f")
        await cache.aclose()
        after = await client.get("/f")
    assert response.status_code == 200
    assert "hit" not in _status(after) and cache.stats.invalidated == 1
    assert any("on_purge hook failed" in r.getMessage() for r in caplog.records)


async def test_invalidation_tells_on_purge_when_redis_failed(
    redis_client: Any, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[PurgeEvent] = []
    cache = RedisCache(redis_client, namespace=namespace, on_purge=events.append)

    async def redis_down(uhashes: Any) -> int:
        raise ConnectionError("redis down")

    monkeypatch.setattr(cache, "purge_hashes", redis_down)
    async with make_client(cache, Origin(), default_ttl=60) as client:
        response = await client.patch("/down")
        await cache.aclose()
    # The URL changed all the same: a CDN must still hear of it.
    assert response.status_code == 200
    assert events == [PurgeEvent("invalidate", ("http://testserver/down",), None)]


async def test_inspect_url_lists_variants(cache: RedisCache) -> None:
    origin = Origin(
        specs={"/i": Spec(headers=[("vary", "accept-language, cookie"), ("surrogate-key", "i")])}
    )
    async with make_client(cache, origin, default_ttl=60) as client:
        await client.get("/i", headers={"accept-language": "en", "cookie": "sid=secret"})
        await client.get("/i", headers={"accept-language": "fr"})
    infos = await cache.inspect_url("http://testserver/i")
    assert len(infos) == 2
    by_lang = {i.vary_values["accept-language"]: i for i in infos}
    assert set(by_lang) == {"en", "fr"}
    en = by_lang["en"]
    assert en.vary == ("accept-language", "cookie")
    # Credentials never reach Redis in clear.
    assert en.vary_values["cookie"] == "<redacted>"
    assert by_lang["fr"].vary_values["cookie"] is None
    assert en.status == 200 and en.tags == ("i",) and en.fresh_for == 60
    assert en.ttl_left is not None and 59 < en.ttl_left <= 60
    assert abs(en.stored_at - time.time()) < 5
    assert await cache.inspect_url("http://testserver/none") == []


async def test_scan_stats_counts_entries(cache: RedisCache) -> None:
    origin = Origin(specs={"/sv": Spec(headers=[("vary", "accept")])})
    async with make_client(cache, origin, default_ttl=60) as client:
        for i in range(5):
            await client.get(f"/s/{i}")
        await client.get("/sv", headers={"accept": "a/a"})
        await client.get("/sv", headers={"accept": "b/b"})
    stats = await cache.scan_stats()
    assert stats.entries == 7
    assert stats.keys_scanned >= 7
    assert stats.sampled is False
    small = await cache.scan_stats(sample=2)
    assert small.entries == 7 and small.sampled is True


async def test_entry_tagged_during_purge_tag_stays_purgeable(
    cache: RedisCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    origin = Origin(
        specs={
            "/a": Spec(headers=[("surrogate-key", "x")]),
            "/b": Spec(headers=[("surrogate-key", "x")]),
        }
    )
    async with make_client(cache, origin, default_ttl=60) as client:
        await client.get("/a")
        unlink = cache._purger._unlink
        stored_meanwhile = False

        async def unlink_then_store(doomed: Any) -> list[int]:
            nonlocal stored_meanwhile
            removed = await unlink(doomed)
            if not stored_meanwhile:
                stored_meanwhile = True
                await client.get("/b")  # tagged between the read and the cleanup
            return removed

        monkeypatch.setattr(cache._purger, "_unlink", unlink_then_store)
        assert await cache.purge_tag("x") == 1
        monkeypatch.setattr(cache._purger, "_unlink", unlink)
        assert await cache.purge_tag("x") == 1
        assert "hit" not in _status(await client.get("/b"))


def _store_again_after_unlink(
    cache: RedisCache, monkeypatch: pytest.MonkeyPatch, client: Any, path: str
) -> list[str]:
    """Make the cache's next purge store ``path`` again right after deleting the entries and
    before cleaning the indexes (a fill reaching Redis between the purge's steps); return
    the list that receives that request's Cache-Status."""
    unlink = cache._purger._unlink
    statuses: list[str] = []

    async def unlink_then_store(groups: Any) -> list[int]:
        removed = await unlink(groups)
        if not statuses:
            statuses.append(_status(await client.get(path)))
        return removed

    monkeypatch.setattr(cache._purger, "_unlink", unlink_then_store)
    return statuses


def _freeze_cache_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stop the wall clock the cache scores its indexes with: a URL stored again gets the
    very expiry it had (as two stores under one ``Expires`` date can)."""
    from types import SimpleNamespace

    from redis_cache_middleware._redis import purging as _purging
    from redis_cache_middleware._redis import store as _store

    frozen = time.time()
    clock = SimpleNamespace(time=lambda: frozen, monotonic=time.monotonic)
    for module in (_store, _purging):
        monkeypatch.setattr(module, "time", clock)


EXPIRIES = pytest.mark.parametrize("same_expiry", [False, True], ids=["new-expiry", "same-expiry"])


@EXPIRIES
async def test_url_stored_again_during_purge_tag_stays_purgeable(
    cache: RedisCache, redis_client: Any, monkeypatch: pytest.MonkeyPatch, same_expiry: bool
) -> None:
    if same_expiry:
        _freeze_cache_clock(monkeypatch)
    origin = Origin(specs={"/a": Spec(headers=[("surrogate-key", "x")])})
    tkey = keys.tag_key(cache.namespace, 0, "x")
    member = keys.url_key(cache.namespace, 0, cache.hash_for_url("http://testserver/a"))
    async with make_client(cache, origin, default_ttl=60) as client:
        await client.get("/a")
        first_score = await redis_client.zscore(tkey, member)
        refill = _store_again_after_unlink(cache, monkeypatch, client, "/a")
        assert await cache.purge_tag("x") == 1
        assert refill[0].endswith("; stored")
        # The new entry kept its membership, with the score its store gave it.
        score = await redis_client.zscore(tkey, member)
        assert score is not None and score == int(score)
        assert (score == first_score) is same_expiry
        assert "hit" in _status(await client.get("/a"))
        assert await cache.purge_tag("x") == 1
        assert "hit" not in _status(await client.get("/a"))
        assert origin.calls["/a"] == 3
    # A purge nothing raced with leaves nothing in the index.
    assert await cache.purge_tag("x") == 1
    assert await redis_client.zcard(tkey) == 0


@EXPIRIES
async def test_url_stored_again_during_purge_prefix_stays_purgeable(
    cache: RedisCache, redis_client: Any, monkeypatch: pytest.MonkeyPatch, same_expiry: bool
) -> None:
    if same_expiry:
        _freeze_cache_clock(monkeypatch)
    origin = Origin()
    lex, exp = keys.prefix_keys(cache.namespace, 0, b"testserver")
    member = keys.path_member("/docs/a", cache.hash_for_url("http://testserver/docs/a"))
    async with make_client(cache, origin, default_ttl=60) as client:
        await client.get("/docs/a")
        first_score = await redis_client.zscore(exp, member)
        refill = _store_again_after_unlink(cache, monkeypatch, client, "/docs/a")
        assert await cache.purge_prefix("/docs") == 1
        assert refill[0].endswith("; stored")
        assert await redis_client.zscore(lex, member) == 0
        score = await redis_client.zscore(exp, member)
        assert score is not None and score == int(score)
        assert (score == first_score) is same_expiry
        assert "hit" in _status(await client.get("/docs/a"))
        assert await cache.purge_prefix("/docs", host="testserver") == 1
        assert "hit" not in _status(await client.get("/docs/a"))
        assert origin.calls["/docs/a"] == 3
    assert await cache.purge_prefix("/docs") == 1
    assert await redis_client.zcard(lex) == 0 and await redis_client.zcard(exp) == 0


async def test_purges_work_on_a_full_redis(own_redis_server: Any, namespace: str) -> None:
    """Purging frees memory, so it must run when Redis refuses writes (noeviction)."""
    admin = redis.asyncio.Redis.from_url(own_redis_server.url)
    cache = RedisCache.from_url(own_redis_server.url, namespace=namespace)
    origin = Origin(specs={f"/full/{i}": Spec(headers=[("surrogate-key", "t")]) for i in range(3)})
    tkey = keys.tag_key(namespace, 0, "t")
    lex, exp = keys.prefix_keys(namespace, 0, b"testserver")
    try:
        async with make_client(cache, origin, default_ttl=60) as client:
            for i in range(5):
                await client.get(f"/full/{i}")
            await admin.config_set("maxmemory-policy", "noeviction")
            await admin.config_set("maxmemory", "1")
            with pytest.raises(redis.exceptions.OutOfMemoryError):
                await admin.set(f"{namespace}:probe", b"x")
            assert await cache.purge_tag("t") == 3
            assert await cache.purge_prefix("/full") == 2
            assert await admin.zcard(tkey) == 0
            assert await admin.zcard(lex) == 0 and await admin.zcard(exp) == 0
    finally:
        await admin.config_set("maxmemory", "0")
        await cache.aclose()
        await admin.aclose()


async def test_purge_url_ignores_user_info(cache: RedisCache) -> None:
    origin = Origin()
    async with make_client(cache, origin, default_ttl=60) as client:
        await client.get("/ui")
    assert await cache.purge_url("http://someone@testserver/ui") == 1


# -- entries refreshed by a 304 --------------------------------------------------------------


class Revalidating:
    """An origin whose document has an ETag per ``Accept-Language`` (and version), answering
    304 when the request's ``If-None-Match`` matches; ``cache_control`` goes on every answer,
    ``headers`` too."""

    def __init__(self, cache_control: str, headers: dict[str, str]) -> None:
        self.cache_control = cache_control
        self.headers = headers
        self.version = 1
        self.not_modified = 0

    async def respond(self, request: Request) -> Response:
        lang = request.headers.get("accept-language", "-")
        etag = f'"{lang}-v{self.version}"'
        headers = {"cache-control": self.cache_control, "etag": etag, **self.headers}
        if request.headers.get("if-none-match") == etag:
            self.not_modified += 1
            return Response(status_code=304, headers=headers)
        return Response(f"{request.url.path} {lang} v{self.version}".encode(), headers=headers)


def revalidating_client(cache: RedisCache, origin: Revalidating) -> httpx.AsyncClient:
    app = Starlette(routes=[Route("/{path:path}", origin.respond)])
    # max-age=0 with a validator: stored for keep_for_revalidation (0.5 s), stale at once, so
    # the next request revalidates; the 304 then gives it a 30 s life.
    app.add_middleware(CacheMiddleware, cache=cache, keep_for_revalidation=0.5)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


async def _store_then_refresh(
    client: httpx.AsyncClient, origin: Revalidating, path: str, **kw: Any
) -> None:
    first = await client.get(path, **kw)
    assert "stored" in _status(first)
    origin.cache_control = "max-age=30"
    refreshed = await client.get(path, **kw)
    assert _status(refreshed) == "redis-cache; fwd=stale; fwd-status=304; stored"
    origin.cache_control = "max-age=0"


async def _ttl_ms(redis_client: Any, key: str) -> int:
    return int(await redis_client.pttl(key))


async def test_purge_tag_and_prefix_find_an_entry_refreshed_by_304(
    cache: RedisCache, redis_client: Any
) -> None:
    origin = Revalidating("max-age=0", {"surrogate-key": "doc"})
    ns = cache.namespace
    async with revalidating_client(cache, origin) as client:
        await _store_then_refresh(client, origin, "/tagged")
        await _store_then_refresh(client, origin, "/prefixed/1")
        assert origin.not_modified == 2
        # The indexes live as long as the refreshed entries (30 s fresh, 0.5 s kept), not as
        # the first stores did.
        tkey = keys.tag_key(ns, 0, "doc")
        lex, exp = keys.prefix_keys(ns, 0, b"testserver")
        for key in (tkey, lex, exp, keys.hosts_key(ns, 0)):
            assert 29_000 < await _ttl_ms(redis_client, key) <= 30_500, key
        now_ms = time.time() * 1000
        scores = await redis_client.zrange(tkey, 0, -1, withscores=True)
        assert len(scores) == 2 and all(score > now_ms + 29_000 for _, score in scores)
        await asyncio.sleep(0.7)  # past the first stores' 0.5 s
        origin.version = 2
        assert await cache.purge_tag("doc") == 2
        tagged = await client.get("/tagged")
        await _store_then_refresh(client, origin, "/prefixed/2")
        await asyncio.sleep(0.7)
        assert await cache.purge_prefix("/prefixed") == 1
        prefixed = await client.get("/prefixed/2")
    assert tagged.content == b"/tagged - v2" and "hit" not in _status(tagged)
    assert prefixed.content == b"/prefixed/2 - v2" and "hit" not in _status(prefixed)


async def test_purge_url_finds_every_variant_refreshed_by_304(
    cache: RedisCache, redis_client: Any
) -> None:
    origin = Revalidating("max-age=0", {"vary": "accept-language"})
    english = {"headers": {"accept-language": "en"}}
    french = {"headers": {"accept-language": "fr"}}
    async with revalidating_client(cache, origin) as client:
        await client.get("/doc", **english)  # stored for 0.5 s, marker and variant set too
        await _store_then_refresh(client, origin, "/doc", **french)
        base = keys.url_key(cache.namespace, 0, cache.url_hash("http", b"testserver", "/doc", b""))
        # The marker and the variant set cover the refreshed variant's 30.5 s.
        assert 29_000 < await _ttl_ms(redis_client, base) <= 30_500
        assert 29_000 < await _ttl_ms(redis_client, keys.variants_key(base)) <= 30_500
        await asyncio.sleep(0.7)  # the English variant is gone; the French one lives on
        origin.version = 2
        assert await cache.purge_url("http://testserver/doc") == 1
        assert await redis_client.exists(base, keys.variants_key(base)) == 0
        en = await client.get("/doc", **english)  # writes a new marker
        fr = await client.get("/doc", **french)
    assert en.content == b"/doc en v2"
    assert fr.content == b"/doc fr v2" and "hit" not in _status(fr)
