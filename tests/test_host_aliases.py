"""Host aliases (``host_aliases``): the spellings of one site share its entries, and every way
in (lookups and stores, invalidation, purges from code and over HTTP, inspection) resolves
them alike; a host without a port in a prefix purge (``host:*``) is every port of it.

What an attacker's Host can and cannot reach with aliases declared is in
``tests/test_security.py``.
"""

from __future__ import annotations

from typing import Any

import fakeredis
import httpx
import pytest

from redis_cache_middleware import CacheMiddleware, ConfigError, RedisCache, keys
from redis_cache_middleware.cache import PurgeEvent
from redis_cache_middleware.purge import PurgeEndpoint

from .helpers import Origin, Spec, make_client

pytestmark = pytest.mark.anyio

CANONICAL = "127.0.0.1:8000"
ALIASES = {"localhost:8000": CANONICAL}


def status(response: httpx.Response) -> str:
    return str(response.headers["cache-status"])


def is_hit(response: httpx.Response) -> bool:
    return "; hit;" in status(response)


def aliased_client(cache: RedisCache, origin: Origin, **options: Any) -> httpx.AsyncClient:
    return make_client(cache, origin, default_ttl=60, host_aliases=ALIASES, **options)


async def test_an_alias_is_served_its_canonical_hosts_entry(
    cache: RedisCache, framework: str
) -> None:
    origin = Origin()
    async with aliased_client(cache, origin, framework=framework) as client:
        first = await client.get("http://localhost:8000/p?q=1")
        canonical = await client.get(f"http://{CANONICAL}/p?q=1")
        upper = await client.get("http://LOCALHOST:8000/p?q=1")
        other_port = await client.get("http://localhost:8001/p?q=1")
    assert status(first).endswith("; stored")
    assert is_hit(canonical) and canonical.content == first.content
    assert is_hit(upper)
    # Only the declared spelling: another port of the same name is another host.
    assert not is_hit(other_port)
    assert origin.calls["/p"] == 2
    assert cache.url_hash("http", b"localhost:8000", "/p", b"q=1") == cache.url_hash(
        "http", CANONICAL.encode(), "/p", b"q=1"
    )


async def test_without_aliases_the_two_spellings_are_two_hosts(cache: RedisCache) -> None:
    origin = Origin()
    async with make_client(cache, origin, default_ttl=60) as client:
        await client.get("http://localhost:8000/p")
        other = await client.get(f"http://{CANONICAL}/p")
    assert not is_hit(other)
    assert origin.calls["/p"] == 2


@pytest.mark.parametrize(
    ("read_via", "write_via"),
    [("localhost:8000", CANONICAL), (CANONICAL, "localhost:8000")],
)
async def test_a_put_through_one_spelling_invalidates_the_other(
    cache: RedisCache, read_via: str, write_via: str
) -> None:
    # The case: a PUT through 127.0.0.1 left the localhost copy stale.
    origin = Origin()
    async with aliased_client(cache, origin) as client:
        before = await client.get(f"http://{read_via}/item")
        put = await client.put(f"http://{write_via}/item")
        after = await client.get(f"http://{read_via}/item")
    assert status(before).endswith("; stored")
    assert put.status_code == 200
    assert not is_hit(after) and b"call=3" in after.content
    assert origin.calls["/item"] == 3


async def test_a_location_on_an_alias_is_the_same_host(cache: RedisCache) -> None:
    origin = Origin(
        specs={"/new": Spec(status=201, headers=[("location", "http://localhost:8000/list")])}
    )
    async with aliased_client(cache, origin) as client:
        await client.get(f"http://{CANONICAL}/list")
        await client.post(f"http://{CANONICAL}/new")
        after = await client.get(f"http://{CANONICAL}/list")
    assert not is_hit(after)
    assert origin.calls["/list"] == 2


