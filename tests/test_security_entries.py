"""Forged or damaged entries in Redis: a party that can write our keys (or a damaged key)
must never make the middleware replay a response no server may send, which would break the
client's connection. Each such entry is a miss: the app answers, and its response overwrites
the entry.

On fakeredis, a real Redis and a local Redis Cluster (the ``cache``/``redis_client``
fixtures); the uvicorn case on a real Redis only.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio
from starlette.applications import Starlette

from redis_cache_middleware import CacheMiddleware, RedisCache, keys
from redis_cache_middleware.entry import (
    F_STATUS,
    CachedEntry,
    VaryMarker,
    decode,
    encode,
    encode_marker,
)

from .conftest import RedisServer
from .helpers import TEST_TIMEOUT, Origin, asgi_call, http_scope, starlette_app
from .test_e2e_uvicorn import server  # noqa: F401 (fixture)

pytestmark = pytest.mark.anyio

PATH = "/forged"
ACCEPT = b"text/html"
FORGED_BODY = b"forged"

Fields = dict[bytes, bytes]


# -- driving the middleware with raw ASGI calls --------------------------------------------


@dataclass
class Answer:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: bytes) -> list[bytes]:
        return [v for n, v in self.headers if n == name]

    @property
    def cache_status(self) -> bytes:
        return b"".join(self.header(b"cache-status"))


def app_for(cache: RedisCache, origin: Origin) -> Starlette:
    app = starlette_app(origin)
    app.add_middleware(CacheMiddleware, cache=cache, default_ttl=60, timeout=TEST_TIMEOUT)
    return app


async def get(app: Starlette) -> Answer:
    scope = http_scope(PATH)
    scope["headers"] = [*scope["headers"], (b"accept", ACCEPT)]
    sent = await asgi_call(app, scope)
    assert sent and sent[0]["type"] == "http.response.start"
    assert all(m["type"] == "http.response.body" for m in sent[1:])
    return Answer(
        status=sent[0]["status"],
        headers=[(bytes(n), bytes(v)) for n, v in sent[0]["headers"]],
        body=b"".join(m.get("body", b"") for m in sent[1:]),
    )


TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9a-z]+")
CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


def assert_well_formed(answer: Answer) -> None:
    """One response any HTTP/1.1 server sends as it is (RFC 9110 5.1, 5.5, 8.6, 15)."""
    assert 200 <= answer.status <= 599
    for name, value in answer.headers:
        assert TOKEN.fullmatch(name), name
        assert not CONTROL.search(value), (name, value)
    assert answer.header(b"content-length") == [str(len(answer.body)).encode()]
    assert not {b"transfer-encoding", b"x-forged"} & {n for n, _ in answer.headers}


# -- the forgeries, written at the exact keys the middleware reads -------------------------


def base_key(cache: RedisCache) -> str:
    uhash = cache.url_hash("http", b"testserver", PATH, b"")
    return keys.url_key(cache.namespace, cache.generation, uhash)


def forged_entry(*headers: tuple[bytes, bytes], **fields: bytes) -> Fields:
    """A well-formed entry serving ``FORGED_BODY`` for an hour, with extra header lines and
    raw fields (by name) replaced."""
    entry = CachedEntry(
        status=200,
        headers=[
            (b"content-type", b"text/plain"),
            *headers,
            (b"content-length", str(len(FORGED_BODY)).encode()),
        ],
        body=FORGED_BODY,
        stored_at=time.time(),
        fresh_for=3600.0,
    )
    encoded = encode(entry)
    encoded.update({name.encode(): value for name, value in fields.items()})
    return encoded


async def put(client: Any, key: str, fields: Fields, *, ttl: bool = True) -> None:
    await client.delete(key)
    await client.hset(key, mapping=fields)
    if ttl:
        await client.pexpire(key, 600_000)


Write = Callable[[Any, str], Awaitable[None]]


def entry_at_base(fields: Fields, *, ttl: bool = True) -> Write:
    async def write(client: Any, base: str) -> None:
        await put(client, base, fields, ttl=ttl)

    return write


def marker_at_base(names: tuple[str, ...], *, ttl: bool) -> Write:
    """A Vary marker at the URL's key, and under it a well-formed forged variant (with a TTL)
    at the key this request's variant would be read from, listed in the variants set."""

    async def write(client: Any, base: str) -> None:
        await put(client, base, encode_marker(VaryMarker(names)), ttl=ttl)
        values = [ACCEPT if n == "accept" else None for n in names]
        variant = keys.variant_key(base, keys.variant_hash(names, values))
        await put(client, variant, forged_entry())
        vhash = keys.variant_hash(names, values)
        await client.sadd(keys.variants_key(base), vhash)  # as a store lists it

    return write


