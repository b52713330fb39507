"""RFC 9111 / 9110 / 9213 conformance, rule by rule: a table test of each pure parser or
decision, and a middleware test of what is stored, served and invalidated, on every backend
(the ``cache`` fixture: fakeredis, a real Redis, a local cluster). Each section names its
rules; docs/architecture.md ("RFC conformance") lists them with the tests that show them.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from email.utils import formatdate
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from redis_cache_middleware import CacheMiddleware, ConfigError, RedisCache, keys
from redis_cache_middleware.admit import Request as CacheRequest
from redis_cache_middleware.config import CacheConfig
from redis_cache_middleware.entry import CachedEntry, decode, encode
from redis_cache_middleware.invalidate import invalidates
from redis_cache_middleware.policy import (
    HEURISTIC_STATUSES,
    MAX_DELTA_SECONDS,
    CacheControl,
    StoreDecision,
    decide_store,
    effective_cache_control,
    get_freshness_lifetime,
    get_heuristic_lifetime,
    get_not_modified_headers,
    is_explicitly_shared,
    is_not_modified,
    parse_age,
    parse_http_date,
)
from redis_cache_middleware.ranges import (
    HUGE,
    Part,
    Whole,
    if_range_holds,
    parse_range,
    satisfy,
    select,
)
from redis_cache_middleware.revalidate import forbids_stale, stand_in_detail, stand_ins
from redis_cache_middleware.storing import connection_options, end_to_end
from redis_cache_middleware.targeted import parse_dictionary, parse_targeted
from redis_cache_middleware.vary_values import FIELDS, normalise

from .helpers import TEST_TIMEOUT, Origin, Spec, http_scope, make_client, middleware_of

pytestmark = pytest.mark.anyio


def _status(response: httpx.Response) -> str:
    return str(response.headers.get("cache-status", ""))


def _hit(response: httpx.Response) -> bool:
    return "; hit" in _status(response)


# == store and invalidate ==================================================================
# RFC 9111 3.1 / RFC 9110 7.6.1 (fields named by Connection), RFC 9111 4.4 (methods not known
# to be safe invalidate), RFC 9111 4.1 (Vary values compared after normalisation).

# -- fields named by Connection are not stored (RFC 9111 3.1, RFC 9110 7.6.1) ---------------


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ([b"close"], {b"close"}),
        ([b"close, X-Secret"], {b"close", b"x-secret"}),
        ([b" X-A ,\tx-b , "], {b"x-a", b"x-b"}),
        ([b"x-a", b"Keep-Alive"], {b"x-a", b"keep-alive"}),
        ([b",,"], set()),
        ([b""], set()),
        ([], set()),
    ],
    ids=["close", "close-and-field", "ows-and-case", "two-lines", "empty-members", "empty", "none"],
)
def test_connection_options_table(values: list[bytes], named: set[bytes]) -> None:
    headers = [(b"content-type", b"text/plain"), *((b"connection", v) for v in values)]
    assert connection_options(headers) == named


@pytest.mark.parametrize(
    ("headers", "kept"),
    [
        pytest.param(
            [(b"connection", b"close, X-Secret"), (b"x-secret", b"s"), (b"x-public", b"p")],
            [(b"x-public", b"p")],
            id="named-field-and-connection-out",
        ),
        pytest.param(
            [(b"x-a", b"1"), (b"connection", b"x-a"), (b"connection", b"X-B"), (b"x-b", b"2")],
            [],
            id="two-connection-lines",
        ),
        pytest.param(
            [(b"keep-alive", b"timeout=5"), (b"transfer-encoding", b"chunked"), (b"x", b"1")],
            [(b"x", b"1")],
            id="hop-by-hop-without-connection",
        ),
        pytest.param(
            [(b"cache-control", b"max-age=60"), (b"x-secret", b"s")],
            [(b"cache-control", b"max-age=60"), (b"x-secret", b"s")],
            id="nothing-named",
        ),
        pytest.param(
            [(b"connection", b"close"), (b"close", b"x"), (b"etag", b'"1"')],
            [(b"etag", b'"1"')],
            id="option-named-like-a-field",
        ),
    ],
)
def test_end_to_end_fields_table(
    headers: list[tuple[bytes, bytes]], kept: list[tuple[bytes, bytes]]
) -> None:
    assert end_to_end(headers) == kept


SECRET_HEADERS = [
    ("cache-control", "max-age=60"),
    ("connection", "close, X-Secret"),
    ("x-secret", "hop-only"),
    ("x-public", "1"),
]


async def test_a_field_connection_names_is_neither_stored_nor_replayed(
    cache: RedisCache, redis_client: Any
) -> None:
    origin = Origin(specs={"/c": Spec(headers=SECRET_HEADERS)})
    async with make_client(cache, origin) as client:
        miss = await client.get("/c")
        hit = await client.get("/c")
    assert _status(miss).endswith("; stored") and _hit(hit)
    assert "x-secret" not in hit.headers and "connection" not in hit.headers
    assert hit.headers["x-public"] == "1" and hit.content == miss.content
    base = keys.url_key(
        cache.namespace, cache.generation, cache.url_hash("http", b"testserver", "/c", b"")
    )
    stored = decode(await redis_client.hgetall(base))
    assert isinstance(stored, CachedEntry)
    names = {name for name, _ in stored.headers}
    assert b"x-public" in names and not names & {b"x-secret", b"connection"}


async def test_a_304_does_not_add_a_field_its_connection_names(cache: RedisCache) -> None:
    # RFC 9111 3.2 merges a 304's fields into the stored response; the ones that 304's
    # Connection names belong to its connection and are not merged.
    calls = {"full": 0, "304": 0}

    async def handle(request: Request) -> Response:
        if request.headers.get("if-none-match") == '"v1"':
            calls["304"] += 1
            headers = {
                "etag": '"v1"',
                "cache-control": "max-age=60",
                "connection": "x-secret",
                "x-secret": "hop-only",
                "x-fresh": "1",
            }
            return Response(status_code=304, headers=headers)
        calls["full"] += 1
        return Response(b"body", headers={"etag": '"v1"', "cache-control": "no-cache"})

    app = Starlette(routes=[Route("/r", handle)])
    app.add_middleware(CacheMiddleware, cache=cache, timeout=TEST_TIMEOUT, default_ttl=60)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        stored = await client.get("/r")
        revalidated = await client.get("/r")
        hit = await client.get("/r")
    assert _status(stored).endswith("; stored")
    assert calls == {"full": 1, "304": 1}
    assert revalidated.content == hit.content == b"body" and _hit(hit)
    for response in (revalidated, hit):
        assert response.headers["x-fresh"] == "1"  # the 304's other fields are merged
        assert "x-secret" not in response.headers


async def test_an_entry_holding_a_connection_field_is_never_replayed(
    cache: RedisCache, redis_client: Any
) -> None:
    # No version stores Connection (it is hop-by-hop), so an entry holding one is not ours:
    # decode refuses it and the app answers. Replay needs no filter of its own, and an
    # entry stored before Connection-named fields were dropped cannot be told apart (its
    # Connection field, which named them, was never stored): it lives out its TTL.
    origin = Origin()
    body = b"forged"
    forged = CachedEntry(
        status=200,
        headers=[
            (b"connection", b"x-secret"),
            (b"x-secret", b"hop-only"),
            (b"content-length", str(len(body)).encode()),
        ],
        body=body,
        stored_at=time.time(),
        fresh_for=3600.0,
    )
    base = keys.url_key(
        cache.namespace, cache.generation, cache.url_hash("http", b"testserver", "/old", b"")
    )
    await redis_client.hset(base, mapping=encode(forged))
    await redis_client.pexpire(base, 600_000)
    async with make_client(cache, origin, default_ttl=60) as client:
        first = await client.get("/old")
        second = await client.get("/old")
    assert "x-secret" not in first.headers and first.content != body
    assert origin.calls["/old"] == 1 and _hit(second) and second.content == first.content


# -- methods not known to be safe invalidate (RFC 9111 4.4, RFC 9110 9.2.1) -----------------


@pytest.mark.parametrize(
    ("method", "invalidating"),
    [
        ("GET", False),
        ("HEAD", False),
        ("OPTIONS", False),
        ("TRACE", False),
        ("POST", True),
        ("PUT", True),
        ("PATCH", True),
        ("DELETE", True),
        ("CONNECT", True),
        ("PROPPATCH", True),
        ("MKCOL", True),
        ("PURGE", True),
        ("FOO", True),
        ("get", True),  # methods are case-sensitive (RFC 9110 9.1): an unknown method
        ("Options", True),
    ],
)
def test_which_methods_invalidate_table(method: str, invalidating: bool) -> None:
    assert invalidates(method) is invalidating


#: The methods the test app answers (2xx); any other gets Starlette's 405.
ANSWERED = ["GET", "HEAD", "OPTIONS", "TRACE", "POST", "PROPPATCH", "FOO", "PURGE"]


def methods_client(cache: RedisCache, origin: Origin, **options: Any) -> httpx.AsyncClient:
    app = Starlette(routes=[Route("/{path:path}", origin.respond, methods=ANSWERED)])
    app.add_middleware(
        CacheMiddleware, cache=cache, timeout=TEST_TIMEOUT, default_ttl=60, **options
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


@pytest.mark.parametrize("method", ["PROPPATCH", "FOO", "PURGE", "POST"])
async def test_a_method_not_known_to_be_safe_invalidates_on_success(
    cache: RedisCache, method: str
) -> None:
    # PURGE without a purge_token is not the purge endpoint's: the app answers it, and it
    # invalidates like any method of unknown safety.
    origin = Origin()
    async with methods_client(cache, origin) as client:
        await client.get("/doc")
        await client.get("/other")
        answer = await client.request(method, "/doc")
        after = await client.get("/doc")
        other = await client.get("/other")
    assert answer.status_code == 200 and answer.text.startswith("/doc")
    assert not _hit(after) and _status(after).endswith("; stored")
    assert _hit(other)
    assert cache.stats.invalidated == 1


async def test_an_extension_method_invalidates_its_same_host_location(cache: RedisCache) -> None:
    origin = Origin(specs={"/collection": Spec(status=201, headers=[("location", "/item")])})
    async with methods_client(cache, origin) as client:
        await client.get("/item")
        await client.request("FOO", "/collection")
        after = await client.get("/item")
    assert not _hit(after)


@pytest.mark.parametrize("method", ["OPTIONS", "TRACE"])
async def test_safe_methods_do_not_invalidate(cache: RedisCache, method: str) -> None:
    origin = Origin()
    async with methods_client(cache, origin) as client:
        await client.get("/doc")
        answer = await client.request(method, "/doc")
        after = await client.get("/doc")
    assert answer.status_code == 200 and _hit(after)
    assert cache.stats.invalidated == 0


async def test_an_unknown_method_the_app_refuses_does_not_invalidate(cache: RedisCache) -> None:
    origin = Origin()
    async with methods_client(cache, origin) as client:
        await client.get("/doc")
        refused = await client.request("MKCOL", "/doc")  # not routed: Starlette's 405
        after = await client.get("/doc")
    assert refused.status_code == 405 and _hit(after)


async def test_purge_with_a_token_goes_to_the_endpoint_not_to_invalidation(
    cache: RedisCache,
) -> None:
    origin = Origin()
    async with methods_client(cache, origin, purge_token="t0ken-for-the-purge-endpoint") as c:
        await c.get("/doc")
        refused = await c.request("PURGE", "/doc")  # no token: the endpoint's 401
        after = await c.get("/doc")
    assert refused.status_code == 401 and _hit(after)
    assert origin.calls["/doc"] == 1


async def test_extension_methods_do_not_invalidate_when_turned_off(cache: RedisCache) -> None:
    origin = Origin()
    async with methods_client(cache, origin, invalidate_on_unsafe=False) as client:
        await client.get("/doc")
        await client.request("FOO", "/doc")
        after = await client.get("/doc")
    assert _hit(after)


# -- Vary values compared after normalisation (RFC 9111 4.1) ---------------------------------


@pytest.mark.parametrize(
    ("name", "value", "normalised"),
    [
        # Accept-Encoding: codings are case-insensitive, their order carries no meaning.
        ("accept-encoding", b"gzip, br", b"br, gzip"),
        ("accept-encoding", b"br,gzip", b"br, gzip"),
        ("accept-encoding", b"GZIP, br", b"br, gzip"),
        ("accept-encoding", b" gzip ,\tbr , ", b"br, gzip"),
        ("accept-encoding", b"gzip;q=1.0, br;Q=0.500", b"br;q=0.5, gzip"),
        ("accept-encoding", b"gzip ; q=0.5", b"gzip;q=0.5"),
        ("accept-encoding", b"identity;q=0, *;q=0.000", b"*;q=0, identity;q=0"),
        ("accept-encoding", b"", b""),  # present and empty: identity only, not absent
        ("accept-encoding", b" , ,", b""),
        # The same coding twice: a parser may keep either, so the order stays.
        ("accept-encoding", b"gzip;q=0, gzip", b"gzip;q=0, gzip"),
        # Not the field's grammar: kept as sent (less the OWS around it).
        ("accept-encoding", b"gzip;q=2, br", b"gzip;q=2, br"),
        ("accept-encoding", b"gzip;level=1", b"gzip;level=1"),
        ("accept-encoding", b'"gzip"', b'"gzip"'),
        ("accept-encoding", b"gz ip", b"gz ip"),
        ("accept-encoding", b"gzip, ;q=0.5", b"gzip, ;q=0.5"),
        # Accept: order is free, weights and parameters count, parameter values keep case.
        (
            "accept",
            b"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
            b"*/*;q=0.8, application/xhtml+xml, application/xml;q=0.9, text/html",
        ),
        ("accept", b"Text/HTML ;Level=1", b"text/html;level=1"),
        ("accept", b'text/plain;format="Flowed,x";q=0.5', b'text/plain;format="Flowed,x";q=0.5'),
        ("accept", b"text/plain;;charset=utf-8", b"text/plain;charset=utf-8"),
        ("accept", b"text/html;q=0.5;level=1", b"text/html;q=0.5;level=1"),  # params after q
        ("accept", b'text/html;x="open', b'text/html;x="open'),
        ("accept", b"html", b"html"),
        # Accept-Language: case and OWS, never the order (a priority among equal weights).
        ("accept-language", b"en-US, fr;q=0.5 ,  DE", b"en-us, fr;q=0.5, de"),
        ("accept-language", b"de, en", b"de, en"),
        ("accept-language", b"*;Q=0.10", b"*;q=0.1"),
        ("accept-language", b"en_US", b"en_US"),
        ("accept-charset", b"UTF-8, iso-8859-1;q=0.5", b"iso-8859-1;q=0.5, utf-8"),
        # Any other field: exact, less the OWS around the whole value.
        ("cookie", b"B=2; a=1", b"B=2; a=1"),
        ("authorization", b"Bearer AbC", b"Bearer AbC"),
        ("user-agent", b"  Mozilla/5.0 (X11)  ", b"Mozilla/5.0 (X11)"),
        ("x-tenant", b"Acme, Beta", b"Acme, Beta"),
    ],
)
def test_vary_value_normalisation_table(name: str, value: bytes, normalised: bytes) -> None:
    assert normalise(name, value) == normalised


def test_vary_value_normalisation_knows_only_its_table() -> None:
    assert set(FIELDS) == {"accept", "accept-charset", "accept-encoding", "accept-language"}
    long = b"GZIP, " * 200 + b"br"  # past the memo's bound: the same answer, uncached
    assert normalise("accept-encoding", long) == normalise("accept-encoding", long.lower())


@settings(max_examples=300, deadline=None)
@given(
    field=st.sampled_from([*FIELDS, "cookie", "x-other"]),
    value=st.binary(max_size=40)
    | st.text(alphabet='aBz*/ ;,=q.01"\\\t-', max_size=40).map(str.encode),
)
def test_vary_value_normalisation_never_raises_and_is_idempotent(field: str, value: bytes) -> None:
    once = normalise(field, value)
    assert normalise(field, once) == once


@settings(max_examples=200, deadline=None)
@given(
    codings=st.lists(
        st.tuples(
            st.sampled_from(["gzip", "br", "deflate", "zstd", "identity", "*"]),
            st.sampled_from(["", ";q=0", ";q=0.5", ";Q=0.50", ";q=1", ";q=1.000"]),
        ),
        min_size=1,
        max_size=5,
        unique_by=lambda c: c[0],
    ),
    data=st.data(),
)
def test_accept_encoding_spellings_of_one_list_compare_equal(
    codings: list[tuple[str, str]], data: st.DataObject
) -> None:
    shuffled = data.draw(st.permutations(codings))
    plain = ", ".join(c + w for c, w in codings)
    respelled = " ,".join(c.upper() + (";Q=0.500" if w == ";q=0.5" else w) for c, w in shuffled)
    assert normalise("accept-encoding", plain.encode()) == normalise(
        "accept-encoding", respelled.encode()
    )


def _varying(field: str) -> Origin:
    return Origin(specs={"/n": Spec(headers=[("vary", field)], echo_headers=(field,))})


async def _states(client: httpx.AsyncClient, field: str, values: list[str]) -> list[str]:
    states = []
    for value in values:
        response = await client.get("/n", headers={field: value})
        states.append("hit" if _hit(response) else _status(response).split("; ")[1])
    return states


async def test_equivalent_accept_encodings_share_a_variant(cache: RedisCache) -> None:
    origin = _varying("accept-encoding")
    async with make_client(cache, origin, default_ttl=60) as client:
        states = await _states(
            client,
            "accept-encoding",
            ["gzip, br", "br,gzip", "GZIP, br", "br;q=1.0 , gzip", "gzip", "gzip, br;q=0.5"],
        )
    assert states == ["fwd=uri-miss", "hit", "hit", "hit", "fwd=vary-miss", "fwd=vary-miss"]
    assert origin.calls["/n"] == 3


async def test_equivalent_accepts_share_a_variant_weights_apart(cache: RedisCache) -> None:
    origin = _varying("accept")
    async with make_client(cache, origin, default_ttl=60) as client:
        states = await _states(
            client,
            "accept",
            [
                "text/html, application/json;q=0.9",
                "Application/JSON;q=0.90,text/html",
                "text/html;q=0.9, application/json",
            ],
        )
    assert states == ["fwd=uri-miss", "hit", "fwd=vary-miss"]


async def test_accept_language_is_compared_without_case_but_in_order(cache: RedisCache) -> None:
    origin = _varying("accept-language")
    async with make_client(cache, origin, default_ttl=60) as client:
        states = await _states(
            client, "accept-language", ["en-US, fr;q=0.5", "EN-us ,fr;q=0.500", "fr;q=0.5, en-US"]
        )
    assert states == ["fwd=uri-miss", "hit", "fwd=vary-miss"]


async def test_cookies_and_unknown_fields_are_compared_exactly(cache: RedisCache) -> None:
    origin = Origin(
        specs={
            "/n": Spec(headers=[("vary", "cookie")], echo_headers=("cookie",)),
            "/t": Spec(headers=[("vary", "x-tenant")], echo_headers=("x-tenant",)),
        }
    )
    async with make_client(cache, origin, default_ttl=60) as client:
        cookies = await _states(client, "cookie", ["a=1; b=2", "b=2; a=1", "A=1; b=2", "a=1; b=2"])
        tenants = [
            "hit" if _hit(r) else _status(r).split("; ")[1]
            for r in [
                await client.get("/t", headers={"x-tenant": v}) for v in ("Acme", "acme", " Acme ")
            ]
        ]
    assert cookies == ["fwd=uri-miss", "fwd=vary-miss", "fwd=vary-miss", "hit"]
    assert tenants == ["fwd=uri-miss", "fwd=vary-miss", "hit"]


RawHeaders = list[tuple[bytes, bytes]]

# -- stale on error and ranges ----------------------------------------------------------
#
# RFC 9111 4.2.4: a stale entry stands in for an app that fails, within the operator's
# ``stale_on_error_grace`` past freshness, unless its response forbade stale use (no-cache,
# must-revalidate, proxy-revalidate, s-maxage: 5.2.2.2, 5.2.2.4, 5.2.2.8, 5.2.2.10).
# RFC 9110 14, 13.1.5: one byte range of a stored 200 is answered 206 from the cache.

#: The clock the pure cases run at.
NOW = 1_700_000_000.0


def sie_entry(headers: RawHeaders, *, fresh_for: float = 10.0, sie: float = 0.0) -> CachedEntry:
    """A stored 200, stored at ``NOW``, with the given headers and windows."""
    return CachedEntry(
        status=200,
        headers=headers,
        body=b"x",
        stored_at=NOW,
        fresh_for=fresh_for,
        stale_for=60.0,
        stale_if_error=sie,
    )


@pytest.mark.parametrize(
    ("cache_control", "forbidden"),
    [
        pytest.param(b"max-age=10", False, id="max-age"),
        pytest.param(b"public, max-age=10, stale-if-error=5", False, id="public"),
        pytest.param(b"max-age=10, must-revalidate", True, id="must-revalidate"),
        pytest.param(b"max-age=10, proxy-revalidate", True, id="proxy-revalidate"),
        pytest.param(b"s-maxage=10", True, id="s-maxage"),
        pytest.param(b"max-age=10, no-cache", True, id="no-cache"),
        pytest.param(b'no-cache="set-cookie", max-age=10', True, id="no-cache-qualified"),
        pytest.param(b"MAX-AGE=10, Must-Revalidate", True, id="case-insensitive"),
    ],
)
def test_forbids_stale(cache_control: bytes, forbidden: bool) -> None:
    assert forbids_stale([(b"cache-control", cache_control)]) is forbidden


def test_forbids_stale_reads_every_cache_control_line() -> None:
    headers = [(b"cache-control", b"max-age=10"), (b"cache-control", b"must-revalidate")]
    assert forbids_stale(headers) is True
    assert forbids_stale([(b"content-type", b"text/plain")]) is False


@pytest.mark.parametrize(
    ("headers", "forbidden"),
    [
        # RFC 9213: a valid targeted field replaces Cache-Control, for stale use too.
        ([(b"cdn-cache-control", b"must-revalidate"), (b"cache-control", b"max-age=60")], True),
        ([(b"cdn-cache-control", b"max-age=60"), (b"cache-control", b"must-revalidate")], False),
        # An invalid targeted field is ignored: Cache-Control rules.
        ([(b"cdn-cache-control", b"max-age=="), (b"cache-control", b"no-cache")], True),
    ],
)
def test_forbids_stale_reads_the_targeted_field(headers: RawHeaders, forbidden: bool) -> None:
    assert forbids_stale(headers, CDN) is forbidden


@pytest.mark.parametrize(
    ("cache_control", "sie", "age", "grace", "detail"),
    [
        # Within stale-if-error: that window answers, whatever the grace.
        pytest.param(b"max-age=10", 30.0, 20.0, 0.0, "stale-if-error", id="sie"),
        pytest.param(b"max-age=10", 30.0, 20.0, 100.0, "stale-if-error", id="sie-first"),
        # Beyond stale-if-error (or without it), within the grace.
        pytest.param(b"max-age=10", 30.0, 50.0, 100.0, "stale-on-error", id="past-sie"),
        pytest.param(b"max-age=10", 0.0, 50.0, 100.0, "stale-on-error", id="grace"),
        pytest.param(b"max-age=10", 0.0, 10.0, 100.0, "stale-on-error", id="just-stale"),
        # The grace is a bound: past freshness + grace, nothing.
        pytest.param(b"max-age=10", 0.0, 110.0, 100.0, None, id="past-grace"),
        pytest.param(b"max-age=10", 0.0, 50.0, 0.0, None, id="no-grace"),
        # The response forbade stale use: the grace does not apply.
        pytest.param(b"max-age=10, must-revalidate", 0.0, 50.0, 100.0, None, id="must-reval"),
        pytest.param(b"max-age=10, proxy-revalidate", 0.0, 50.0, 100.0, None, id="proxy-reval"),
        pytest.param(b"s-maxage=10", 0.0, 50.0, 100.0, None, id="s-maxage"),
        pytest.param(b"max-age=10, no-cache", 0.0, 50.0, 100.0, None, id="no-cache"),
    ],
)
def test_stand_in_detail(
    cache_control: bytes, sie: float, age: float, grace: float, detail: str | None
) -> None:
    entry = sie_entry([(b"cache-control", cache_control)], sie=sie)
    assert stand_in_detail(entry, NOW + age, grace) == detail


@pytest.mark.parametrize(
    ("sie", "grace", "age", "candidate"),
    [
        pytest.param(30.0, 0.0, 20.0, True, id="sie"),
        pytest.param(0.0, 100.0, 50.0, True, id="grace"),
        pytest.param(30.0, 100.0, 120.0, False, id="past-both"),
        pytest.param(0.0, 0.0, 20.0, False, id="neither"),
    ],
)
def test_stand_ins_offer_a_fallback_within_the_longer_window(
    sie: float, grace: float, age: float, candidate: bool
) -> None:
    entry = sie_entry([(b"cache-control", b"max-age=10")], sie=sie)
    request = CacheRequest(http_scope("/p"), CacheConfig())
    fallback, _ = stand_ins(entry, request, NOW + age, grace)
    assert (fallback is entry) is candidate


@pytest.mark.parametrize(
    ("cache_control", "grace", "stale_for"),
    [
        pytest.param(b"max-age=60", 0.0, 0.0, id="no-grace"),
        pytest.param(b"max-age=60", 300.0, 300.0, id="grace"),
        pytest.param(b"max-age=60, stale-if-error=600", 300.0, 600.0, id="longer-sie"),
        pytest.param(b"max-age=60, stale-while-revalidate=30", 300.0, 300.0, id="swr"),
        pytest.param(b"max-age=60, must-revalidate", 300.0, 0.0, id="must-revalidate"),
        pytest.param(b"max-age=60, proxy-revalidate", 300.0, 0.0, id="proxy-revalidate"),
        pytest.param(b"s-maxage=60", 300.0, 0.0, id="s-maxage"),
    ],
)
def test_decide_store_keeps_entries_for_the_grace(
    cache_control: bytes, grace: float, stale_for: float
) -> None:
    decision = decide_store(
        200,
        [(b"cache-control", cache_control)],
        now=NOW,
        default_ttl=None,
        cacheable_statuses=HEURISTIC_STATUSES,
        stale_on_error_grace=grace,
    )
    assert decision.store
    assert decision.stale_for == stale_for
    assert decision.ttl == 60.0 + stale_for
    # The grace is no stale-if-error window: that one stays what the response says.
    assert decision.stale_if_error == (600.0 if b"stale-if-error" in cache_control else 0.0)


def test_decide_store_no_cache_is_not_kept_for_the_grace() -> None:
    decision = decide_store(
        200,
        # With a validator: a no-cache response without one is not stored at all.
        [(b"cache-control", b"max-age=60, no-cache"), (b"etag", b'"v1"')],
        now=NOW,
        default_ttl=None,
        cacheable_statuses=HEURISTIC_STATUSES,
        stale_on_error_grace=300.0,
        keep_for_revalidation=0.0,
    )
    assert decision.reason == "no-cache" and decision.stale_for == 60.0


@pytest.mark.parametrize("value", [-1, float("inf"), float("nan"), "60", True, None])
def test_stale_on_error_grace_is_validated(value: object) -> None:
    with pytest.raises(ConfigError, match=r"^stale_on_error_grace"):
        CacheConfig(stale_on_error_grace=value)  # type: ignore[arg-type]
    assert CacheConfig(stale_on_error_grace=30).stale_on_error_grace == 30


def advance_clock(client: httpx.AsyncClient, seconds: float) -> None:
    """Move the middleware's clock on (ages only: Redis keeps its own time)."""
    context = middleware_of(client).context
    now = context.clock()
    context.clock = lambda: now + seconds


