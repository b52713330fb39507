"""Property-based tests (hypothesis) for the parsers, the key and the codec, and a middleware
that never raises whatever bytes a client sends.

Every test bounds ``max_examples`` so that the file runs in a few seconds; the middleware run
against a real Redis is the smallest.
"""

from __future__ import annotations

import math
import re
from typing import Any
from urllib.parse import quote, unquote_to_bytes

import fakeredis
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from starlette.requests import Request as StarletteRequest

from redis_cache_middleware import CacheMiddleware, RedisCache
from redis_cache_middleware._types import Message, Receive, Scope, Send
from redis_cache_middleware.entry import (
    NEVER_STORED,
    REDACTED_HEADERS,
    CachedEntry,
    VaryMarker,
    decode,
    encode,
)
from redis_cache_middleware.keys import normalise_query
from redis_cache_middleware.policy import (
    MAX_DELTA_SECONDS,
    CacheControl,
    has_matching_etag,
    parse_cache_control,
    parse_entity_tags,
    parse_vary,
)

from .helpers import asgi_call

FAST = settings(max_examples=200, deadline=None)

# -- Cache-Control --------------------------------------------------------------------------

DELTAS = {
    "max-age": "max_age",
    "s-maxage": "s_maxage",
    "min-fresh": "min_fresh",
    "max-stale": "max_stale",
    "stale-while-revalidate": "stale_while_revalidate",
    "stale-if-error": "stale_if_error",
}
FLAGS = {
    "no-store": "no_store",
    "no-cache": "no_cache",
    "private": "private",
    "public": "public",
    "must-revalidate": "must_revalidate",
    "proxy-revalidate": "proxy_revalidate",
    "only-if-cached": "only_if_cached",
}


def _random_case(draw: st.DrawFn, text: str) -> str:
    flips: list[bool] = draw(st.lists(st.booleans(), min_size=len(text), max_size=len(text)))
    return "".join(c.upper() if f else c for c, f in zip(text, flips, strict=True))


@st.composite
def cache_control_model(draw: st.DrawFn) -> tuple[list[bytes], dict[str, Any]]:
    """Draw directives (each at most once), render them in any legal spelling, split over
    one or more field lines; return the lines and the fields the parser must produce."""
    flags = draw(st.lists(st.sampled_from(sorted(FLAGS)), unique=True))
    deltas = draw(
        st.dictionaries(
            st.sampled_from(sorted(DELTAS)), st.integers(0, 2 * MAX_DELTA_SECONDS), max_size=4
        )
    )
    unknown = draw(
        st.lists(st.from_regex(r"\Ax-[a-z]{1,8}(=[a-z0-9]{0,5})?\Z", fullmatch=True), max_size=2)
    )
    parts: list[str] = []
    for name in flags:
        parts.append(_random_case(draw, name))
    for name, seconds in deltas.items():
        value = str(seconds)
        if draw(st.booleans()):
            value = f'"{value}"'  # quoted-string form (RFC 9111 5.2 allows it on receipt)
        space = draw(st.sampled_from(["", " ", "\t"]))
        parts.append(f"{_random_case(draw, name)}={space}{value}")
    parts += unknown
    parts = draw(st.permutations(parts))
    lines: list[str] = []
    for part in parts:
        separator = draw(st.sampled_from([",", ", ", " ,\t", ",,"]))
        same_line: bool = draw(st.booleans())
        if lines and same_line:
            lines[-1] += separator + part
        else:
            lines.append(part)
    expected: dict[str, Any] = {FLAGS[f]: True for f in flags}
    expected.update({DELTAS[n]: min(s, MAX_DELTA_SECONDS) for n, s in deltas.items()})
    return [line.encode() for line in lines], expected


@FAST
@given(cache_control_model())
def test_cache_control_parses_any_legal_spelling(model: tuple[list[bytes], dict[str, Any]]) -> None:
    lines, expected = model
    assert parse_cache_control(lines) == CacheControl(**expected)


@FAST
@given(st.lists(st.binary(max_size=60), max_size=4))
def test_cache_control_never_raises_and_stays_in_range(lines: list[bytes]) -> None:
    cc = parse_cache_control(lines)
    for attr in DELTAS.values():
        value = getattr(cc, attr)
        assert value is None or (isinstance(value, int) and 0 <= value <= MAX_DELTA_SECONDS)