FORGERIES = [
    pytest.param(
        entry_at_base(forged_entry((b"x-forged", b"1\r\nset-cookie: pwned=1"))),
        id="crlf-in-value",
    ),
    pytest.param(entry_at_base(forged_entry((b"x-forged", b"1\x002"))), id="nul-in-value"),
    pytest.param(entry_at_base(forged_entry((b"x forged", b"1"))), id="space-in-name"),
    pytest.param(entry_at_base(forged_entry((b"x-forged:", b"1"))), id="colon-in-name"),
    pytest.param(entry_at_base(forged_entry(status=b"99")), id="status-99"),
    pytest.param(entry_at_base(forged_entry(status=b"101")), id="status-101"),
    pytest.param(entry_at_base(forged_entry(status=b"600")), id="status-600"),
    pytest.param(entry_at_base(forged_entry(status=b"1000")), id="status-1000"),
    pytest.param(
        entry_at_base(forged_entry((b"content-length", str(len(FORGED_BODY)).encode()))),
        id="two-content-lengths",
    ),
    pytest.param(
        entry_at_base(forged_entry((b"transfer-encoding", b"chunked"))),
        id="transfer-encoding-stored",
    ),
    pytest.param(entry_at_base(forged_entry(), ttl=False), id="entry-without-ttl"),
    pytest.param(marker_at_base(("accept",), ttl=False), id="vary-marker-without-ttl"),
    pytest.param(marker_at_base(("accept language",), ttl=True), id="vary-name-not-a-token"),
]


@pytest.mark.parametrize("forge", FORGERIES)
@pytest.mark.parametrize("when", ["before-any-store", "over-a-stored-entry"])
async def test_forged_entry_is_a_miss_and_is_overwritten(
    cache: RedisCache, redis_client: Any, forge: Write, when: str, request: pytest.FixtureRequest
) -> None:
    # "before-any-store": the process has not seen the URL stored, its lookup is the
    # lookup-or-lock script; "over-a-stored-entry": it stored the URL itself, and its lookup
    # is the plain read of a hit.
    origin = Origin()
    app = app_for(cache, origin)
    if when == "over-a-stored-entry":
        first = await get(app)
        assert b"stored" in first.cache_status
    calls = origin.calls[PATH]
    base = base_key(cache)
    await forge(redis_client, base)
    if when == "over-a-stored-entry" and "without-ttl" in request.node.callspec.id:
        # A plain HGETALL reads the key while the TTL this process knows for it lasts (it
        # stored it): a key without a TTL is caught by the script read that follows. Skip
        # the wait: forget that deadline, as its passing would.
        cache._state.stored_until.clear()

    miss = await get(app)
    assert origin.calls[PATH] == calls + 1  # the app answered: a miss
    assert_well_formed(miss)
    assert miss.status == 200 and miss.body.startswith(PATH.encode())
    assert b"; hit" not in miss.cache_status and b"stored" in miss.cache_status

    # The app's response took the forgery's place, with a TTL...
    stored = decode(await redis_client.hgetall(base))
    assert isinstance(stored, CachedEntry) and stored.body == miss.body
    assert await redis_client.pttl(base) > 0
    # ...and is what the next request gets.
    hit = await get(app)
    assert origin.calls[PATH] == calls + 1
    assert b"; hit" in hit.cache_status
    assert hit.body == miss.body
    assert_well_formed(hit)


@pytest.mark.parametrize("forge", FORGERIES)
async def test_inspect_url_leaves_forged_entries_out(
    cache: RedisCache, redis_client: Any, forge: Write
) -> None:
    await forge(redis_client, base_key(cache))
    assert await cache.inspect_url(f"http://testserver{PATH}") == []


async def test_inspect_url_skips_a_forged_variant_member(
    cache: RedisCache, redis_client: Any
) -> None:
    # A member of the variants set that is no variant hash (here not even UTF-8) is left out;
    # the real variant is still listed.
    base = base_key(cache)
    await marker_at_base(("accept",), ttl=True)(redis_client, base)
    real = keys.variant_hash(("accept",), [ACCEPT])
    await redis_client.sadd(keys.variants_key(base), real, b"\xff\xfe")
    infos = await cache.inspect_url(f"http://testserver{PATH}")
    assert [i.key for i in infos] == [keys.variant_key(base, real)]