FAILURES = [
    pytest.param(Spec(raises=True), "", id="raise"),
    *(
        pytest.param(Spec(status=status, body=b"down"), f"fwd-status={status}; ", id=str(status))
        for status in (500, 502, 503, 504)
    ),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("failure", "fwd_status"), FAILURES)
async def test_grace_serves_stale_when_the_app_fails(
    cache: RedisCache, failure: Spec, fwd_status: str
) -> None:
    # No stale-if-error and no validator: without the grace the entry would be gone from
    # Redis a second after it was stored, and the failure would reach the client.
    origin = Origin(specs={"/p": Spec(headers=[("cache-control", "max-age=1")], body=b"v1")})
    async with make_client(cache, origin, stale_on_error_grace=60) as client:
        await client.get("/p")
        (stored,) = await cache.inspect_url("http://testserver/p")
        assert stored.ttl_left is not None and stored.ttl_left > 50
        advance_clock(client, 30)
        origin.specs["/p"] = failure
        r = await client.get("/p")
    assert r.status_code == 200 and r.content == b"v1"
    assert r.headers["cache-status"] == (
        f"redis-cache; hit; fwd=stale; {fwd_status}detail=stale-on-error"
    )
    assert r.headers["age"] == "30"
    assert origin.calls["/p"] == 2


