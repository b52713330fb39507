"""RFC 9111 / RFC 9110 conformance, rule by rule: a table test of each pure decision and a
middleware test of what is stored, served and invalidated, on every backend (the ``cache``
fixture: fakeredis, a real Redis, a local cluster). Each section names its rules.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from redis_cache_middleware import CacheMiddleware, RedisCache, keys
from redis_cache_middleware.entry import CachedEntry, decode, encode
from redis_cache_middleware.invalidate import invalidates
from redis_cache_middleware.storing import connection_options, end_to_end
from redis_cache_middleware.vary_values import FIELDS, normalise

from .helpers import TEST_TIMEOUT, Origin, Spec, make_client

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