async def test_purges_and_inspection_from_code_resolve_aliases(cache: RedisCache) -> None:
    origin = Origin()
    async with aliased_client(cache, origin) as client:
        for path in ("/a", "/b/1", "/c/1"):
            await client.get(f"http://{CANONICAL}{path}")
        # The same cache object the middleware declared the aliases on.
        assert len(await cache.inspect_url("http://localhost:8000/a")) == 1
        assert await cache.purge_url("http://localhost:8000/a") == 1
        assert await cache.purge_prefix("/b", host="localhost:8000") == 1
        assert await cache.purge_prefix("/c", host="localhost:*") == 1
        states = [
            is_hit(await client.get(f"http://{CANONICAL}{p}")) for p in ("/a", "/b/1", "/c/1")
        ]
    assert states == [False, False, False]


async def test_purge_prefix_host_without_a_port_and_every_port(cache: RedisCache) -> None:
    origin = Origin()
    hosts = ["127.0.0.1:8000", "127.0.0.1:9000", "127.0.0.1", "127.0.0.2:8000"]
    async with make_client(cache, origin, default_ttl=60) as client:
        for host in hosts:
            await client.get(f"http://{host}/docs/x")
        # A host without a port is its default ports; ":*" every port of that name.
        assert await cache.purge_prefix("/docs", host="127.0.0.1") == 1
        assert await cache.purge_prefix("/docs", host="127.0.0.1:*") == 2
        assert await cache.purge_prefix("/docs", host="127.0.0.1:*") == 0
        left = [is_hit(await client.get(f"http://{host}/docs/x")) for host in hosts]
    assert left == [False, False, False, True]


async def test_the_purge_endpoint_resolves_aliases(cache: RedisCache) -> None:
    origin = Origin()
    token = "purge-token-0123456789abcdef"
    auth = {"authorization": f"Bearer {token}"}
    async with aliased_client(cache, origin) as client:
        for path in ("/a", "/p/1"):
            await client.get(f"http://{CANONICAL}{path}")
        endpoint = PurgeEndpoint(cache, token=token)
        transport = httpx.ASGITransport(app=endpoint)
        async with httpx.AsyncClient(transport=transport, base_url="http://x") as admin:
            by_method = await admin.request("PURGE", "http://localhost:8000/a", headers=auth)
            by_prefix = await admin.post(
                "/", json={"prefixes": ["http://localhost:8000/p"]}, headers=auth
            )
        states = [is_hit(await client.get(f"http://{CANONICAL}{p}")) for p in ("/a", "/p/1")]
    assert by_method.json() == {"purged": 1}
    assert by_prefix.json() == {"purged": 1}
    assert states == [False, False]


async def test_the_hook_hears_of_a_prefix_purge_as_given(redis_client: Any, namespace: str) -> None:
    events: list[PurgeEvent] = []
    cache = RedisCache(redis_client, namespace=namespace, on_purge=events.append)
    cache.alias_hosts(ALIASES)
    async with make_client(cache, Origin(), default_ttl=60) as client:
        await client.get(f"http://{CANONICAL}/h/1")
    assert await cache.purge_prefix("/h", host="localhost:8000") == 1
    assert events == [PurgeEvent("prefix", ("localhost:8000/h",), 1)]


# -- declaring aliases ------------------------------------------------------------------
# Pure: no Redis is reached.


@pytest.fixture
def plain_cache() -> RedisCache:
    return RedisCache(fakeredis.FakeAsyncRedis(), namespace="aliases")


def test_alias_table_normalises_both_sides_per_scheme() -> None:
    table = keys.host_alias_table(
        {" WWW.Shop.Example ": "shop.example", "shop.example:443": "shop.example"}
    )
    assert table["http"] == {
        b"www.shop.example": b"shop.example",
        b"shop.example:443": b"shop.example",
    }
    # For https, shop.example:443 is shop.example itself: nothing to map.
    assert table["https"] == {b"www.shop.example": b"shop.example"}