@pytest.mark.anyio
async def test_grace_entry_outlives_its_freshness_in_redis(cache: RedisCache) -> None:
    import asyncio

    origin = Origin(specs={"/p": Spec(headers=[("cache-control", "max-age=1")], body=b"v1")})
    async with make_client(cache, origin, stale_on_error_grace=60) as client:
        await client.get("/p")
        await asyncio.sleep(1.2)
        origin.specs["/p"] = Spec(status=503, body=b"down")
        r = await client.get("/p")
    assert r.status_code == 200 and r.content == b"v1"
    assert r.headers["cache-status"].endswith("; fwd-status=503; detail=stale-on-error")


@pytest.mark.anyio
@pytest.mark.parametrize(
    "cache_control",
    [
        "max-age=1, must-revalidate",
        "max-age=1, proxy-revalidate",
        "s-maxage=1",
        "max-age=1, no-cache",
    ],
)
@pytest.mark.parametrize("failure", [Spec(raises=True), Spec(status=503, body=b"down")])
async def test_grace_never_serves_what_the_response_forbids_stale(
    cache: RedisCache, cache_control: str, failure: Spec
) -> None:
    # The ETag keeps the entry in Redis past freshness (keep_for_revalidation): it is found
    # stale, and only its stored Cache-Control stops it from standing in.
    headers = [("cache-control", cache_control), ("etag", '"v1"')]
    origin = Origin(specs={"/p": Spec(headers=headers, body=b"v1")})
    async with make_client(cache, origin, stale_on_error_grace=60) as client:
        await client.get("/p")
        advance_clock(client, 5)
        origin.specs["/p"] = failure
        if failure.raises:
            with pytest.raises(RuntimeError):
                await client.get("/p")
        else:
            r = await client.get("/p")
            assert r.status_code == 503 and r.content == b"down"
            assert "stale-on-error" not in r.headers["cache-status"]
        assert len(await cache.inspect_url("http://testserver/p")) == 1
    assert origin.calls["/p"] == 2


@pytest.mark.anyio
async def test_grace_is_bounded_and_follows_stale_if_error(cache: RedisCache) -> None:
    headers = [("cache-control", "max-age=1, stale-if-error=10"), ("etag", '"v1"')]
    origin = Origin(specs={"/p": Spec(headers=headers, body=b"v1")})
    async with make_client(
        cache, origin, stale_on_error_grace=30, keep_for_revalidation=300
    ) as client:
        await client.get("/p")
        origin.specs["/p"] = Spec(status=503, body=b"down")
        advance_clock(client, 5)  # within stale-if-error
        sie = await client.get("/p")
        advance_clock(client, 20)  # past stale-if-error, within the grace
        grace = await client.get("/p")
        advance_clock(client, 40)  # past the grace (the entry is still in Redis)
        past = await client.get("/p")
    assert sie.content == b"v1" and sie.headers["cache-status"].endswith("stale-if-error")
    assert grace.content == b"v1" and grace.headers["cache-status"].endswith("stale-on-error")
    assert past.status_code == 503 and past.content == b"down"