async def test_a_forged_variant_member_does_not_stop_a_purge(
    cache: RedisCache, redis_client: Any
) -> None:
    # It made purge_url raise (UnicodeDecodeError), and so the invalidation after an unsafe
    # request: the stored entry outlived the POST that should have removed it.
    origin = Origin()
    app = app_for(cache, origin)
    assert b"stored" in (await get(app)).cache_status
    base = base_key(cache)
    await redis_client.sadd(keys.variants_key(base), b"\xff\xfe")
    assert await cache.purge_url(f"http://testserver{PATH}") == 1
    assert await redis_client.exists(base, keys.variants_key(base)) == 0


# -- a real server: the connection survives a forged CRLF entry ----------------------------


def test_uvicorn_answers_from_the_app_over_a_forged_crlf_entry(
    server: str,  # noqa: F811 (the fixture imported above)
    redis_server: RedisServer,
    namespace: str,
) -> None:
    # tests/e2e_app.py behind uvicorn on loopback, its cache on the real Redis: a forged
    # entry whose header value holds CRLF sits at the URL's key before any request.
    keyer = RedisCache(redis.asyncio.Redis.from_url(redis_server.url), namespace=namespace)
    base = keys.url_key(namespace, 0, keyer.hash_for_url(f"{server}/items/7"))
    body = b'{"forged": true}'
    forged = encode(
        CachedEntry(
            status=200,
            headers=[
                (b"content-type", b"application/json"),
                (b"x-forged", b"1\r\nset-cookie: pwned=1"),
                (b"content-length", str(len(body)).encode()),
            ],
            body=body,
            stored_at=time.time(),
            fresh_for=3600.0,
        )
    )
    with redis.Redis.from_url(redis_server.url) as client:
        client.hset(base, mapping=forged)
        client.pexpire(base, 600_000)
        with httpx.Client(base_url=server, timeout=5) as http:
            # One keep-alive connection: both answers arrive on it, whole.
            first = http.get("/items/7")
            second = http.get("/items/7")
            calls = http.get("/calls").json()["calls"]
        stored = decode(client.hgetall(base))
    assert first.status_code == 200
    assert first.json()["id"] == "7"
    assert "x-forged" not in first.headers and "set-cookie" not in first.headers
    assert first.headers["cache-status"].endswith("stored")
    assert second.status_code == 200 and second.content == first.content
    assert second.headers["cache-status"].startswith("redis-cache; hit")
    assert calls == 1
    assert isinstance(stored, CachedEntry) and stored.body == first.content


def test_the_forgeries_start_from_a_readable_entry() -> None:
    # Each forgery changes one thing of an entry that reads, so that only that one thing
    # can make it a miss.
    assert forged_entry(status=b"99")[F_STATUS] == b"99"
    assert isinstance(decode(forged_entry()), CachedEntry)


async def test_a_forged_tag_member_never_deletes_a_key_outside_the_namespace(
    cache: RedisCache, redis_client: Any
) -> None:
    # Whoever can write our tag set could name any key in it; a purge by that tag deletes
    # only keys of this namespace, and a member that is not text does not stop it.
    tkey = keys.tag_key(cache.namespace, cache.generation, "t")
    outside = "{" + cache.namespace + "}-other:precious"  # another slot, another owner
    await redis_client.set(outside, b"keep me")
    far = int(time.time() * 1000) + 60_000
    await redis_client.zadd(tkey, {outside: far, b"\xff\xfe": far})
    assert await cache.purge_tag("t") == 0
    assert await redis_client.get(outside) == b"keep me"
    await redis_client.delete(outside)


async def test_a_response_with_a_header_no_server_could_send_is_not_stored(
    cache: RedisCache,
) -> None:
    # Stored, it would be read as damaged on every request: a miss and a store, each time.
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        headers = [(b"cache-control", b"max-age=60"), (b"x-bad", b"a\x01b")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok"})

    wrapped = CacheMiddleware(app, cache=cache, timeout=TEST_TIMEOUT)
    transport = httpx.ASGITransport(app=wrapped)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        answer = await client.get("/bad")
    assert answer.headers["cache-status"].endswith("detail=unsendable")
    assert await cache.inspect_url("http://testserver/bad") == []