@FAST
@given(st.sampled_from(sorted(DELTAS)), st.text(max_size=8))
def test_cache_control_junk_delta_reads_as_zero(name: str, junk: str) -> None:
    # A present but unparseable delta is the safe reading, 0 (stale); never a big number.
    assume(not (junk.strip().isascii() and junk.strip().isdigit()))
    assume("," not in junk and '"' not in junk)
    cc = parse_cache_control([f"{name}={junk}".encode()])
    assert getattr(cc, DELTAS[name]) == 0


@FAST
@given(st.sampled_from(sorted(DELTAS)), st.integers(0, 10**6), st.integers(0, 10**6))
def test_cache_control_conflicting_repeat_reads_as_zero(name: str, a: int, b: int) -> None:
    cc = parse_cache_control([f"{name}={a}".encode(), f"{name}={b}".encode()])
    assert getattr(cc, DELTAS[name]) == (a if a == b else 0)


# -- Vary ----------------------------------------------------------------------------------

TOKEN = st.from_regex(r"\A[!#$%&'+\-.^_`|~0-9A-Za-z]{1,12}\Z", fullmatch=True)


@FAST
@given(st.lists(TOKEN, min_size=1, max_size=6), st.data())
def test_vary_is_order_case_and_split_insensitive(names: list[str], data: st.DataObject) -> None:
    expected = tuple(sorted({n.lower() for n in names}))
    shuffled = data.draw(st.permutations(names))
    spelled = [data.draw(st.sampled_from([n, n.upper(), n.lower()])) for n in shuffled]
    cut = data.draw(st.integers(0, len(spelled)))
    lines = [", ".join(spelled[:cut]), " ,".join(spelled[cut:]) + " ,"]
    assert parse_vary(line.encode() for line in lines) == expected
    assert parse_vary([", ".join(names).encode()]) == expected


@FAST
@given(st.lists(TOKEN, max_size=4), st.lists(TOKEN, max_size=4))
def test_vary_star_anywhere_is_none(before: list[str], after: list[str]) -> None:
    assert parse_vary([", ".join([*before, " * ", *after]).encode()]) is None


# -- entity-tags -----------------------------------------------------------------------------

#: RFC 9110 8.8.3: etagc = %x21 / %x23-7E / obs-text (commas, slashes and stars included).
ETAGC = st.sampled_from([bytes([c]) for c in (0x21, *range(0x23, 0x7F), 0x80, 0xFF)])
OPAQUE = st.lists(ETAGC, max_size=8).map(lambda chars: b'"' + b"".join(chars) + b'"')


@FAST
@given(st.lists(st.tuples(st.booleans(), OPAQUE), min_size=1, max_size=5), st.data())
def test_entity_tag_lists_parse_back_to_their_tags(
    tags: list[tuple[bool, bytes]], data: st.DataObject
) -> None:
    spelled = [(b"W/" if weak else b"") + opaque for weak, opaque in tags]
    separators = [data.draw(st.sampled_from([b",", b", ", b" ,", b" , ", b",,"])) for _ in tags]
    line = b"".join(tag + sep for tag, sep in zip(spelled, separators, strict=True))
    assert parse_entity_tags([line]) == (False, [opaque for _, opaque in tags])
    for weak, opaque in tags:
        # Weak comparison: either side may be weak.
        assert has_matching_etag([line], (b"W/" if not weak else b"") + opaque)


@FAST
@given(st.lists(st.binary(max_size=40), max_size=4), st.one_of(st.none(), st.binary(max_size=20)))
def test_entity_tags_never_raise(lines: list[bytes], etag: bytes | None) -> None:
    star, tags = parse_entity_tags(lines)
    assert all(tag and tag == tag.strip() for tag in tags)
    assert has_matching_etag(lines, etag) in (True, False)
    if star:  # a bare "*" member; one inside a quoted tag is part of that tag
        assert any(part.strip() == b"*" for line in lines for part in line.split(b","))