@pytest.mark.anyio
async def test_no_grace_by_default(cache: RedisCache) -> None:
    headers = [("cache-control", "max-age=1"), ("etag", '"v1"')]
    origin = Origin(specs={"/p": Spec(headers=headers, body=b"v1")})
    async with make_client(cache, origin) as client:
        await client.get("/p")
        advance_clock(client, 5)
        origin.specs["/p"] = Spec(status=503, body=b"down")
        r = await client.get("/p")
    assert r.status_code == 503


# Ranges: the pure parts (RFC 9110 14.1.1, 14.1.2, 13.1.5).


@pytest.mark.parametrize(
    ("value", "specs"),
    [
        (b"bytes=0-99", [(0, 99)]),
        (b"bytes=100-", [(100, None)]),
        (b"bytes=-50", [(None, 50)]),
        (b"bytes=0-0", [(0, 0)]),
        (b"bytes=-0", [(None, 0)]),
        (b"BYTES=1-2", [(1, 2)]),  # range units are case-insensitive
        (b" bytes=1-2 ", [(1, 2)]),
        (b"bytes=1-2, 5-6", [(1, 2), (5, 6)]),
        (b"bytes=1-2,,", [(1, 2)]),  # empty list elements are skipped (RFC 9110 5.6.1)
        (b"bytes=0-" + b"9" * 40, [(0, HUGE)]),
        (b"bytes=" + b"9" * 40 + b"-", [(HUGE, None)]),
        # Ignored (None): another unit, or an invalid ranges-specifier.
        (b"items=0-1", None),
        (b"bytes 0-1", None),
        (b"bytes=", None),
        (b"bytes=,", None),
        (b"bytes=5-1", None),  # last before first
        (b"bytes=1-2,5-1", None),  # one invalid spec spoils the set
        (b"bytes=a-b", None),
        (b"bytes=1", None),
        (b"bytes=--1", None),
        (b"bytes=1 - 2", None),
        (b"bytes=+1-2", None),
        (b"bytes=\xd9\xa1-2", None),  # a non-ASCII digit
        (b"bytes = 0-1", None),
        (b"", None),
    ],
)
def test_parse_range(value: bytes, specs: list[tuple[int | None, int | None]] | None) -> None:
    assert parse_range(value) == specs


@pytest.mark.parametrize(
    ("spec", "length", "answer"),
    [
        ((0, 99), 100, Part(0, 99)),
        ((0, 9), 100, Part(0, 9)),
        ((95, 200), 100, Part(95, 99)),  # a last past the end means the end
        ((90, None), 100, Part(90, 99)),
        ((99, None), 100, Part(99, 99)),
        ((None, 50), 100, Part(50, 99)),
        ((None, 500), 100, Part(0, 99)),  # a suffix longer than all of it: all of it
        ((0, HUGE), 100, Part(0, 99)),
        ((100, None), 100, Whole.UNSATISFIABLE),  # starts at the end
        ((100, 200), 100, Whole.UNSATISFIABLE),
        ((HUGE, None), 100, Whole.UNSATISFIABLE),
        ((None, 0), 100, Whole.UNSATISFIABLE),  # a suffix of no byte
        ((0, None), 0, Whole.UNSATISFIABLE),
        ((None, 5), 0, Whole.FULL),  # satisfiable, but no byte a 206 could name
    ],
)
def test_satisfy(spec: tuple[int | None, int | None], length: int, answer: Part | Whole) -> None:
    assert satisfy(spec, length) == answer


def test_part_headers() -> None:
    assert Part(0, 9).length == 10
    assert Part(90, 99).content_range(100) == b"bytes 90-99/100"


LAST_MODIFIED = b"Tue, 15 Nov 1994 12:45:26 GMT"
ONE_SECOND_LATER = b"Tue, 15 Nov 1994 12:45:27 GMT"


@pytest.mark.parametrize(
    ("value", "headers", "holds"),
    [
        # Entity-tags: strong comparison (RFC 9110 8.8.3.2).
        (b'"v1"', [(b"etag", b'"v1"')], True),
        (b' "v1" ', [(b"etag", b'"v1"')], True),
        (b'"v2"', [(b"etag", b'"v1"')], False),
        (b'W/"v1"', [(b"etag", b'"v1"')], False),
        (b'W/"v1"', [(b"etag", b'W/"v1"')], False),
        (b'"v1"', [(b"etag", b'W/"v1"')], False),
        (b'"v1"', [], False),
        (b'"v1"', [(b"etag", b"v1")], False),  # an unquoted stored ETag is no entity-tag
        # HTTP-dates: exactly Last-Modified, and only when it is a strong validator.
        (LAST_MODIFIED, [(b"last-modified", LAST_MODIFIED)], True),  # stored long after it
        (LAST_MODIFIED, [(b"last-modified", LAST_MODIFIED), (b"date", ONE_SECOND_LATER)], True),
        (LAST_MODIFIED, [(b"last-modified", LAST_MODIFIED), (b"date", LAST_MODIFIED)], False),
        (ONE_SECOND_LATER, [(b"last-modified", LAST_MODIFIED)], False),
        (b"Tuesday, 15-Nov-94 12:45:26 GMT", [(b"last-modified", LAST_MODIFIED)], False),
        (LAST_MODIFIED, [(b"etag", b'"v1"')], False),
        (b"junk", [(b"last-modified", b"junk")], False),
        (b"", [(b"last-modified", LAST_MODIFIED)], False),
    ],
)
def test_if_range_holds(value: bytes, headers: RawHeaders, holds: bool) -> None:
    assert if_range_holds(value, headers, NOW) is holds


def test_if_range_date_needs_a_second_after_last_modified_when_there_is_no_date() -> None:
    modified = 784903526.0  # LAST_MODIFIED
    headers = [(b"last-modified", LAST_MODIFIED)]
    assert if_range_holds(LAST_MODIFIED, headers, modified + 1) is True
    assert if_range_holds(LAST_MODIFIED, headers, modified + 0.5) is False


@pytest.mark.parametrize(
    ("range_value", "if_range", "answer"),
    [
        (b"bytes=0-9", [], Part(0, 9)),
        (b"bytes=0-9", [b'"v1"'], Part(0, 9)),
        (b"bytes=0-9", [b'"v2"'], Whole.FULL),
        (b"bytes=0-9", [b'"v1"', b'"v1"'], Whole.FULL),  # two If-Range lines are not one
        (b"bytes=200-", [], Whole.UNSATISFIABLE),
        (b"bytes=200-", [b'"v2"'], Whole.FULL),  # If-Range first: then the whole
        (b"bytes=0-1,5-6", [], Whole.FULL),  # several ranges: the whole
        (b"bytes=200-,300-", [], Whole.FULL),
        (b"bytes=x", [], Whole.FULL),
        (b"", [], Whole.FULL),
    ],
)
def test_select(range_value: bytes, if_range: list[bytes], answer: Part | Whole) -> None:
    assert select(range_value, if_range, [(b"etag", b'"v1"')], NOW, 100) == answer


def test_request_reads_range_once_and_two_lines_as_none_valid() -> None:
    scope = http_scope("/p")
    assert CacheRequest(scope, CacheConfig()).range is None
    scope["headers"] = [*scope["headers"], (b"range", b"bytes=0-1")]
    assert CacheRequest(scope, CacheConfig()).range == b"bytes=0-1"
    scope["headers"] = [*scope["headers"], (b"range", b"bytes=2-3")]
    assert CacheRequest(scope, CacheConfig()).range == b""


# Ranges through the middleware: a stored 200 answers them.

BODY = bytes(range(100))
STORED = [
    ("cache-control", "max-age=60"),
    ("etag", '"v1"'),
    ("last-modified", LAST_MODIFIED.decode()),
    ("content-type", "application/octet-stream"),
]


async def fill(client: httpx.AsyncClient) -> None:
    """Store the origin's ``/p`` (a miss, answered whole)."""
    first = await client.get("/p")
    assert first.status_code == 200 and first.content == BODY


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("range_value", "part"),
    [
        ("bytes=0-9", (0, 9)),
        ("bytes=90-", (90, 99)),
        ("bytes=-5", (95, 99)),
        ("bytes=95-1000", (95, 99)),
        ("bytes=0-", (0, 99)),
        ("bytes=-1000", (0, 99)),
        ("bytes=42-42", (42, 42)),
        ("bytes=3-4,", (3, 4)),
    ],
)
async def test_range_hit_is_a_206_from_the_cache(
    cache: RedisCache, range_value: str, part: tuple[int, int]
) -> None:
    origin = Origin(specs={"/p": Spec(headers=STORED, body=BODY)})
    async with make_client(cache, origin) as client:
        await fill(client)
        r = await client.get("/p", headers={"range": range_value})
    first, last = part
    assert r.status_code == 206
    assert r.content == BODY[first : last + 1]
    assert r.headers["content-range"] == f"bytes {first}-{last}/100"
    assert r.headers["content-length"] == str(last - first + 1)
    assert r.headers.get_list("content-length") == [str(last - first + 1)]
    # The 200's other headers come along (RFC 9110 15.3.7), and so do Age and Cache-Status.
    assert r.headers["etag"] == '"v1"' and r.headers["cache-control"] == "max-age=60"
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.headers["cache-status"].startswith("redis-cache; hit; ttl=")
    assert "age" in r.headers
    assert origin.calls["/p"] == 1


@pytest.mark.anyio
@pytest.mark.parametrize("range_value", ["bytes=100-", "bytes=500-600", "bytes=-0"])
async def test_unsatisfiable_range_is_a_416(cache: RedisCache, range_value: str) -> None:
    origin = Origin(specs={"/p": Spec(headers=STORED, body=BODY)})
    async with make_client(cache, origin) as client:
        await fill(client)
        r = await client.get("/p", headers={"range": range_value})
    assert r.status_code == 416
    assert r.headers["content-range"] == "bytes */100"
    assert r.headers["content-length"] == "0" and r.content == b""
    assert r.headers["cache-status"].startswith("redis-cache; hit; ")
    assert origin.calls["/p"] == 1


@pytest.mark.anyio
@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"range": "bytes=5-1"}, id="last-before-first"),
        pytest.param({"range": "bytes=abc"}, id="junk"),
        pytest.param({"range": "bytes 0-9"}, id="no-equals"),
        pytest.param({"range": "items=0-9"}, id="other-unit"),
        pytest.param({"range": "bytes=0-9,20-29"}, id="several-ranges"),
        pytest.param({"range": "bytes=0-9", "if-range": '"v2"'}, id="if-range-other-etag"),
        pytest.param({"range": "bytes=0-9", "if-range": 'W/"v1"'}, id="if-range-weak"),
        pytest.param(
            {"range": "bytes=0-9", "if-range": "Tue, 15 Nov 1994 12:45:27 GMT"},
            id="if-range-other-date",
        ),
        pytest.param({"range": "bytes=200-", "if-range": '"v2"'}, id="if-range-before-416"),
    ],
)
async def test_ignored_range_is_the_whole_200(cache: RedisCache, headers: dict[str, str]) -> None:
    origin = Origin(specs={"/p": Spec(headers=STORED, body=BODY)})
    async with make_client(cache, origin) as client:
        await fill(client)
        r = await client.get("/p", headers=headers)
    assert r.status_code == 200 and r.content == BODY
    assert "content-range" not in r.headers
    assert r.headers["content-length"] == "100"
    assert r.headers["cache-status"].startswith("redis-cache; hit; ")
    assert origin.calls["/p"] == 1