def test_an_alias_to_the_default_port_resolves_per_scheme(plain_cache: RedisCache) -> None:
    plain_cache.alias_hosts({"www.shop.example": "shop.example:443"})
    assert plain_cache.key_host(b"www.shop.example", "https") == b"shop.example"
    assert plain_cache.key_host(b"www.shop.example:443", "https") == b"shop.example"
    assert plain_cache.key_host(b"www.shop.example", "http") == b"shop.example:443"
    assert plain_cache.key_host(b"SHOP.example:443", "https") == b"shop.example"
    assert plain_cache.key_host(b"other.example", "https") == b"other.example"


@pytest.mark.parametrize(
    ("aliases", "message"),
    [
        ("localhost:8000", "host_aliases must be a mapping"),
        (["localhost:8000"], "host_aliases must be a mapping"),
        ({"localhost:8000": 8000}, "host_aliases: 8000 is not a host"),
        ({b"localhost": "a"}, "host_aliases: b'localhost' is not a host"),
        ({"http://localhost:8000": CANONICAL}, "'http://localhost:8000' is not a host"),
        ({"localhost:8000/": CANONICAL}, "is not a host"),
        ({"": CANONICAL}, "'' is not a host"),
        ({"a b": CANONICAL}, "is not a host"),
        ({"user@localhost": CANONICAL}, "is not a host"),
        ({"a.example": "b.example", "b.example": "c.example"}, "itself an alias of 'c.example'"),
        (
            {"a.example": "b.example", "a.example:80": "c.example"},
            "one host for http ('a.example') mapped to two canonical hosts",
        ),
    ],
)
def test_bad_aliases_raise_naming_the_option(
    plain_cache: RedisCache, aliases: object, message: str
) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:  # pragma: no cover
        raise AssertionError("not called")

    options: dict[str, Any] = {"host_aliases": aliases}
    with pytest.raises(ConfigError, match=r"^host_aliases\b") as info:
        CacheMiddleware(app, cache=plain_cache, **options)
    assert message in str(info.value)
    with pytest.raises(ConfigError, match=r"^host_aliases\b"):
        plain_cache.alias_hosts(aliases)  # type: ignore[arg-type]


def test_a_host_mapped_to_itself_is_no_alias(plain_cache: RedisCache) -> None:
    assert keys.host_alias_table({"Shop.Example": "shop.example"}) == {"http": {}, "https": {}}
    # Port 80 is the host itself over http, another one over https: mapped there only.
    plain_cache.alias_hosts({"shop.example:80": "shop.example"})
    assert keys.host_alias_table({"shop.example:80": "shop.example"})["http"] == {}
    assert plain_cache.key_host(b"shop.example:80", "http") == b"shop.example"
    assert plain_cache.key_host(b"shop.example:80", "https") == b"shop.example"


def test_two_middlewares_on_one_cache_add_up_their_aliases_or_refuse_a_clash(
    plain_cache: RedisCache,
) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:  # pragma: no cover
        raise AssertionError("not called")

    CacheMiddleware(app, cache=plain_cache, host_aliases={"a.example": "site.example"})
    CacheMiddleware(app, cache=plain_cache, host_aliases={"b.example": "site.example"})
    assert plain_cache.key_host(b"a.example", "http") == plain_cache.key_host(b"b.example", "http")
    with pytest.raises(ConfigError, match=r"^host_aliases: 'a.example' is already an alias"):
        CacheMiddleware(app, cache=plain_cache, host_aliases={"a.example": "other.example"})
    with pytest.raises(ConfigError, match="itself an alias"):
        CacheMiddleware(app, cache=plain_cache, host_aliases={"c.example": "a.example"})
    # A refused declaration changes nothing.
    assert plain_cache.key_host(b"a.example", "http") == b"site.example"
    assert plain_cache.key_host(b"c.example", "http") == b"c.example"


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        (b"example.com", (b"example.com", None)),
        (b"example.com:8080", (b"example.com", b"8080")),
        (b"[::1]", (b"[::1]", None)),
        (b"[::1]:8000", (b"[::1]", b"8000")),
        (b"::1", (b"::1", None)),
    ],
)
def test_split_port(host: bytes, expected: tuple[bytes, bytes | None]) -> None:
    assert keys.split_port(host) == expected