@FAST
@given(st.lists(st.binary(max_size=40), max_size=4))
def test_vary_never_raises_and_is_canonical(lines: list[bytes]) -> None:
    names = parse_vary(lines)
    if names is None:
        assert any(part.strip() == b"*" for line in lines for part in line.split(b","))
        return
    assert list(names) == sorted(set(names))
    for name in names:
        assert name and name == name.strip(" \t") and name == name.lower() and "," not in name
        name.encode("latin-1")  # the middleware looks request headers up by these bytes


# -- query normalisation and the URL key ---------------------------------------------------

NAME = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=6)
VALUE = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=6)


def _encode_part(data: st.DataObject, text: str) -> str:
    """Percent-encode text the way some client might: every way decodes to the same text."""
    raw = text.encode("utf-8")
    out = []
    for byte in raw:
        char = chr(byte)
        must = not (char.isascii() and (char.isalnum() or char in "-._~"))
        if byte == 0x20 and data.draw(st.booleans()):
            out.append("+")
        elif must or data.draw(st.booleans()):
            hex_ = f"%{byte:02X}"
            out.append(hex_.lower() if data.draw(st.booleans()) else hex_)
        else:
            out.append(char)
    return "".join(out)


def _render(data: st.DataObject, pairs: list[tuple[str, str]]) -> bytes:
    parts = []
    for name, value in pairs:
        parts.append(f"{_encode_part(data, name)}={_encode_part(data, value)}")
        if value == "" and data.draw(st.booleans()):
            parts[-1] = parts[-1][:-1]  # "a" and "a=" are the same blank value
    return "&".join(parts).encode("ascii")