@pytest.mark.anyio
@pytest.mark.parametrize(
    "if_range",
    [pytest.param('"v1"', id="etag"), pytest.param(LAST_MODIFIED.decode(), id="last-modified")],
)
async def test_if_range_that_holds_gives_the_part(cache: RedisCache, if_range: str) -> None:
    origin = Origin(specs={"/p": Spec(headers=STORED, body=BODY)})
    async with make_client(cache, origin) as client:
        await fill(client)
        r = await client.get("/p", headers={"range": "bytes=10-19", "if-range": if_range})
    assert r.status_code == 206 and r.content == BODY[10:20]
    assert r.headers["content-range"] == "bytes 10-19/100"
    assert origin.calls["/p"] == 1


@pytest.mark.anyio
async def test_if_range_date_is_not_strong_when_date_equals_last_modified(
    cache: RedisCache,
) -> None:
    headers = [*STORED, ("date", LAST_MODIFIED.decode())]
    origin = Origin(specs={"/p": Spec(headers=headers, body=BODY)})
    async with make_client(cache, origin) as client:
        await fill(client)
        by_date = await client.get(
            "/p", headers={"range": "bytes=10-19", "if-range": LAST_MODIFIED.decode()}
        )
        by_etag = await client.get("/p", headers={"range": "bytes=10-19", "if-range": '"v1"'})
    assert by_date.status_code == 200 and by_date.content == BODY
    assert by_etag.status_code == 206


@pytest.mark.anyio
async def test_head_ignores_range(cache: RedisCache) -> None:
    origin = Origin(specs={"/p": Spec(headers=STORED, body=BODY)})
    async with make_client(cache, origin) as client:
        await fill(client)
        r = await client.head("/p", headers={"range": "bytes=0-9"})
    assert r.status_code == 200 and r.content == b""
    assert r.headers["content-length"] == "100" and "content-range" not in r.headers
    assert r.headers["cache-status"].startswith("redis-cache; hit; ")


@pytest.mark.anyio
async def test_conditional_request_matching_is_a_304_before_its_range(cache: RedisCache) -> None:
    origin = Origin(specs={"/p": Spec(headers=STORED, body=BODY)})
    async with make_client(cache, origin) as client:
        await fill(client)
        matching = await client.get("/p", headers={"range": "bytes=0-9", "if-none-match": '"v1"'})
        other = await client.get("/p", headers={"range": "bytes=0-9", "if-none-match": '"v0"'})
    assert matching.status_code == 304 and "content-range" not in matching.headers
    assert other.status_code == 206 and other.content == BODY[:10]


@pytest.mark.anyio
async def test_range_of_a_stored_status_other_than_200_is_ignored(cache: RedisCache) -> None:
    origin = Origin(specs={"/p": Spec(status=404, headers=STORED, body=BODY)})
    async with make_client(cache, origin) as client:
        await client.get("/p")
        r = await client.get("/p", headers={"range": "bytes=0-9"})
    assert r.status_code == 404 and r.content == BODY
    assert r.headers["cache-status"].startswith("redis-cache; hit; ")


@pytest.mark.anyio
async def test_range_of_a_stale_stand_in_is_the_whole_200(cache: RedisCache) -> None:
    origin = Origin(specs={"/p": Spec(headers=STORED, body=BODY)})
    async with make_client(cache, origin, stale_on_error_grace=600) as client:
        await fill(client)
        advance_clock(client, 120)
        origin.specs["/p"] = Spec(status=503, body=b"down")
        r = await client.get("/p", headers={"range": "bytes=0-9"})
    assert r.status_code == 200 and r.content == BODY
    assert r.headers["cache-status"].endswith("detail=stale-on-error")


PARTIAL = [("cache-control", "max-age=60"), ("content-range", "bytes 0-9/100")]


@pytest.mark.anyio
@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(Spec(status=206, headers=PARTIAL, body=BODY[:10]), id="206"),
        pytest.param(
            Spec(status=416, headers=[("content-range", "bytes */100")], body=b""), id="416"
        ),
    ],
)
async def test_range_miss_goes_to_the_app_and_its_answer_is_refused_for_the_request(
    cache: RedisCache, answer: Spec
) -> None:
    # The app's answer to a Range is that request's own: not stored, and no sign that the
    # URL's full responses cannot be (hit-for-pass stays off, coalescing on).
    origin = Origin(specs={"/p": answer})
    async with make_client(cache, origin) as client:
        locks = middleware_of(client).context.locks
        release = locks.release
        refused: list[bool] = []

        async def spy(*args: Any, **kwargs: Any) -> Any:
            refused.append(bool(kwargs.get("refused", False)))
            return await release(*args, **kwargs)

        locks.release = spy  # type: ignore[method-assign]
        r = await client.get("/p", headers={"range": "bytes=0-9"})
        origin.specs["/p"] = Spec(headers=STORED, body=BODY)
        full = await client.get("/p")
    assert r.status_code == answer.status
    assert r.headers["cache-status"].endswith(f"fwd-status={answer.status}; detail=partial")
    assert refused == [False]
    assert full.status_code == 200 and "fwd=uri-miss" in full.headers["cache-status"]
    assert origin.calls["/p"] == 2
    assert cache.stats.not_stored["partial"] == 1


@pytest.mark.anyio
async def test_range_answer_to_a_revalidation_leaves_the_stale_entry(cache: RedisCache) -> None:
    # A stale entry is revalidated with the Range request; the app answers its range. That
    # part says nothing of the stored 200 (RFC 9111 4.3.3 is about full answers): it stays.
    headers = [("cache-control", "max-age=1"), ("etag", '"v1"')]
    origin = Origin(specs={"/p": Spec(headers=headers, body=BODY)})
    async with make_client(cache, origin) as client:
        await fill(client)
        advance_clock(client, 5)
        origin.specs["/p"] = Spec(status=206, headers=PARTIAL, body=BODY[:10])
        r = await client.get("/p", headers={"range": "bytes=0-9"})
        assert r.status_code == 206 and "fwd=stale" in r.headers["cache-status"]
        (kept,) = await cache.inspect_url("http://testserver/p")
    assert kept.status == 200 and kept.size >= 100


#: The clock every table case runs at (2023-11-14 22:13:20 GMT).
NOW = 1_700_000_000.0
#: RFC 9110 5.6.7's example date (Sun, 06 Nov 1994 08:49:37 GMT) as POSIX time.
EXAMPLE = 784111777.0
CDN = (b"cdn-cache-control",)
OWN_FIRST = (b"redis-cache-control", b"cdn-cache-control")


def http_date(timestamp: float) -> str:
    """The IMF-fixdate of a POSIX time."""
    return formatdate(timestamp, usegmt=True)


def decide(
    headers: RawHeaders,
    *,
    status: int = 200,
    default_ttl: float | None = None,
    cacheable_statuses: Collection[int] = HEURISTIC_STATUSES,
    targeted: tuple[bytes, ...] = CDN,
    heuristic_fraction: float | None = None,
    keep_for_revalidation: float = 60.0,
    error_ttl: float | None = 10.0,
    request_has_cookie: bool = False,
) -> StoreDecision:
    """``decide_store`` at ``NOW`` with the middleware's defaults."""
    return decide_store(
        status,
        headers,
        now=NOW,
        default_ttl=default_ttl,
        cacheable_statuses=cacheable_statuses,
        targeted=targeted,
        heuristic_fraction=heuristic_fraction,
        keep_for_revalidation=keep_for_revalidation,
        error_ttl=error_ttl,
        request_has_cookie=request_has_cookie,
    )


def cc(value: bytes) -> tuple[bytes, bytes]:
    return (b"cache-control", value)


def cdn(value: bytes) -> tuple[bytes, bytes]:
    return (b"cdn-cache-control", value)


def stored(response: httpx.Response) -> bool:
    return response.headers["cache-status"].endswith("; stored")


def detail(response: httpx.Response) -> str:
    return response.headers["cache-status"].rpartition("; detail=")[2]


# ======================================================================================
# policy
# ======================================================================================

# -- Age (RFC 9111 5.1, 1.2.2) ------------------------------------------------------------


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        pytest.param([], 0.0, id="absent"),
        pytest.param([b"60"], 60.0, id="one"),
        pytest.param([b" 60\t"], 60.0, id="ows"),
        pytest.param([b"7200, 0"], 7200.0, id="list-first-member"),
        pytest.param([b"7200", b"0"], 7200.0, id="lines-first-line"),
        pytest.param([b" , 30, 5"], 30.0, id="empty-element-skipped"),
        pytest.param([b"abc"], 0.0, id="invalid-ignored"),
        pytest.param([b"abc", b"7200"], 0.0, id="invalid-first-member-ignores-field"),
        pytest.param([b"-5"], 0.0, id="negative"),
        pytest.param([b"1.5"], 0.0, id="decimal"),
        pytest.param([b"+5"], 0.0, id="plus-sign"),
        pytest.param(["\u0663".encode()], 0.0, id="non-ascii-digit"),
        pytest.param([b"99999999999"], float(MAX_DELTA_SECONDS), id="clamped-2-31"),
    ],
)
def test_age_first_member_invalid_ignored(lines: list[bytes], expected: float) -> None:
    assert parse_age(lines) == expected


@pytest.mark.parametrize(
    ("ages", "store"),
    [
        pytest.param([b"7200, 0"], False, id="list"),
        pytest.param([b"7200", b"0"], False, id="two-lines"),
        pytest.param([b"0", b"7200"], True, id="young-first"),
        pytest.param([b"junk"], True, id="junk-ignored"),
    ],
)
def test_age_decides_freshness_on_arrival(ages: list[bytes], store: bool) -> None:
    decision = decide([cc(b"max-age=3600"), *((b"age", a) for a in ages)])
    assert decision.store is store
    assert decision.reason == ("stored" if store else "stale")


@pytest.mark.parametrize("ages", [["7200, 0"], ["7200", "0"]], ids=["list", "two-lines"])
async def test_middleware_old_response_by_age_not_served_fresh(
    cache: RedisCache, ages: list[str]
) -> None:
    spec = Spec(headers=[("cache-control", "max-age=3600"), *(("age", a) for a in ages)])
    origin = Origin(specs={"/old": spec})
    async with make_client(cache, origin) as client:
        first = await client.get("/old")
        second = await client.get("/old")
    assert detail(first) == "stale"
    assert "hit" not in second.headers["cache-status"]
    assert origin.calls["/old"] == 2