def _reorder(data: st.DataObject, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Shuffle the parameters while repeated names keep their relative order."""
    by_name: dict[str, list[tuple[str, str]]] = {}
    for pair in pairs:
        by_name.setdefault(pair[0], []).append(pair)
    order = data.draw(st.permutations([p[0] for p in pairs]))
    return [by_name[name].pop(0) for name in order]


def _url_hash(cache: RedisCache, host: bytes, path: str, query: bytes) -> str:
    return cache.url_hash("http", host, path, query)


KEYS = RedisCache(fakeredis.FakeAsyncRedis(), namespace="props")


def _seen_by_app(query: bytes) -> tuple[str, list[tuple[str, str]], bytes]:
    """Return what a Starlette app can read of a request's query: ``str(request.url)``,
    ``request.query_params`` and ``scope["query_string"]``."""
    scope = {
        "type": "http",
        "method": "GET",
        "scheme": "http",
        "path": "/p",
        "query_string": query,
        "headers": [(b"host", b"h")],
    }
    request = StarletteRequest(scope)
    return str(request.url), request.query_params.multi_items(), scope["query_string"]


IGNORING = RedisCache(fakeredis.FakeAsyncRedis(), namespace="props-ignoring")
IGNORING.ignore_query_params(["utm_*", "f?"])


@FAST
@given(st.lists(st.tuples(NAME, VALUE), max_size=6), st.data())
def test_equal_keys_only_for_queries_the_app_cannot_tell_apart(
    pairs: list[tuple[str, str]], data: st.DataObject
) -> None:
    # Two renderings of the same parameters (escaped or not, "+" or "%20", reordered): they
    # share a key only if the app reads them the same in every way Starlette offers.
    first = _render(data, pairs)
    second = _render(data, _reorder(data, pairs) if data.draw(st.booleans()) else pairs)
    same_key = _url_hash(KEYS, b"h", "/p", first) == _url_hash(KEYS, b"h", "/p", second)
    assert same_key == (_seen_by_app(first) == _seen_by_app(second))


@FAST
@given(st.lists(st.tuples(NAME, VALUE), max_size=6), st.data())
def test_equal_keys_with_ignored_parameters_only_for_what_the_app_sees_alike(
    pairs: list[tuple[str, str]], data: st.DataObject
) -> None:
    # With ignore_query_params the app is handed the query less the ignored parameters
    # (IGNORING.app_query): requests sharing a key still look the same to the app.
    tracked = [(f"utm_{n}", v) if data.draw(st.booleans()) else (n, v) for n, v in pairs]
    first = _render(data, tracked)
    second = _render(data, pairs if data.draw(st.booleans()) else tracked)
    same_key = _url_hash(IGNORING, b"h", "/p", first) == _url_hash(IGNORING, b"h", "/p", second)
    if same_key:
        assert _seen_by_app(IGNORING.app_query(first)) == _seen_by_app(IGNORING.app_query(second))


@FAST
@given(st.lists(st.tuples(NAME, VALUE), min_size=1, max_size=6), st.data())
def test_different_queries_get_different_keys(
    pairs: list[tuple[str, str]], data: st.DataObject
) -> None:
    index = data.draw(st.integers(0, len(pairs) - 1))
    name, value = pairs[index]
    change = data.draw(st.sampled_from(["value", "name", "drop", "add", "swap-repeats"]))
    other = list(pairs)
    if change == "value":
        new = data.draw(VALUE.filter(lambda v: v != value))
        other[index] = (name, new)
    elif change == "name":
        new = data.draw(NAME.filter(lambda n: n != name))
        other[index] = (new, value)
    elif change == "drop":
        del other[index]
    elif change == "add":
        other.insert(index, data.draw(st.tuples(NAME, VALUE)))
    else:
        repeats = [i for i, p in enumerate(pairs) if p[0] == name and p[1] != value]
        assume(repeats)
        j = repeats[0]
        other[index], other[j] = other[j], other[index]
    seen = sorted(pairs, key=lambda p: p[0])
    seen_other = sorted(other, key=lambda p: p[0])
    assume(seen != seen_other)  # e.g. a rename that only reorders two distinct names
    assert _url_hash(KEYS, b"h", "/p", _render(data, pairs)) != _url_hash(
        KEYS, b"h", "/p", _render(data, other)
    )


@FAST
@given(st.binary(max_size=80))
def test_normalise_query_never_raises_and_keeps_the_raw_bytes(query: bytes) -> None:
    assert normalise_query(query) == query
    ignored = normalise_query(query, IGNORING._url_keys._query_filter)
    assert len(ignored) <= len(query)


HOST = st.from_regex(r"\A[a-z0-9][a-z0-9.-]{0,20}\Z", fullmatch=True)


@FAST
@given(HOST, HOST, st.data())
def test_host_case_and_default_port_share_a_key_other_hosts_do_not(
    host: str, other: str, data: st.DataObject
) -> None:
    spelled = "".join(data.draw(st.sampled_from([c, c.upper()])) for c in host)
    if data.draw(st.booleans()):
        spelled += ":80"
    assert _url_hash(KEYS, host.encode(), "/", b"") == _url_hash(KEYS, spelled.encode(), "/", b"")
    if other != host:
        assert _url_hash(KEYS, host.encode(), "/", b"") != _url_hash(KEYS, other.encode(), "/", b"")
    # The default port of another scheme is a different origin.
    assert KEYS.url_hash("https", host.encode(), "/", b"") != KEYS.url_hash(
        "https", f"{host}:80".encode(), "/", b""
    )


@FAST
@given(st.text(max_size=30), st.text(max_size=30), st.binary(max_size=30))
def test_path_and_query_never_confused(path: str, extra: str, query: bytes) -> None:
    # "/a?b" as a path (an encoded "?") is not "/a" with query "b".
    assume(extra)
    merged = _url_hash(KEYS, b"h", path + "?" + extra, query)
    assert merged != _url_hash(KEYS, b"h", path, extra.encode("utf-8", "surrogatepass") + query)


# -- the entry codec -----------------------------------------------------------------------

FINITE = st.floats(min_value=0, max_value=1e12, allow_nan=False, allow_infinity=False)
#: Header lines as the middleware stores them: a lowercase token and a value without control
#: characters but HTAB; decode refuses any other (``tests/test_entry.py``).
CONTROL_BYTES = rb"[\x00-\x08\x0a-\x1f\x7f]"
HEADER = st.tuples(
    st.from_regex(rb"\A[a-z0-9!#$%&'*+.^_`|~-]{1,20}\Z", fullmatch=True).filter(
        lambda n: n not in NEVER_STORED
    ),
    st.binary(max_size=40).map(lambda v: re.sub(CONTROL_BYTES, b"", v)),
)
TAG = st.text(st.characters(exclude_categories=["Cs"]), max_size=20)
VARY_NAME = st.from_regex(r"\A[a-z][a-z0-9-]{0,10}\Z", fullmatch=True).filter(
    lambda n: n not in REDACTED_HEADERS
)


@st.composite
def entries(draw: st.DrawFn) -> CachedEntry:
    body = draw(st.binary(max_size=200))
    headers = draw(
        st.lists(HEADER.filter(lambda h: h[0] != b"content-length"), max_size=8).map(list)
    )
    if draw(st.booleans()):
        position = draw(st.integers(0, len(headers)))
        headers.insert(position, (b"content-length", str(len(body)).encode()))
    return CachedEntry(
        status=draw(st.integers(200, 599)),
        headers=headers,
        body=body,
        stored_at=draw(st.floats(min_value=-1e12, max_value=1e12, allow_nan=False)),
        fresh_for=draw(FINITE),
        stale_for=draw(FINITE),
        initial_age=draw(FINITE),
        stale_while_revalidate=draw(FINITE),
        stale_if_error=draw(FINITE),
        shared_with_auth=draw(st.booleans()),
        tags=tuple(draw(st.lists(TAG, max_size=5))),
        request_vary=tuple(
            draw(st.lists(st.tuples(VARY_NAME, st.none() | st.binary(max_size=20)), max_size=3))
        ),
    )


@FAST
@given(entries())
def test_entry_codec_round_trips(entry: CachedEntry) -> None:
    fields = encode(entry)
    assert all(isinstance(k, bytes) and isinstance(v, bytes) for k, v in fields.items())
    assert decode(fields) == entry


@FAST
@given(entries(), st.binary(max_size=12))
def test_entry_with_any_content_length_is_itself_or_a_miss(entry: CachedEntry, cl: bytes) -> None:
    headers = [(n, v) for n, v in entry.headers if n != b"content-length"]
    changed = CachedEntry(**{**_as_dict(entry), "headers": [(b"content-length", cl), *headers]})
    decoded = decode(encode(changed))
    if cl.strip() == str(len(entry.body)).encode() and not re.search(CONTROL_BYTES, cl):
        assert decoded == changed
    else:
        assert decoded is None


def _as_dict(entry: CachedEntry) -> dict[str, Any]:
    return {name: getattr(entry, name) for name in CachedEntry.__slots__}


@FAST
@given(
    entries(),
    st.dictionaries(st.binary(max_size=10), st.binary(max_size=40), max_size=4),
)
def test_decode_never_raises_on_tampered_fields(
    entry: CachedEntry, tamper: dict[bytes, bytes]
) -> None:
    fields = {**encode(entry), **tamper}
    result = decode(fields)
    assert result is None or isinstance(result, CachedEntry | VaryMarker)
    if not tamper:
        assert result == entry
    if isinstance(result, CachedEntry):
        assert 200 <= result.status <= 599
        assert all(
            math.isfinite(x) and x >= 0
            for x in (result.fresh_for, result.stale_for, result.initial_age)
        )


# -- the middleware never raises on what a client sends ------------------------------------

#: What an ASGI server may put in a scope: header names are lowercase tokens (servers refuse
#: others), values any bytes but CR, LF and NUL; paths are percent-decoded UTF-8 (undecodable
#: bytes become U+FFFD), query strings raw bytes.
HEADER_NAMES = st.sampled_from(
    [
        b"host",
        b"cache-control",
        b"pragma",
        b"authorization",
        b"if-none-match",
        b"if-modified-since",
        b"accept",
        b"accept-language",
        b"x-tenant",
        b"cookie",
        b"x-forwarded-host",
    ]
) | st.from_regex(rb"\A[a-z0-9!#$%&'*+.^_`|~-]{1,16}\Z", fullmatch=True)
HEADER_VALUES = st.binary(max_size=60).map(lambda v: re.sub(rb"[\r\n\x00]", b"", v)) | (
    st.sampled_from(
        [
            b"no-cache",
            b"no-store",
            b"max-age=0",
            b"max-age=abc",
            b"min-fresh=99999999999999999999",
            b"only-if-cached",
            b"*",
            b'"x", W/"y"',
            b"Thu, 01 Jan 1970 00:00:00 GMT",
            b"",
        ]
    )
)
#: Paths as a server decodes them; surrogateescape also gives the lone surrogates a raw ASGI
#: scope can carry (no conforming server sends them, the middleware copes anyway).
PATHS = st.binary(max_size=60).map(
    lambda raw: "/" + unquote_to_bytes(raw).decode("utf-8", "surrogateescape")
)
#: Response headers the app sends: anything a client cannot control in a normal app, but the
#: middleware must cope with whatever it is given.
RESPONSE_HEADERS = st.lists(
    st.tuples(
        st.sampled_from(
            [
                b"cache-control",
                b"vary",
                b"expires",
                b"date",
                b"age",
                b"etag",
                b"last-modified",
                b"surrogate-key",
                b"cache-tag",
                b"x-any",
            ]
        ),
        HEADER_VALUES,
    ),
    max_size=5,
)

ALWAYS_BODY = b"always 200"


def always_200(response_headers: list[tuple[bytes, bytes]]) -> Any:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        headers = [
            (b"content-type", b"text/plain"),
            (b"content-length", str(len(ALWAYS_BODY)).encode()),
            *response_headers,
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        body = b"" if scope["method"] == "HEAD" else ALWAYS_BODY  # as servers do for HEAD
        await send({"type": "http.response.body", "body": body})

    return app


async def call(app: Any, scope: Scope) -> list[Message]:
    return await asgi_call(app, scope)


def check_response(sent: list[Message], scope: Scope) -> None:
    """One well-formed response: 200 (the app's), 304 (a matching validator) or the 504 a
    request with only-if-cached may get; the app's body unless HEAD or 304."""
    assert sent and sent[0]["type"] == "http.response.start"
    start = sent[0]
    status = start["status"]
    headers = start["headers"]
    assert all(isinstance(n, bytes) and isinstance(v, bytes) for n, v in headers)
    body = b"".join(m.get("body", b"") for m in sent[1:])
    assert all(m["type"] == "http.response.body" for m in sent[1:])
    assert not sent[-1].get("more_body", False)
    cache_status = [v for n, v in headers if n == b"cache-status"]
    if status == 504:
        assert cache_status and cache_status[-1].endswith(b"detail=only-if-cached")
        assert any(
            b"only-if-cached" in v.lower() for n, v in scope["headers"] if n == b"cache-control"
        )
        return
    assert status in (200, 304)
    expected = b"" if status == 304 or scope["method"] == "HEAD" else ALWAYS_BODY
    assert body == expected


def make_scope(
    method: str, path: str, query: bytes, headers: list[tuple[bytes, bytes]], scheme: str
) -> Scope:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": scheme,
        "path": path,
        "raw_path": quote(path, errors="surrogateescape").encode(),
        "query_string": query,
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1234),
        "server": ("testserver", 80),
    }