# -- HTTP-date (RFC 9110 5.6.7, RFC 9111 4.2 and 5.3) -------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(b"Sun, 06 Nov 1994 08:49:37 GMT", EXAMPLE, id="imf-fixdate"),
        pytest.param(b"Sunday, 06-Nov-94 08:49:37 GMT", EXAMPLE, id="rfc850"),
        pytest.param(b"Sun Nov  6 08:49:37 1994", EXAMPLE, id="asctime"),
        pytest.param(b"Sun Nov 06 08:49:37 1994", EXAMPLE, id="asctime-2digit-day"),
        pytest.param(b"sun, 06 nov 1994 08:49:37 gmt", EXAMPLE, id="case-insensitive"),
        pytest.param(b"  Sun, 06 Nov 1994 08:49:37 GMT\t", EXAMPLE, id="field-ows"),
        pytest.param(b"Thu, 31 Dec 1998 23:59:60 GMT", 915148800.0, id="leap-second"),
        pytest.param(b"Sun, 06 Nov 1994 08:49:37 UTC", None, id="zone-utc"),
        pytest.param(b"Sun, 06 Nov 1994 08:49:37 AEST", None, id="zone-aest"),
        pytest.param(b"Sun, 06 Nov 1994 08:49:37 +0000", None, id="zone-numeric"),
        pytest.param(b"Sun, 06 Nov 1994 08:49:37", None, id="zone-missing"),
        pytest.param(b"Sun, 06 Nov 94 08:49:37 GMT", None, id="two-digit-year-imf"),
        pytest.param(b"Sun Nov  6 08:49:37 94", None, id="two-digit-year-asctime"),
        pytest.param(b"Sun 06 Nov 1994 08:49:37 GMT", None, id="missing-comma"),
        pytest.param(b"Sun,  06 Nov 1994 08:49:37 GMT", None, id="extra-space"),
        pytest.param(b"Sun, 06 Nov 1994  08:49:37 GMT", None, id="extra-space-inside"),
        pytest.param(b"Sun, 06-Nov-1994 08:49:37 GMT", None, id="dashes-imf"),
        pytest.param(b"Sun, 06 Nov 1994 08.49.37 GMT", None, id="periods-in-time"),
        pytest.param(b"Sun, 06 Nov 1994 8:49:37 GMT", None, id="one-digit-hour"),
        pytest.param(b"Sun, 6 Nov 1994 08:49:37 GMT", None, id="one-digit-day-imf"),
        pytest.param(b"06 Nov 1994 08:49:37 GMT", None, id="no-day-name"),
        pytest.param(b"Sunday, 06 Nov 1994 08:49:37 GMT", None, id="long-day-name-imf"),
        pytest.param(b"Sun, 31 Feb 1994 08:49:37 GMT", None, id="no-such-day"),
        pytest.param(b"Sun, 06 Nov 1994 24:00:00 GMT", None, id="hour-24"),
        pytest.param(b"Sun, 06 Nov 0000 08:49:37 GMT", None, id="year-zero"),
        pytest.param(
            b"Sun, 06 Nov 1994 08:49:37 GMT, Mon, 07 Nov 1994 08:49:37 GMT",
            None,
            id="two-dates",
        ),
        pytest.param(b"0", None, id="zero"),
        pytest.param(b"1994-11-06T08:49:37Z", None, id="iso-8601"),
        pytest.param(b"", None, id="empty"),
    ],
)
def test_http_date_strict(value: bytes, expected: float | None) -> None:
    assert parse_http_date(value) == expected


@given(st.floats(min_value=0, max_value=253402300799))
def test_http_date_imf_fixdate_round_trips(timestamp: float) -> None:
    assert parse_http_date(http_date(timestamp).encode()) == float(int(timestamp))


@given(st.binary(max_size=64), st.one_of(st.none(), st.floats(allow_nan=False)))
def test_http_date_never_raises(value: bytes, now: float | None) -> None:
    parsed = parse_http_date(value, now)
    assert parsed is None or isinstance(parsed, float)


@given(st.lists(st.binary(max_size=32), max_size=3))
def test_age_and_targeted_never_raise(lines: list[bytes]) -> None:
    assert 0 <= parse_age(lines) <= MAX_DELTA_SECONDS
    parse_targeted("cdn-cache-control", lines)


@pytest.mark.parametrize(
    ("value", "year"),
    [
        pytest.param(b"Sunday, 06-Nov-94 08:49:37 GMT", 1994, id="94-past"),
        pytest.param(b"Friday, 01-Jan-60 00:00:00 GMT", 2060, id="60-under-50-years-ahead"),
        pytest.param(b"Friday, 01-Jan-73 00:00:00 GMT", 2073, id="73-exactly-50-years"),
        pytest.param(b"Friday, 01-Jan-74 00:00:00 GMT", 1974, id="74-over-50-years"),
    ],
)
def test_http_date_rfc850_year_within_50_years(value: bytes, year: int) -> None:
    parsed = parse_http_date(value, NOW)  # NOW is in 2023
    assert parsed is not None and time.gmtime(parsed).tm_year == year


@pytest.mark.parametrize(
    ("expires", "date", "lifetime"),
    [
        pytest.param(http_date(NOW + 600), http_date(NOW), 600.0, id="valid"),
        pytest.param(http_date(NOW + 600), None, 600.0, id="no-date-uses-now"),
        pytest.param("Thu, 01 Jan 2099 00:00:00 UTC", None, 0.0, id="utc-is-expired"),
        pytest.param("Thu, 01 Jan 99 00:00:00 GMT", None, 0.0, id="two-digit-year-expired"),
        pytest.param(
            f"{http_date(NOW + 600)}, {http_date(NOW + 900)}", None, 0.0, id="two-lines-expired"
        ),
        pytest.param(
            http_date(NOW + 600),
            f"{http_date(NOW - 900)}, {http_date(NOW)}",
            600.0,
            id="two-date-lines-use-now",
        ),
        pytest.param(http_date(NOW + 600), "Tue, 14 Nov 2023 22:03:20 UTC", 600.0, id="bad-date"),
    ],
)
def test_expires_strict(expires: str, date: str | None, lifetime: float) -> None:
    got = get_freshness_lifetime(
        CacheControl(), expires.encode(), date.encode() if date else None, NOW
    )
    assert got == lifetime


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        pytest.param([(b"expires", b"Thu, 01 Jan 2099 00:00:00 UTC")], "stale", id="utc"),
        pytest.param(
            [(b"expires", http_date(NOW + 600).encode())] * 2, "stale", id="two-expires-lines"
        ),
        pytest.param([(b"expires", http_date(NOW + 600).encode())], "stored", id="valid"),
    ],
)
def test_expires_decides_store(headers: RawHeaders, reason: str) -> None:
    assert decide(headers).reason == reason


@pytest.mark.parametrize(
    ("since", "not_modified"),
    [
        pytest.param(b"Sun, 06 Nov 1994 08:49:37 GMT", True, id="valid"),
        pytest.param(b"Sun, 06 Nov 1994 08:49:37 UTC", False, id="utc-ignored"),
        pytest.param(b"Sunday, 06-Nov-94 08:49:37 GMT", True, id="rfc850"),
        pytest.param(
            b"Sun, 06 Nov 1994 08:49:37 GMT, Sun, 06 Nov 1994 08:49:37 GMT",
            False,
            id="two-lines-ignored",
        ),
    ],
)
def test_if_modified_since_invalid_ignored(since: bytes, not_modified: bool) -> None:
    headers = [(b"last-modified", b"Sun, 06 Nov 1994 08:49:37 GMT")]
    assert is_not_modified([], since, headers, NOW) is not_modified


@pytest.mark.parametrize(
    "expires",
    [
        pytest.param(["Thu, 01 Jan 2099 00:00:00 UTC"], id="utc"),
        pytest.param(["Thu, 01 Jan 2099 00:00:00 AEST"], id="aest"),
        pytest.param(["Thu, 01 Jan 99 00:00:00 GMT"], id="two-digit-year"),
        pytest.param(["Thu 01 Jan 2099 00:00:00 GMT"], id="missing-comma"),
        pytest.param(["Thu, 01-Jan-2099 00:00:00 GMT"], id="dashes"),
        pytest.param(["Thu, 01 Jan 2099 00.00.00 GMT"], id="periods"),
        pytest.param(["Thu, 01 Jan 2099 0:00:00 GMT"], id="one-digit-hour"),
        pytest.param(["Thu, 01 Jan 2099 00:00:00 GMT"] * 2, id="two-lines"),
    ],
)
async def test_middleware_invalid_expires_is_expired(cache: RedisCache, expires: list[str]) -> None:
    origin = Origin(specs={"/e": Spec(headers=[("expires", e) for e in expires])})
    async with make_client(cache, origin) as client:
        first = await client.get("/e")
        second = await client.get("/e")
    assert detail(first) == "stale"
    assert origin.calls["/e"] == 2 and "hit" not in second.headers["cache-status"]


@pytest.mark.parametrize(
    ("since", "status"),
    [
        pytest.param(["Sun, 06 Nov 1994 08:49:37 GMT"], 304, id="valid"),
        pytest.param(["Sun, 06 Nov 1994 08:49:37 UTC"], 200, id="utc-ignored"),
        pytest.param(["Sun, 06 Nov 1994 08:49:37 GMT"] * 2, 200, id="two-lines-ignored"),
    ],
)
async def test_middleware_invalid_if_modified_since_ignored(
    cache: RedisCache, since: list[str], status: int
) -> None:
    headers = [("cache-control", "max-age=60"), ("last-modified", http_date(EXAMPLE))]
    origin = Origin(specs={"/ims": Spec(headers=headers, body=b"page")})
    async with make_client(cache, origin) as client:
        await client.get("/ims")
        hit = await client.get("/ims", headers=[("if-modified-since", s) for s in since])
    assert "hit" in hit.headers["cache-status"]
    assert hit.status_code == status
    assert hit.content == (b"page" if status == 200 else b"")


# -- Targeted cache control (RFC 9213 2 and 3) --------------------------------------------


@pytest.mark.parametrize(
    ("lines", "valid"),
    [
        pytest.param([b"max-age=600"], True, id="integer"),
        pytest.param([b"max-age=600, public"], True, id="boolean-member"),
        pytest.param([b'no-cache="set-cookie"'], True, id="string"),
        pytest.param([b"max-age=60;x=1, a=(1 2);y"], True, id="parameters-inner-list"),
        pytest.param([b"max-age=60", b"private"], True, id="two-lines"),
        pytest.param([b'a=?0, b=:YWJj:, c=-1.5, d=@1, e=%"%c3%a9", f=*t/x'], True, id="types"),
        pytest.param([b""], False, id="empty"),
        pytest.param([b"max-age=60,"], False, id="trailing-comma"),
        pytest.param([b"Max-Age=60"], False, id="uppercase-key"),
        pytest.param([b"max-age=60 private"], False, id="no-comma"),
        pytest.param([b'no-cache="a'], False, id="unterminated-string"),
        pytest.param([b"max-age=1234567890123456"], False, id="integer-too-long"),
        pytest.param([b"max-age=1.2345"], False, id="decimal-too-precise"),
        pytest.param([b"a=?2"], False, id="bad-boolean"),
        pytest.param([b"a=(1 2"], False, id="open-inner-list"),
        pytest.param(["max-age=60, caf\u00e9".encode()], False, id="non-ascii"),
        pytest.param([b"max-age=60", b""], False, id="empty-second-line"),
    ],
)
def test_targeted_field_is_a_structured_dictionary(lines: list[bytes], valid: bool) -> None:
    members = parse_dictionary(lines)
    assert (members is not None and members != {}) is valid
    assert (parse_targeted("cdn-cache-control", lines) is not None) is valid


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(b"max-age=600", CacheControl(max_age=600), id="max-age"),
        pytest.param(b"max-age=1.5", CacheControl(max_age=0), id="decimal-not-consumed"),
        pytest.param(b'max-age="600"', CacheControl(max_age=0), id="string-not-consumed"),
        pytest.param(b"max-age=-1", CacheControl(max_age=0), id="negative"),
        pytest.param(b"max-age=10, max-age=20", CacheControl(max_age=20), id="last-key-wins"),
        pytest.param(b"max-age=600;foo=1", CacheControl(max_age=600), id="parameter-ignored"),
        pytest.param(b"no-store=?0", CacheControl(no_store=True), id="restriction-any-value"),
        pytest.param(b"public=?0, s-maxage=5", CacheControl(s_maxage=5), id="public-only-true"),
        pytest.param(
            b'private="set-cookie", no-cache', CacheControl(private=True, no_cache=True), id="flags"
        ),
        pytest.param(
            b"stale-while-revalidate=30, stale-if-error=60, must-revalidate",
            CacheControl(stale_while_revalidate=30, stale_if_error=60, must_revalidate=True),
            id="stale-windows",
        ),
        pytest.param(b"none", CacheControl(), id="unknown-only"),
    ],
)
def test_targeted_directives(value: bytes, expected: CacheControl) -> None:
    got = parse_targeted("cdn-cache-control", [value])
    assert got == CacheControl(**{**_fields(expected), "source": "cdn-cache-control"})


def _fields(directives: CacheControl) -> dict[str, Any]:
    return {name: getattr(directives, name) for name in CacheControl.__slots__}


@pytest.mark.parametrize(
    ("headers", "targets", "source", "max_age"),
    [
        pytest.param([cc(b"max-age=60"), cdn(b"max-age=600")], CDN, "cdn-cache-control", 600),
        pytest.param([cc(b"max-age=60")], CDN, "cache-control", 60, id="absent"),
        pytest.param([cc(b"max-age=60"), cdn(b"")], CDN, "cache-control", 60, id="empty"),
        pytest.param(
            [cc(b"max-age=60"), cdn(b"max-age=600,")], CDN, "cache-control", 60, id="invalid"
        ),
        pytest.param([cc(b"max-age=60"), cdn(b"max-age=600")], (), "cache-control", 60, id="off"),
        pytest.param(
            [cdn(b"max-age=600"), (b"redis-cache-control", b"max-age=5"), cc(b"max-age=60")],
            OWN_FIRST,
            "redis-cache-control",
            5,
            id="own-field-first",
        ),
        pytest.param(
            [cdn(b"max-age=600"), (b"redis-cache-control", b"max-age=5;")],
            OWN_FIRST,
            "cdn-cache-control",
            600,
            id="invalid-own-field-falls-to-cdn",
        ),
        pytest.param(
            [(b"other-cache-control", b"max-age=5"), cc(b"max-age=60")],
            CDN,
            "cache-control",
            60,
            id="not-on-target-list",
        ),
    ],
)
def test_effective_cache_control_precedence(
    headers: RawHeaders, targets: tuple[bytes, ...], source: str, max_age: int
) -> None:
    directives = effective_cache_control(headers, targets)
    assert (directives.source, directives.max_age) == (source, max_age)


@pytest.mark.parametrize(
    ("headers", "decision"),
    [
        pytest.param(
            [cc(b"no-store"), cdn(b"max-age=600")], ("stored", 600.0), id="cdn-replaces-cc"
        ),
        pytest.param([cc(b"max-age=600"), cdn(b"no-store")], ("no-store", 0.0), id="cdn-no-store"),
        pytest.param([cc(b"max-age=600"), cdn(b"private")], ("private", 0.0), id="cdn-private"),
        pytest.param(
            [cdn(b"public"), (b"expires", http_date(NOW + 600).encode())],
            ("no-ttl", 0.0),
            id="expires-ignored-under-targeted",
        ),
        pytest.param(
            [cc(b"no-store"), cdn(b"max-age=600,")], ("no-store", 0.0), id="invalid-cdn-ignored"
        ),
        pytest.param(
            [cdn(b"public, max-age=600"), (b"set-cookie", b"a=1")],
            ("set-cookie", 0.0),
            id="set-cookie-still-refused",
        ),
    ],
)
def test_targeted_decides_store(headers: RawHeaders, decision: tuple[str, float]) -> None:
    got = decide(headers)
    assert (got.reason, got.fresh_for) == decision


def test_targeted_explicit_share_for_private_requests() -> None:
    headers = [cc(b"max-age=60"), cdn(b"public, max-age=60")]
    assert is_explicitly_shared(headers, CDN)
    assert not is_explicitly_shared(headers, ())
    assert decide(headers, request_has_cookie=True).store
    assert decide(headers, request_has_cookie=True, targeted=()).reason == "cookie"


async def test_middleware_cdn_cache_control_rules_storage_and_is_forwarded(
    cache: RedisCache,
) -> None:
    headers = [("cache-control", "no-store"), ("cdn-cache-control", "max-age=600")]
    origin = Origin(specs={"/t": Spec(headers=headers)})
    async with make_client(cache, origin) as client:
        first = await client.get("/t")
        second = await client.get("/t")
    assert stored(first) and second.headers["cache-status"].startswith("redis-cache; hit")
    assert origin.calls["/t"] == 1
    for response in (first, second):
        # The client gets the app's Cache-Control, and CDN-Cache-Control goes on downstream.
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["cdn-cache-control"] == "max-age=600"


@pytest.mark.parametrize(
    ("headers", "options", "cached"),
    [
        pytest.param(
            [("cache-control", "max-age=600"), ("cdn-cache-control", "no-store")],
            {},
            False,
            id="cdn-no-store",
        ),
        pytest.param(
            [("cache-control", "no-store"), ("cdn-cache-control", "max-age=600, ")],
            {},
            False,
            id="invalid-cdn-ignored",
        ),
        pytest.param(
            [("cache-control", "no-store"), ("cdn-cache-control", "max-age=600")],
            {"targeted_cache_control": ()},
            False,
            id="turned-off",
        ),
        pytest.param(
            [
                ("cache-control", "no-store"),
                ("cdn-cache-control", "no-store"),
                ("redis-cache-control", "max-age=600"),
            ],
            {"targeted_cache_control": ("Redis-Cache-Control", "CDN-Cache-Control")},
            True,
            id="own-field-first",
        ),
        pytest.param(
            [("cdn-cache-control", "public"), ("expires", "Thu, 01 Jan 2099 00:00:00 GMT")],
            {},
            False,
            id="expires-ignored-under-targeted",
        ),
        pytest.param(
            [("cdn-cache-control", "public, max-age=600"), ("set-cookie", "s=1")],
            {},
            False,
            id="set-cookie-never-shared",
        ),
    ],
)
async def test_middleware_targeted_precedence(
    cache: RedisCache, headers: list[tuple[str, str]], options: dict[str, Any], cached: bool
) -> None:
    origin = Origin(specs={"/t": Spec(headers=headers)})
    async with make_client(cache, origin, **options) as client:
        first = await client.get("/t")
        second = await client.get("/t")
    assert stored(first) is cached
    assert origin.calls["/t"] == (1 if cached else 2)
    for name, value in headers:
        if name != "set-cookie":
            assert second.headers.get_list(name) == [value]  # every field passed on


def test_targeted_field_repeated_in_304() -> None:
    # RFC 9110 15.4.5: metadata "for the purpose of guiding cache updates" may go in a 304,
    # and a CDN in front of us needs CDN-Cache-Control to refresh its copy (RFC 9213 3).
    headers = [cc(b"max-age=60"), cdn(b"max-age=600"), (b"etag", b'"v1"'), (b"x-other", b"1")]
    assert get_not_modified_headers(headers) == headers[:3]


async def test_middleware_304_from_cache_carries_cdn_cache_control(cache: RedisCache) -> None:
    headers = [("cache-control", "max-age=60"), ("cdn-cache-control", "max-age=600")]
    origin = Origin(specs={"/v": Spec(headers=[*headers, ("etag", '"v1"')])})
    async with make_client(cache, origin) as client:
        await client.get("/v")
        not_modified = await client.get("/v", headers={"if-none-match": '"v1"'})
    assert not_modified.status_code == 304
    assert not_modified.headers["cdn-cache-control"] == "max-age=600"


async def test_middleware_targeted_public_serves_cookie_requests(cache: RedisCache) -> None:
    headers = [("cache-control", "max-age=60"), ("cdn-cache-control", "public, max-age=60")]
    origin = Origin(specs={"/shared": Spec(headers=headers)})
    async with make_client(cache, origin) as client:
        await client.get("/shared")
        with_cookie = await client.get("/shared", headers={"cookie": "session=1"})
    assert with_cookie.headers["cache-status"].startswith("redis-cache; hit")
    assert origin.calls["/shared"] == 1


# -- A 200 with Content-Range is whole (RFC 9110 14.4, 15.3.7; RFC 9111 3.3) ---------------


@pytest.mark.parametrize(
    ("status", "reason"),
    [pytest.param(200, "stored", id="200-whole"), pytest.param(206, "partial", id="206")],
)
def test_content_range_on_200_is_storable(status: int, reason: str) -> None:
    headers = [cc(b"max-age=60"), (b"content-range", b"bytes 0-4/5")]
    assert decide(headers, status=status, cacheable_statuses={200, 203}).reason == reason


async def test_middleware_200_with_content_range_stored(cache: RedisCache) -> None:
    headers = [("cache-control", "max-age=60"), ("content-range", "bytes 0-4/5")]
    origin = Origin(specs={"/r": Spec(headers=headers, body=b"whole")})
    async with make_client(cache, origin) as client:
        first = await client.get("/r")
        second = await client.get("/r")
    assert stored(first) and second.content == b"whole"
    assert origin.calls["/r"] == 1


# -- Explicit freshness for any understood status (RFC 9111 3, 4.2.1) ---------------------