REQUEST = st.tuples(
    st.sampled_from(["GET", "GET", "HEAD"]),
    PATHS,
    st.binary(max_size=60),
    st.lists(st.tuples(HEADER_NAMES, HEADER_VALUES), max_size=8),
    st.sampled_from(["http", "https"]),
    RESPONSE_HEADERS,
)


async def never_raises(cache: RedisCache, request: tuple[Any, ...]) -> None:
    method, path, query, headers, scheme, response_headers = request
    middleware = CacheMiddleware(
        always_200(response_headers),
        cache=cache,
        default_ttl=60,
        vary_on=["X-Tenant"],
        ignore_query_params=["utm_*"],
        timeout=1.0,
    )
    scope = make_scope(method, path, query, headers, scheme)
    # Twice: the first may store, the second may be answered from what was stored.
    for _ in range(2):
        check_response(await call(middleware, dict(scope)), scope)


@pytest.fixture
def fake_cache() -> RedisCache:
    return RedisCache(fakeredis.FakeAsyncRedis(), namespace="props-mw")


@pytest.mark.anyio
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(request=REQUEST)
async def test_middleware_never_raises_fakeredis(
    fake_cache: RedisCache, request: tuple[Any, ...]
) -> None:
    await never_raises(fake_cache, request)
    assert fake_cache.stats.redis_error == 0


@pytest.mark.anyio
@pytest.mark.parametrize("backend", ["redis"])
@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(request=REQUEST)
async def test_middleware_never_raises_real_redis(
    cache: RedisCache, backend: str, request: tuple[Any, ...]
) -> None:
    await never_raises(cache, request)
    assert cache.stats.redis_error == 0