@pytest.mark.parametrize(
    ("status", "headers", "default_ttl", "expected"),
    [
        pytest.param(302, [cc(b"max-age=60")], None, ("stored", 60.0), id="302-max-age"),
        pytest.param(500, [cc(b"max-age=60")], None, ("stored", 60.0), id="500-max-age"),
        pytest.param(201, [cc(b"s-maxage=30")], None, ("stored", 30.0), id="201-s-maxage"),
        pytest.param(
            307,
            [(b"expires", http_date(NOW + 90).encode())],
            None,
            ("stored", 90.0),
            id="307-expires",
        ),
        pytest.param(426, [cc(b"max-age=60")], None, ("stored", 60.0), id="426-max-age"),
        pytest.param(418, [cc(b"max-age=60")], None, ("status", 0.0), id="418-unused"),
        pytest.param(306, [cc(b"max-age=60")], None, ("status", 0.0), id="306-unused"),
        pytest.param(305, [cc(b"max-age=60")], None, ("status", 0.0), id="305-deprecated"),
        pytest.param(599, [cc(b"max-age=60")], None, ("status", 0.0), id="599-undefined"),
        pytest.param(206, [cc(b"max-age=60")], None, ("partial", 0.0), id="206-partial"),
        pytest.param(304, [cc(b"max-age=60")], None, ("status", 0.0), id="304"),
        pytest.param(302, [], 60.0, ("status", 0.0), id="302-default-ttl-not-cacheable"),
        pytest.param(302, [cc(b"public")], None, ("status", 0.0), id="302-public-no-lifetime"),
        pytest.param(404, [], 300.0, ("stored", 10.0), id="404-default-capped-by-error-ttl"),
        pytest.param(
            404, [cc(b"max-age=300")], None, ("stored", 300.0), id="404-explicit-not-capped"
        ),
    ],
)
def test_explicit_freshness_any_understood_status(
    status: int, headers: RawHeaders, default_ttl: float | None, expected: tuple[str, float]
) -> None:
    got = decide(headers, status=status, default_ttl=default_ttl)
    assert (got.reason, got.fresh_for) == expected


@pytest.mark.parametrize("status", [302, 500])
async def test_middleware_explicit_freshness_stores_any_status(
    cache: RedisCache, status: int
) -> None:
    spec = Spec(status=status, headers=[("cache-control", "max-age=60"), ("location", "/x")])
    origin = Origin(specs={"/s": spec})
    async with make_client(cache, origin) as client:
        first = await client.get("/s", follow_redirects=False)
        second = await client.get("/s", follow_redirects=False)
    assert stored(first)
    assert second.status_code == status and second.content == first.content
    assert origin.calls["/s"] == 1


@pytest.mark.parametrize(
    ("status", "headers"),
    [
        pytest.param(302, [], id="302-without-explicit-freshness"),
        pytest.param(418, [("cache-control", "max-age=60")], id="418-not-understood"),
    ],
)
async def test_middleware_status_not_stored(
    cache: RedisCache, status: int, headers: list[tuple[str, str]]
) -> None:
    spec = Spec(status=status, headers=[*headers, ("location", "/x")])
    origin = Origin(specs={"/s": spec})
    async with make_client(cache, origin, default_ttl=60) as client:
        first = await client.get("/s", follow_redirects=False)
        await client.get("/s", follow_redirects=False)
    assert detail(first) == "status"
    assert origin.calls["/s"] == 2


# -- Heuristic freshness (RFC 9111 4.2.2) -------------------------------------------------


@pytest.mark.parametrize(
    ("last_modified", "date", "lifetime"),
    [
        pytest.param(NOW - 1000, NOW, 100.0, id="tenth-of-age"),
        pytest.param(NOW - 1000, None, 100.0, id="no-date-uses-now"),
        pytest.param(NOW - 10_000_000, NOW, 86400.0, id="capped"),
        pytest.param(NOW, NOW, 0.0, id="modified-now"),
        pytest.param(NOW + 50, NOW, None, id="modified-in-future"),
        pytest.param(None, NOW, None, id="no-last-modified"),
    ],
)
def test_heuristic_lifetime(
    last_modified: float | None, date: float | None, lifetime: float | None
) -> None:
    lm = http_date(last_modified).encode() if last_modified is not None else None
    got = get_heuristic_lifetime(lm, http_date(date).encode() if date else None, NOW, 0.1, 86400.0)
    assert got == lifetime


def test_heuristic_lifetime_invalid_last_modified() -> None:
    assert get_heuristic_lifetime(b"yesterday", None, NOW, 0.1, 86400.0) is None


@pytest.mark.parametrize(
    ("status", "headers", "default_ttl", "fraction", "expected"),
    [
        pytest.param(200, [], None, 0.1, ("heuristic", 100.0), id="used"),
        pytest.param(200, [], None, None, ("no-ttl", 0.0), id="off"),
        pytest.param(200, [], 30.0, 0.1, ("stored", 30.0), id="default-ttl-wins"),
        pytest.param(200, [cc(b"max-age=5")], None, 0.1, ("stored", 5.0), id="explicit-wins"),
        pytest.param(404, [], None, 0.1, ("heuristic", 10.0), id="error-capped-by-error-ttl"),
        pytest.param(302, [], None, 0.1, ("status", 0.0), id="not-heuristically-cacheable"),
        pytest.param(200, [cc(b"no-store")], None, 0.1, ("no-store", 0.0), id="no-store"),
    ],
)
def test_heuristic_decides_store(
    status: int,
    headers: RawHeaders,
    default_ttl: float | None,
    fraction: float | None,
    expected: tuple[str, float],
) -> None:
    lm = [(b"last-modified", http_date(NOW - 1000).encode()), (b"date", http_date(NOW).encode())]
    got = decide(
        [*headers, *lm], status=status, default_ttl=default_ttl, heuristic_fraction=fraction
    )
    assert (got.reason, got.fresh_for) == expected


@pytest.mark.parametrize(
    ("status", "options", "ttl"),
    [
        pytest.param(200, {"heuristic_freshness": True}, 1000, id="on"),
        pytest.param(200, {}, None, id="off-by-default"),
        pytest.param(
            200, {"heuristic_freshness": True, "default_ttl": 30}, 30, id="default-ttl-wins"
        ),
        pytest.param(404, {"heuristic_freshness": True}, 10, id="error-capped-by-error-ttl"),
        pytest.param(302, {"heuristic_freshness": True}, None, id="not-in-cacheable-statuses"),
    ],
)
async def test_middleware_heuristic_freshness(
    cache: RedisCache, status: int, options: dict[str, Any], ttl: int | None
) -> None:
    now = time.time()
    headers = [("date", http_date(now)), ("last-modified", http_date(now - 10_000))]
    origin = Origin(specs={"/lm": Spec(status=status, headers=[*headers, ("location", "/")])})
    async with make_client(cache, origin, **options) as client:
        first = await client.get("/lm", follow_redirects=False)
        second = await client.get("/lm", follow_redirects=False)
    if ttl is None:
        assert not stored(first) and origin.calls["/lm"] == 2
        return
    assert stored(first) and second.headers["cache-status"].startswith("redis-cache; hit")
    got = int(second.headers["cache-status"].rpartition("ttl=")[2])
    assert ttl - 10 <= got <= ttl  # a tenth of the 10,000 s since Last-Modified, or the cap
    assert origin.calls["/lm"] == 1


# -- no-cache responses (RFC 9111 5.2.2.4, 4.3) -------------------------------------------


@pytest.mark.parametrize(
    ("headers", "keep", "expected"),
    [
        pytest.param([cc(b"no-cache"), (b"etag", b'"v1"')], 60.0, (True, 60.0), id="etag"),
        pytest.param(
            [cc(b"no-cache"), (b"last-modified", http_date(NOW - 5).encode())],
            60.0,
            (True, 60.0),
            id="last-modified",
        ),
        pytest.param(
            [cc(b"no-cache, max-age=600"), (b"etag", b'"v1"')], 60.0, (True, 600.0), id="lifetime"
        ),
        pytest.param([cc(b"no-cache")], 60.0, (False, 0.0), id="no-validator"),
        pytest.param([cc(b"no-cache, max-age=600")], 60.0, (False, 0.0), id="no-validator-ttl"),
        pytest.param([cc(b"no-cache"), (b"etag", b'"v1"')], 0.0, (False, 0.0), id="no-keep"),
        pytest.param(
            [cdn(b"no-cache"), cc(b"max-age=600"), (b"etag", b'"v1"')],
            60.0,
            (True, 60.0),
            id="targeted-no-cache",
        ),
    ],
)
def test_no_cache_stored_for_revalidation(
    headers: RawHeaders, keep: float, expected: tuple[bool, float]
) -> None:
    got = decide(headers, keep_for_revalidation=keep)
    assert (got.store, got.stale_for) == expected
    assert got.fresh_for == 0.0
    assert got.stale_while_revalidate == got.stale_if_error == 0.0
    if not got.store:
        reason = "no-cache-no-validator" if b"etag" not in dict(headers) else "no-ttl"
        assert got.reason == reason


class Revalidating:
    """An origin answering ``no-cache`` with an ETag, and 304 to a matching
    ``If-None-Match``; it records the validators each call carried."""

    def __init__(self, etag: bool = True) -> None:
        self.etag = etag
        self.seen: list[str | None] = []

    async def handle(self, request: Request) -> Response:
        inm = request.headers.get("if-none-match")
        self.seen.append(inm)
        headers = {"cache-control": "no-cache"}
        if self.etag:
            headers["etag"] = '"v1"'
            if inm == '"v1"':
                return Response(status_code=304, headers=headers)
        return Response(f"body {len(self.seen)}", headers=headers)

    def client(self, cache: RedisCache) -> httpx.AsyncClient:
        app = Starlette(routes=[Route("/nc", self.handle)])
        app.add_middleware(CacheMiddleware, cache=cache, timeout=TEST_TIMEOUT)
        transport = httpx.ASGITransport(app=app)
        return httpx.AsyncClient(transport=transport, base_url="http://testserver")


async def test_middleware_no_cache_revalidated_on_every_use(cache: RedisCache) -> None:
    origin = Revalidating()
    async with origin.client(cache) as client:
        responses = [await client.get("/nc") for _ in range(3)]
    assert stored(responses[0])
    # Every use asks the app, with the entry's validator; its 304 serves the stored body.
    assert origin.seen == [None, '"v1"', '"v1"']
    assert [r.content for r in responses] == [b"body 1"] * 3
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert "fwd=stale; fwd-status=304" in responses[1].headers["cache-status"]


async def test_middleware_no_cache_without_validator_not_stored(cache: RedisCache) -> None:
    origin = Revalidating(etag=False)
    async with origin.client(cache) as client:
        first = await client.get("/nc")
        second = await client.get("/nc")
    assert detail(first) == "no-cache-no-validator"
    assert origin.seen == [None, None] and second.content == b"body 2"
