"""Tables for ``policy``: header parsing, freshness, the store decision and usability.

Every case is a bare set of headers and a fixed clock; no server, no Redis.
"""

from __future__ import annotations

import itertools
from collections.abc import Collection
from email.utils import formatdate

import pytest

from redis_cache_middleware.entry import CachedEntry
from redis_cache_middleware.policy import (
    HEURISTIC_STATUSES,
    MAX_DELTA_SECONDS,
    NO_DIRECTIVES,
    CacheControl,
    RequestDirectives,
    StoreDecision,
    check_usable,
    decide_store,
    get_freshness_lifetime,
    get_not_modified_headers,
    has_matching_etag,
    is_error_status,
    is_not_modified,
    marks_hit_for_pass,
    merge_not_modified,
    parse_cache_control,
    parse_entity_tags,
    parse_http_date,
    parse_request,
    parse_vary,
    private_request_refusal,
    supersedes_stored,
)

RawHeaders = list[tuple[bytes, bytes]]

#: The clock every case runs at.
NOW = 1_700_000_000.0

#: RFC 9110 5.6.7's example date, and its POSIX time.
EXAMPLE_DATE = 784111777.0


def http_date(timestamp: float) -> bytes:
    """Return the IMF-fixdate of a POSIX time."""
    return formatdate(timestamp, usegmt=True).encode()


def decide(
    headers: RawHeaders,
    *,
    status: int = 200,
    default_ttl: float | None = None,
    cacheable_statuses: Collection[int] = HEURISTIC_STATUSES,
    cache_set_cookie: bool = False,
    request_has_authorization: bool = False,
    stale_while_revalidate: float = 0.0,
    stale_if_error: float = 0.0,
) -> StoreDecision:
    """Return ``decide_store`` at ``NOW`` with the defaults the middleware uses."""
    return decide_store(
        status,
        headers,
        now=NOW,
        default_ttl=default_ttl,
        cacheable_statuses=cacheable_statuses,
        cache_set_cookie=cache_set_cookie,
        request_has_authorization=request_has_authorization,
        stale_while_revalidate=stale_while_revalidate,
        stale_if_error=stale_if_error,
    )


def cc(value: bytes) -> tuple[bytes, bytes]:
    """Return a ``Cache-Control`` header."""
    return (b"cache-control", value)


# -- parse_cache_control ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        pytest.param([], CacheControl(), id="no-header"),
        pytest.param([b""], CacheControl(), id="empty-value"),
        pytest.param([b"no-store"], CacheControl(no_store=True), id="no-store"),
        pytest.param([b"no-cache"], CacheControl(no_cache=True), id="no-cache"),
        pytest.param([b"private"], CacheControl(private=True), id="private"),
        pytest.param([b"public"], CacheControl(public=True), id="public"),
        pytest.param(
            [b"must-revalidate"],
            CacheControl(must_revalidate=True),
            id="must-revalidate",
        ),
        pytest.param(
            [b"proxy-revalidate"],
            CacheControl(proxy_revalidate=True),
            id="proxy-revalidate",
        ),
        pytest.param([b"only-if-cached"], CacheControl(only_if_cached=True), id="only-if-cached"),
        pytest.param([b"max-age=60"], CacheControl(max_age=60), id="max-age"),
        pytest.param([b"s-maxage=60"], CacheControl(s_maxage=60), id="s-maxage"),
        pytest.param([b"min-fresh=5"], CacheControl(min_fresh=5), id="min-fresh"),
        pytest.param([b"max-stale=7"], CacheControl(max_stale=7), id="max-stale"),
        pytest.param(
            [b"max-stale"],
            CacheControl(max_stale=MAX_DELTA_SECONDS),
            id="max-stale-without-value-is-any",
        ),
        pytest.param(
            [b"stale-while-revalidate=30"],
            CacheControl(stale_while_revalidate=30),
            id="stale-while-revalidate",
        ),
        pytest.param(
            [b"stale-if-error=90"],
            CacheControl(stale_if_error=90),
            id="stale-if-error",
        ),
        pytest.param(
            [b"public, max-age=60, s-maxage=120, must-revalidate"],
            CacheControl(public=True, max_age=60, s_maxage=120, must_revalidate=True),
            id="several",
        ),
        pytest.param(
            [b"NO-STORE, Max-Age=60, PuBlIc"],
            CacheControl(no_store=True, max_age=60, public=True),
            id="case-insensitive-names",
        ),
        pytest.param(
            [b"  max-age = 60 ,\tprivate\t,, ,no-cache  "],
            CacheControl(max_age=60, private=True, no_cache=True),
            id="whitespace-and-empty-items",
        ),
        pytest.param(
            [b'no-cache="set-cookie, x", max-age=60'],
            CacheControl(no_cache=True, max_age=60),
            id="quoted-string-with-comma",
        ),
        pytest.param(
            [b'private="max-age=5, no-store", public'],
            CacheControl(private=True, public=True),
            id="directives-inside-quotes-ignored",
        ),
        pytest.param(
            [b'no-cache="a\\"b, c", max-age=9'],
            CacheControl(no_cache=True, max_age=9),
            id="escaped-quote-inside-quotes",
        ),
        pytest.param([b'max-age="60"'], CacheControl(max_age=60), id="quoted-delta"),
        pytest.param(
            [b'no-cache="set-cookie, max-age=5'],
            CacheControl(no_cache=True),
            id="unterminated-quote-swallows-rest",
        ),
        pytest.param([b"max-age=abc"], CacheControl(max_age=0), id="delta-junk"),
        pytest.param([b"max-age=-1"], CacheControl(max_age=0), id="delta-negative"),
        pytest.param([b"max-age=1.5"], CacheControl(max_age=0), id="delta-fraction"),
        pytest.param([b"max-age=+5"], CacheControl(max_age=0), id="delta-plus-sign"),
        pytest.param([b"max-age=0x10"], CacheControl(max_age=0), id="delta-hex"),
        pytest.param([b"max-age="], CacheControl(max_age=0), id="delta-empty-value"),
        pytest.param([b"max-age"], CacheControl(max_age=0), id="delta-no-value"),
        pytest.param([b"s-maxage=60s"], CacheControl(s_maxage=0), id="delta-unit"),
        pytest.param([b"max-age=\xb2"], CacheControl(max_age=0), id="delta-superscript-digit"),
        pytest.param(
            [b"max-age=99999999999999999999999"],
            CacheControl(max_age=MAX_DELTA_SECONDS),
            id="delta-huge-clamped",
        ),
        pytest.param(
            [b"max-age=2147483647"],
            CacheControl(max_age=2147483647),
            id="delta-just-below-clamp",
        ),
        pytest.param([b"max-age=0060"], CacheControl(max_age=60), id="delta-leading-zeros"),
        pytest.param(
            [b"max-age=60, max-age=60"],
            CacheControl(max_age=60),
            id="duplicate-agreeing",
        ),
        pytest.param(
            [b"max-age=60, max-age=120"],
            CacheControl(max_age=0),
            id="duplicate-conflicting",
        ),
        pytest.param(
            [b"max-age=60", b"max-age=120"],
            CacheControl(max_age=0),
            id="duplicate-conflicting-across-lines",
        ),
        pytest.param(
            [b"max-age=60, max-age=120, max-age=120"],
            CacheControl(max_age=0),
            id="conflict-not-undone-by-later-agreement",
        ),
        pytest.param(
            [b"s-maxage=5, s-maxage=abc"],
            CacheControl(s_maxage=0),
            id="duplicate-with-junk",
        ),
        pytest.param(
            [b"public", b"max-age=60"],
            CacheControl(public=True, max_age=60),
            id="several-field-lines",
        ),
        pytest.param(
            [b'immutable, foo=bar, x-custom, community="UCI", max-age=5'],
            CacheControl(max_age=5),
            id="unknown-directives-ignored",
        ),
        pytest.param(
            [b"no-storex, xno-store, max-agex=5"],
            CacheControl(),
            id="near-miss-names-ignored",
        ),
        pytest.param(
            [b"\xff\xfe=\x80, m\xe4x-age=5, private"],
            CacheControl(private=True),
            id="non-ascii-bytes",
        ),
        pytest.param([b",,,"], CacheControl(), id="only-commas"),
        pytest.param([b"=5, ="], CacheControl(), id="no-names"),
    ],
)
def test_parse_cache_control(values: list[bytes], expected: CacheControl) -> None:
    assert parse_cache_control(values) == expected


@pytest.mark.parametrize(
    "value",
    [
        bytes(range(256)),
        b'"' * 7,
        b"=" * 5 + b'"',
        b'no-cache="\\',
        b"max-age=\x00\x01",
        "max-age=٣".encode(),
        b"\\\\\\",
    ],
    ids=["all-bytes", "quotes", "equals-quote", "trailing-backslash", "nul", "utf8", "bs"],
)
def test_parse_cache_control_junk_never_raises(value: bytes) -> None:
    result = parse_cache_control([value])
    assert isinstance(result, CacheControl)
    assert result.max_age in (None, 0)


# -- parse_vary ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        pytest.param([], (), id="no-header"),
        pytest.param([b""], (), id="empty-value"),
        pytest.param([b"Accept"], ("accept",), id="one"),
        pytest.param(
            [b"Accept-Encoding, Accept"],
            ("accept", "accept-encoding"),
            id="sorted",
        ),
        pytest.param([b"ACCEPT, accept, Accept"], ("accept",), id="case-and-duplicates"),
        pytest.param([b" , Accept,, ,"], ("accept",), id="empty-items"),
        pytest.param(
            [b"Accept", b"Cookie", b"accept"],
            ("accept", "cookie"),
            id="several-field-lines",
        ),
        pytest.param([b"*"], None, id="star"),
        pytest.param([b"Accept, *"], None, id="star-among-names"),
        pytest.param([b" * "], None, id="star-with-spaces"),
        pytest.param([b"Accept", b"*"], None, id="star-on-second-line"),
    ],
)
def test_parse_vary(values: list[bytes], expected: tuple[str, ...] | None) -> None:
    assert parse_vary(values) == expected


# -- parse_http_date ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(b"Sun, 06 Nov 1994 08:49:37 GMT", EXAMPLE_DATE, id="imf-fixdate"),
        pytest.param(b"Sunday, 06-Nov-94 08:49:37 GMT", EXAMPLE_DATE, id="rfc850"),
        pytest.param(b"Sun Nov  6 08:49:37 1994", EXAMPLE_DATE, id="asctime-is-utc"),
        pytest.param(
            b"Sun Nov 16 08:49:37 1994", EXAMPLE_DATE + 864000, id="asctime-two-digit-day"
        ),
        pytest.param(http_date(NOW), NOW, id="imf-fixdate-now"),
        pytest.param(b"", None, id="empty"),
        pytest.param(b"0", None, id="zero"),
        pytest.param(b"-1", None, id="minus-one"),
        pytest.param(b"junk", None, id="junk"),
        pytest.param(b"Sun, 06 Nov 1994 25:49:37 GMT", None, id="hour-25"),
        pytest.param(b"Sun, 32 Nov 1994 08:49:37 GMT", None, id="day-32"),
        pytest.param(b"Sun, 06 Foo 1994 08:49:37 GMT", None, id="bad-month"),
        pytest.param(b"Sun, 06 Nov 99999 08:49:37 GMT", None, id="year-99999"),
        pytest.param(b"\xff\xfe\x00", None, id="binary"),
        pytest.param(b"2024-01-01T00:00:00Z", None, id="iso-8601"),
    ],
)
def test_parse_http_date(value: bytes, expected: float | None) -> None:
    assert parse_http_date(value) == expected


# -- parse_request ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cache_control", "pragma", "expected"),
    [
        pytest.param([], [], NO_DIRECTIVES, id="nothing"),
        pytest.param([], [b"no-cache"], RequestDirectives(no_cache=True), id="pragma"),
        pytest.param([], [b"NO-CACHE"], RequestDirectives(no_cache=True), id="pragma-case"),
        pytest.param([], [b"foo"], NO_DIRECTIVES, id="pragma-other"),
        pytest.param(
            [b"max-age=5"],
            [b"no-cache"],
            RequestDirectives(max_age=5),
            id="pragma-ignored-with-cache-control",
        ),
        pytest.param([b"no-store"], [], RequestDirectives(no_store=True), id="no-store"),
        pytest.param([b"no-cache"], [], RequestDirectives(no_cache=True), id="no-cache"),
        pytest.param(
            [b"only-if-cached"],
            [],
            RequestDirectives(only_if_cached=True),
            id="only-if-cached",
        ),
        pytest.param(
            [b"max-age=0, min-fresh=10"],
            [],
            RequestDirectives(max_age=0, min_fresh=10),
            id="max-age-and-min-fresh",
        ),
        pytest.param(
            [b"public, s-maxage=5, max-stale"],
            [],
            NO_DIRECTIVES,
            id="response-only-directives-dropped",
        ),
    ],
)
def test_parse_request(
    cache_control: list[bytes], pragma: list[bytes], expected: RequestDirectives
) -> None:
    assert parse_request(cache_control, pragma) == expected


# -- get_freshness_lifetime ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("cache_control", "expires", "date", "expected"),
    [
        pytest.param(b"", None, None, None, id="none"),
        pytest.param(b"public", None, http_date(NOW), None, id="date-alone"),
        pytest.param(b"max-age=20", None, None, 20.0, id="max-age"),
        pytest.param(b"max-age=0", None, None, 0.0, id="max-age-zero-is-explicit"),
        pytest.param(
            b"max-age=20, s-maxage=10",
            http_date(NOW + 500),
            http_date(NOW),
            10.0,
            id="s-maxage-over-max-age-and-expires",
        ),
        pytest.param(
            b"max-age=20",
            http_date(NOW + 500),
            http_date(NOW),
            20.0,
            id="max-age-over-expires",
        ),
        pytest.param(
            b"max-age=abc",
            http_date(NOW + 500),
            http_date(NOW),
            0.0,
            id="junk-max-age-still-over-expires",
        ),
        pytest.param(
            b"",
            http_date(NOW + 120),
            http_date(NOW - 1000),
            1120.0,
            id="expires-minus-date",
        ),
        pytest.param(b"", http_date(NOW + 50), None, 50.0, id="expires-without-date-uses-now"),
        pytest.param(
            b"",
            http_date(NOW + 50),
            b"garbage",
            50.0,
            id="expires-with-invalid-date-uses-now",
        ),
        pytest.param(b"", http_date(NOW - 50), None, 0.0, id="expires-in-past-clamped"),
        pytest.param(
            b"",
            b"Sun Nov  6 08:50:37 1994",
            b"Sunday, 06-Nov-94 08:49:37 GMT",
            60.0,
            id="expires-asctime-date-rfc850",
        ),
        pytest.param(b"", b"0", http_date(NOW), 0.0, id="expires-invalid-zero"),
        pytest.param(b"", b"junk", None, 0.0, id="expires-invalid-junk"),
        pytest.param(b"", b"", None, 0.0, id="expires-empty"),
    ],
)
def test_get_freshness_lifetime(
    cache_control: bytes,
    expires: bytes | None,
    date: bytes | None,
    expected: float | None,
) -> None:
    parsed = parse_cache_control([cache_control] if cache_control else [])
    assert get_freshness_lifetime(parsed, expires, date, NOW) == expected


# -- decide_store -------------------------------------------------------------------------

MAX_AGE_60 = cc(b"max-age=60")


@pytest.mark.parametrize(
    ("status", "headers", "cacheable", "reason"),
    [
        # Explicit freshness makes any status RFC 9110 defines storable (RFC 9111 3), so a
        # 500, 302 or 201 with max-age=60 is stored now (tests/test_conformance.py); without
        # it, only cacheable_statuses are.
        pytest.param(500, [cc(b"public")], HEURISTIC_STATUSES, "status", id="500"),
        pytest.param(302, [], HEURISTIC_STATUSES, "status", id="302"),
        pytest.param(201, [], HEURISTIC_STATUSES, "status", id="201"),
        pytest.param(200, [], {404}, "status", id="200-not-configured"),
        pytest.param(306, [MAX_AGE_60], HEURISTIC_STATUSES, "status", id="306-unused"),
        pytest.param(299, [MAX_AGE_60], HEURISTIC_STATUSES, "status", id="299-undefined"),
        pytest.param(206, [MAX_AGE_60], {200, 206}, "partial", id="206"),
        pytest.param(
            200,
            [cc(b"public, max-age=60, no-store")],
            HEURISTIC_STATUSES,
            "no-store",
            id="no-store",
        ),
        pytest.param(
            200,
            [cc(b"public, max-age=60"), cc(b"NO-STORE")],
            HEURISTIC_STATUSES,
            "no-store",
            id="no-store-on-second-line",
        ),
        pytest.param(
            200,
            [cc(b"private, max-age=60")],
            HEURISTIC_STATUSES,
            "private",
            id="private",
        ),
        pytest.param(
            200,
            [cc(b'private="set-cookie", max-age=60')],
            HEURISTIC_STATUSES,
            "private",
            id="private-qualified",
        ),
        pytest.param(
            200,
            [MAX_AGE_60, (b"set-cookie", b"session=1")],
            HEURISTIC_STATUSES,
            "set-cookie",
            id="set-cookie",
        ),
        pytest.param(
            200,
            [MAX_AGE_60, (b"vary", b"*")],
            HEURISTIC_STATUSES,
            "vary-star",
            id="vary-star",
        ),
        pytest.param(
            200,
            [MAX_AGE_60, (b"vary", b"Accept"), (b"vary", b"*")],
            HEURISTIC_STATUSES,
            "vary-star",
            id="vary-star-second-line",
        ),
        pytest.param(200, [], HEURISTIC_STATUSES, "no-ttl", id="no-ttl"),
        pytest.param(200, [cc(b"public")], HEURISTIC_STATUSES, "no-ttl", id="public-no-ttl"),
        # A no-cache response without a validator is never stored: it could only ever be
        # replaced by a full answer, never served (it used to be refused as "no-ttl").
        pytest.param(
            200,
            [cc(b"no-cache, max-age=60")],
            HEURISTIC_STATUSES,
            "no-cache-no-validator",
            id="no-cache-without-validator",
        ),
        pytest.param(
            200,
            [cc(b"no-cache"), (b"etag", b'"v1"')],
            HEURISTIC_STATUSES,
            "no-ttl",
            id="no-cache-no-ttl",
        ),
        pytest.param(
            200,
            [cc(b"no-cache, max-age=0"), (b"etag", b'"v1"')],
            HEURISTIC_STATUSES,
            "no-ttl",
            id="no-cache-max-age-zero-no-default",
        ),
        pytest.param(200, [cc(b"max-age=0")], HEURISTIC_STATUSES, "stale", id="max-age-zero"),
        pytest.param(200, [cc(b"max-age=abc")], HEURISTIC_STATUSES, "stale", id="max-age-junk"),
        pytest.param(
            200,
            [(b"expires", b"0")],
            HEURISTIC_STATUSES,
            "stale",
            id="expires-invalid",
        ),
        pytest.param(
            200,
            [(b"expires", http_date(NOW - 10)), (b"date", http_date(NOW))],
            HEURISTIC_STATUSES,
            "stale",
            id="expires-before-date",
        ),
        pytest.param(
            200,
            [MAX_AGE_60, (b"age", b"60")],
            HEURISTIC_STATUSES,
            "stale",
            id="age-equal-to-max-age",
        ),
        pytest.param(
            200,
            [MAX_AGE_60, (b"age", b"100")],
            HEURISTIC_STATUSES,
            "stale",
            id="age-over-max-age",
        ),
        pytest.param(
            200,
            [cc(b"max-age=60, s-maxage=5"), (b"age", b"10")],
            HEURISTIC_STATUSES,
            "stale",
            id="age-over-s-maxage",
        ),
    ],
)
def test_decide_store_refuses(
    status: int, headers: RawHeaders, cacheable: Collection[int], reason: str
) -> None:
    decision = decide(headers, status=status, cacheable_statuses=cacheable)
    assert decision == StoreDecision(store=False, reason=reason)
    assert decision.ttl == 0


@pytest.mark.parametrize(
    ("headers", "default_ttl", "reason"),
    [
        pytest.param([], None, "no-ttl", id="no-default"),
        pytest.param([(b"set-cookie", b"a=1")], 30.0, "set-cookie", id="set-cookie"),
        pytest.param([cc(b"max-age=0")], 30.0, "stale", id="explicit-zero-wins"),
        pytest.param([(b"expires", b"junk")], 30.0, "stale", id="invalid-expires-wins"),
    ],
)
def test_decide_store_default_ttl_does_not_rescue(
    headers: RawHeaders, default_ttl: float | None, reason: str
) -> None:
    assert decide(headers, default_ttl=default_ttl) == StoreDecision(store=False, reason=reason)


def test_decide_store_guards_checked_in_order() -> None:
    headers = [
        cc(b"no-store, private"),
        (b"set-cookie", b"a=1"),
        (b"vary", b"*"),
        (b"content-range", b"bytes 0-1/2"),
    ]
    assert decide(headers, status=500).reason == "status"
    assert decide(headers, status=206).reason == "partial"
    # A 200's Content-Range does not make it partial (RFC 9110 14.4).
    assert decide(headers).reason == "no-store"


@pytest.mark.parametrize(
    ("headers", "store", "reason", "shared"),
    [
        pytest.param([MAX_AGE_60], False, "authorization", False, id="max-age-only"),
        pytest.param([], False, "authorization", False, id="no-headers"),
        pytest.param(
            [cc(b"max-age=60, proxy-revalidate")],
            False,
            "authorization",
            False,
            id="proxy-revalidate-not-enough",
        ),
        pytest.param([cc(b"public, max-age=60")], True, "stored", True, id="public"),
        pytest.param([cc(b"s-maxage=60")], True, "stored", True, id="s-maxage"),
        pytest.param(
            [cc(b"must-revalidate, max-age=60")],
            True,
            "stored",
            True,
            id="must-revalidate",
        ),
        pytest.param(
            [cc(b"private, public, max-age=60")],
            False,
            "private",
            False,
            id="private-before-authorization",
        ),
    ],
)
def test_decide_store_authorization(
    headers: RawHeaders, store: bool, reason: str, shared: bool
) -> None:
    decision = decide(headers, request_has_authorization=True)
    assert (decision.store, decision.reason) == (store, reason)
    assert decision.shared_with_auth is shared
    if store:
        assert decision.fresh_for == 60.0


def test_decide_store_public_marks_shared_without_authorization() -> None:
    assert decide([cc(b"public, max-age=60")]).shared_with_auth is True
    assert decide([MAX_AGE_60]).shared_with_auth is False


def test_decide_store_set_cookie_allowed_when_configured() -> None:
    decision = decide([MAX_AGE_60, (b"set-cookie", b"session=1")], cache_set_cookie=True)
    assert decision == StoreDecision(store=True, reason="stored", fresh_for=60.0)


@pytest.mark.parametrize(
    ("headers", "default_ttl", "fresh_for", "stale_for", "ttl"),
    [
        pytest.param([MAX_AGE_60], None, 60.0, 0.0, 60.0, id="max-age"),
        pytest.param([MAX_AGE_60], 30.0, 60.0, 0.0, 60.0, id="max-age-over-default"),
        pytest.param([cc(b"max-age=10")], 30.0, 10.0, 0.0, 10.0, id="shorter-max-age"),
        pytest.param([], 30.0, 30.0, 0.0, 30.0, id="default-when-none-stated"),
        pytest.param([cc(b"public")], 30.0, 30.0, 0.0, 30.0, id="default-with-public"),
        pytest.param([], 0.5, 0.5, 0.0, 0.5, id="fractional-default"),
        pytest.param(
            [cc(b"max-age=10, s-maxage=100")], None, 100.0, 0.0, 100.0, id="s-maxage-wins"
        ),
        pytest.param(
            [(b"expires", http_date(NOW + 300)), (b"date", http_date(NOW))],
            30.0,
            300.0,
            0.0,
            300.0,
            id="expires-over-default",
        ),
        pytest.param(
            [(b"expires", http_date(NOW + 300))],
            None,
            300.0,
            0.0,
            300.0,
            id="expires-without-date",
        ),
        pytest.param(
            [cc(b"max-age=60, stale-while-revalidate=30")],
            None,
            60.0,
            30.0,
            90.0,
            id="stale-while-revalidate",
        ),
        pytest.param(
            [cc(b"max-age=60, stale-if-error=90")],
            None,
            60.0,
            90.0,
            150.0,
            id="stale-if-error",
        ),
        pytest.param(
            [cc(b"max-age=60, stale-while-revalidate=30, stale-if-error=10")],
            None,
            60.0,
            30.0,
            90.0,
            id="longest-stale-window",
        ),
        pytest.param(
            [cc(b"max-age=0, stale-while-revalidate=30")],
            None,
            0.0,
            30.0,
            30.0,
            id="stale-on-arrival-kept-for-window",
        ),
        pytest.param(
            [cc(b"max-age=60, stale-while-revalidate=30, must-revalidate")],
            None,
            60.0,
            0.0,
            60.0,
            id="must-revalidate-drops-stale-window",
        ),
        pytest.param(
            [cc(b"max-age=60, stale-if-error=30, proxy-revalidate")],
            None,
            60.0,
            0.0,
            60.0,
            id="proxy-revalidate-drops-stale-window",
        ),
        pytest.param(
            [cc(b"s-maxage=60, stale-while-revalidate=30")],
            None,
            60.0,
            0.0,
            60.0,
            id="s-maxage-drops-stale-window",
        ),
        pytest.param([MAX_AGE_60, (b"age", b"10")], None, 60.0, 0.0, 50.0, id="age-shortens-ttl"),
        pytest.param([MAX_AGE_60, (b"age", b" 10 ")], None, 60.0, 0.0, 50.0, id="age-whitespace"),
        pytest.param([MAX_AGE_60, (b"age", b"abc")], None, 60.0, 0.0, 60.0, id="age-junk-is-zero"),
        pytest.param(
            # RFC 9111 5.1: the first member of a list-valued Age counts (the last line
            # used to win, which could make an old response look new).
            [MAX_AGE_60, (b"age", b"10"), (b"age", b"20")],
            None,
            60.0,
            0.0,
            50.0,
            id="age-first-line-wins",
        ),
        pytest.param([MAX_AGE_60, (b"age", b"59")], None, 60.0, 0.0, 1.0, id="age-one-second-left"),
        pytest.param(
            [cc(b"max-age=60, stale-while-revalidate=30"), (b"age", b"50")],
            None,
            60.0,
            30.0,
            40.0,
            id="age-with-stale-window",
        ),
        pytest.param([], 10.0, 10.0, 0.0, 10.0, id="no-headers-with-default"),
    ],
)
def test_decide_store_stores(
    headers: RawHeaders,
    default_ttl: float | None,
    fresh_for: float,
    stale_for: float,
    ttl: float,
) -> None:
    decision = decide(headers, default_ttl=default_ttl)
    assert (decision.store, decision.reason) == (True, "stored")
    assert (decision.fresh_for, decision.stale_for, decision.ttl) == (fresh_for, stale_for, ttl)


@pytest.mark.parametrize(
    ("swr", "sie", "header", "stale_for"),
    [
        pytest.param(10.0, 0.0, b"max-age=60", 10.0, id="configured-swr"),
        pytest.param(0.0, 20.0, b"max-age=60", 20.0, id="configured-sie"),
        pytest.param(
            10.0,
            0.0,
            b"max-age=60, stale-while-revalidate=5",
            5.0,
            id="header-overrides-configured-swr",
        ),
        pytest.param(
            10.0,
            50.0,
            b"max-age=60, stale-if-error=0",
            10.0,
            id="header-zero-overrides-configured-sie",
        ),
        pytest.param(10.0, 20.0, b"max-age=60, must-revalidate", 0.0, id="must-revalidate"),
    ],
)
def test_decide_store_configured_stale_windows(
    swr: float, sie: float, header: bytes, stale_for: float
) -> None:
    decision = decide([cc(header)], stale_while_revalidate=swr, stale_if_error=sie)
    assert decision.store is True
    assert decision.stale_for == stale_for


def test_decide_store_records_initial_age() -> None:
    decision = decide([MAX_AGE_60, (b"age", b"15")])
    assert (decision.fresh_for, decision.initial_age, decision.ttl) == (60.0, 15.0, 45.0)


def test_decide_store_records_vary_names() -> None:
    decision = decide([MAX_AGE_60, (b"vary", b"Accept-Encoding, Accept"), (b"vary", b"accept")])
    assert decision.vary == ("accept", "accept-encoding")


@pytest.mark.parametrize(
    ("headers", "default_ttl", "stale_for"),
    [
        pytest.param([cc(b"no-cache, max-age=60")], None, 60.0, id="max-age"),
        pytest.param([cc(b"no-cache")], 30.0, 30.0, id="default-ttl"),
        pytest.param([cc(b'no-cache="set-cookie", max-age=60')], None, 60.0, id="qualified"),
        pytest.param(
            [cc(b"no-cache, max-age=60, stale-while-revalidate=500")],
            None,
            60.0,
            id="stale-window-replaced-by-lifetime",
        ),
    ],
)
def test_decide_store_no_cache_stored_never_fresh(
    headers: RawHeaders, default_ttl: float | None, stale_for: float
) -> None:
    # With a validator: a no-cache response without one is not stored at all.
    decision = decide([*headers, (b"etag", b'"v1"')], default_ttl=default_ttl)
    assert (decision.store, decision.reason) == (True, "no-cache")
    assert decision.fresh_for == 0.0
    assert decision.stale_for == stale_for


def test_decide_store_no_cache_with_authorization_needs_permission() -> None:
    decision = decide([cc(b"no-cache, max-age=60")], request_has_authorization=True)
    assert decision == StoreDecision(store=False, reason="authorization")


def entry_for(decision: StoreDecision) -> CachedEntry:
    """Return the entry the middleware builds from a decision, stored at ``NOW``."""
    return CachedEntry(
        status=200,
        headers=[],
        body=b"",
        stored_at=NOW,
        fresh_for=decision.fresh_for,
        stale_for=decision.stale_for,
        initial_age=decision.initial_age,
    )


@pytest.mark.parametrize(
    ("seconds_in_cache", "usable"),
    [
        pytest.param(0.0, True, id="just-stored"),
        pytest.param(45.0, True, id="55s-old-of-60"),
        pytest.param(49.9, True, id="almost-stale"),
        pytest.param(50.0, False, id="60s-old"),
    ],
)
def test_decide_store_age_counted_once(seconds_in_cache: float, usable: bool) -> None:
    # The origin reported Age: 10, so 50 s in the cache use up max-age=60.
    entry = entry_for(decide([MAX_AGE_60, (b"age", b"10")]))
    age = entry.age(NOW + seconds_in_cache)
    assert age == pytest.approx(10.0 + seconds_in_cache)
    assert check_usable(entry.fresh_for, age, NO_DIRECTIVES).usable is usable


def test_decide_store_ttl_covers_usable_time() -> None:
    decision = decide([MAX_AGE_60, (b"age", b"10")])
    entry = entry_for(decision)
    # Redis keeps the entry exactly as long as it can answer requests.
    assert check_usable(entry.fresh_for, entry.age(NOW + decision.ttl - 0.01), NO_DIRECTIVES).usable
    assert not check_usable(entry.fresh_for, entry.age(NOW + decision.ttl), NO_DIRECTIVES).usable


@pytest.mark.parametrize(
    ("age", "expected_ttl"),
    [
        pytest.param(b"50", 40.0, id="fresh-10s-plus-window"),
        pytest.param(b"60", 30.0, id="stale-now-whole-window"),
        pytest.param(b"70", 20.0, id="stale-10s-leaves-20s-of-30s-window"),
        pytest.param(b"89", 1.0, id="last-second-of-window"),
    ],
)
def test_decide_store_age_shortens_stale_window(age: bytes, expected_ttl: float) -> None:
    decision = decide([cc(b"max-age=60, stale-while-revalidate=30"), (b"age", age)])
    assert (decision.store, decision.fresh_for, decision.stale_for) == (True, 60.0, 30.0)
    assert decision.ttl == expected_ttl


@pytest.mark.parametrize("age", [b"90", b"100", b"99999999999"])
def test_decide_store_age_beyond_stale_window_is_stale(age: bytes) -> None:
    decision = decide([cc(b"max-age=60, stale-while-revalidate=30"), (b"age", age)])
    assert decision == StoreDecision(store=False, reason="stale")


DIRECTIVE_POOL = [
    b"max-age=0",
    b"max-age=60",
    b"s-maxage=30",
    b"stale-while-revalidate=30",
    b"stale-if-error=5",
    b"must-revalidate",
    b"public",
]


def test_decide_store_stored_means_positive_ttl() -> None:
    # Every combination of the pool with a range of Age headers and defaults: a response
    # that is stored must have time left in Redis, and a refusal keeps nothing.
    checked = 0
    for size in range(len(DIRECTIVE_POOL) + 1):
        for combo in itertools.combinations(DIRECTIVE_POOL, size):
            for age in [None, b"0", b"30", b"60", b"89", b"90", b"1000"]:
                for default_ttl in [None, 0.0, 10.0]:
                    headers = [cc(b", ".join(combo))] if combo else []
                    if age is not None:
                        headers.append((b"age", age))
                    decision = decide(headers, default_ttl=default_ttl)
                    assert decision.ttl > 0 if decision.store else decision.ttl == 0, (
                        combo,
                        age,
                        default_ttl,
                    )
                    checked += decision.store
    assert checked > 100


@pytest.mark.parametrize(
    ("header", "age", "default_ttl"),
    [
        pytest.param(b"no-cache, max-age=60", b"60", None, id="age-equals-max-age"),
        pytest.param(b"no-cache, max-age=60", b"100", None, id="age-over-max-age"),
        pytest.param(b"no-cache", b"30", 10.0, id="age-over-default-ttl"),
    ],
)
def test_decide_store_no_cache_stored_means_positive_ttl(
    header: bytes, age: bytes, default_ttl: float | None
) -> None:
    decision = decide([cc(header), (b"age", age)], default_ttl=default_ttl)
    assert not decision.store or decision.ttl > 0


# -- check_usable -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fresh_for", "age", "request_directives", "usable", "reason"),
    [
        pytest.param(60.0, 0.0, NO_DIRECTIVES, True, "", id="new"),
        pytest.param(60.0, 59.9, NO_DIRECTIVES, True, "", id="almost-stale"),
        pytest.param(60.0, 60.0, NO_DIRECTIVES, False, "stale", id="age-equals-fresh"),
        pytest.param(60.0, 61.0, NO_DIRECTIVES, False, "stale", id="stale"),
        pytest.param(0.0, 0.0, NO_DIRECTIVES, False, "stale", id="never-fresh"),
        pytest.param(60.0, 10.0, RequestDirectives(max_age=10), True, "", id="max-age-equal"),
        pytest.param(
            60.0,
            10.5,
            RequestDirectives(max_age=10),
            False,
            "max-age",
            id="max-age-exceeded",
        ),
        pytest.param(60.0, 0.5, RequestDirectives(max_age=0), False, "max-age", id="max-age-zero"),
        pytest.param(60.0, 50.0, RequestDirectives(min_fresh=10), True, "", id="min-fresh-equal"),
        pytest.param(
            60.0,
            50.5,
            RequestDirectives(min_fresh=10),
            False,
            "min-fresh",
            id="min-fresh-not-met",
        ),
        pytest.param(
            60.0,
            61.0,
            RequestDirectives(max_age=100, min_fresh=0),
            False,
            "stale",
            id="stale-before-request-directives",
        ),
        pytest.param(
            60.0,
            20.0,
            RequestDirectives(max_age=10, min_fresh=50),
            False,
            "max-age",
            id="max-age-before-min-fresh",
        ),
    ],
)
def test_check_usable(
    fresh_for: float,
    age: float,
    request_directives: RequestDirectives,
    usable: bool,
    reason: str,
) -> None:
    result = check_usable(fresh_for, age, request_directives)
    assert (result.usable, result.reason) == (usable, reason)


# -- hit-for-pass -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "conditional", "marks"),
    [
        pytest.param(200, False, True, id="refused-200"),
        pytest.param(403, False, True, id="403"),
        pytest.param(304, False, True, id="304-unasked"),
        pytest.param(304, True, False, id="304-to-client-validators"),
        pytest.param(500, False, False, id="500"),
        pytest.param(503, True, False, id="503"),
        pytest.param(408, False, False, id="408"),
        pytest.param(429, False, False, id="429"),
    ],
)
def test_marks_hit_for_pass(status: int, conditional: bool, marks: bool) -> None:
    refused = StoreDecision(store=False, reason="status")
    assert marks_hit_for_pass(status, refused, conditional) is marks
    assert (
        marks_hit_for_pass(status, StoreDecision(store=True, reason="stored"), conditional) is False
    )


@pytest.mark.parametrize(
    ("reason", "marks"),
    [
        pytest.param("authorization", False, id="authorization"),
        pytest.param("cookie", False, id="cookie"),
        pytest.param("credentials", False, id="credentials"),
        pytest.param("partial", False, id="partial"),
        pytest.param("set-cookie", True, id="set-cookie"),
        pytest.param("no-store", True, id="no-store"),
        pytest.param("private", True, id="private"),
    ],
)
def test_only_refusals_of_the_url_mark_hit_for_pass(reason: str, marks: bool) -> None:
    # A junk Authorization (or a cookie, a range) on a cold URL says nothing of the URL.
    assert marks_hit_for_pass(200, StoreDecision(store=False, reason=reason), False) is marks


@pytest.mark.parametrize(
    ("shared", "vary", "cookie", "credentials", "expected"),
    [
        pytest.param(False, (), False, (), None, id="anonymous"),
        pytest.param(False, (), True, (), "cookie", id="cookie"),
        pytest.param(True, (), True, (), None, id="cookie-public"),
        pytest.param(False, ("cookie",), True, (), None, id="cookie-vary"),
        pytest.param(False, ("accept",), True, (), "cookie", id="cookie-other-vary"),
        pytest.param(False, (), False, ("x-api-key",), "credentials", id="credential"),
        pytest.param(False, ("x-api-key",), False, ("x-api-key",), None, id="credential-vary"),
        pytest.param(True, (), False, ("x-api-key",), None, id="credential-public"),
        pytest.param(
            False, ("cookie",), True, ("x-api-key",), "credentials", id="cookie-vary-credential"
        ),
    ],
)
def test_private_request_refusal(
    shared: bool,
    vary: tuple[str, ...],
    cookie: bool,
    credentials: tuple[str, ...],
    expected: str | None,
) -> None:
    assert private_request_refusal(shared, vary, cookie, credentials) == expected


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param([], None, id="none"),
        pytest.param([cc(b"max-age=60")], "cookie", id="max-age"),
        pytest.param([cc(b"must-revalidate, max-age=60")], "cookie", id="must-revalidate"),
        pytest.param([cc(b"public, max-age=60")], "stored", id="public"),
        pytest.param([cc(b"s-maxage=60")], "stored", id="s-maxage"),
        pytest.param([cc(b"max-age=60"), (b"vary", b"Cookie")], "stored", id="vary-cookie"),
        pytest.param([cc(b"private, max-age=60")], "private", id="private-first"),
    ],
)
def test_decide_store_for_a_cookie_request(headers: RawHeaders, expected: str | None) -> None:
    decision = decide_store(
        200,
        headers,
        now=NOW,
        default_ttl=60,
        cacheable_statuses=HEURISTIC_STATUSES,
        request_has_cookie=True,
    )
    assert decision.reason == (expected or "cookie")


@pytest.mark.parametrize(
    ("status", "default_ttl", "error_ttl", "headers", "fresh_for"),
    [
        pytest.param(404, 60, 10, [], 10, id="404-capped"),
        pytest.param(405, 60, 10, [], 10, id="405-capped"),
        pytest.param(501, 60, 10, [], 10, id="501-capped"),
        pytest.param(200, 60, 10, [], 60, id="200-not-capped"),
        pytest.param(301, 60, 10, [], 60, id="301-not-capped"),
        pytest.param(404, 5, 10, [], 5, id="default-shorter"),
        pytest.param(404, 60, None, [], 60, id="off"),
        pytest.param(404, 60, 10, [cc(b"max-age=300")], 300, id="stated-lifetime-wins"),
    ],
)
def test_error_ttl_caps_the_default_lifetime_of_errors(
    status: int,
    default_ttl: float,
    error_ttl: float | None,
    headers: RawHeaders,
    fresh_for: float,
) -> None:
    decision = decide_store(
        status,
        headers,
        now=NOW,
        default_ttl=default_ttl,
        cacheable_statuses=HEURISTIC_STATUSES,
        error_ttl=error_ttl,
    )
    assert decision.store and decision.fresh_for == fresh_for


@pytest.mark.parametrize(
    ("status", "reason", "conditional", "supersedes"),
    [
        pytest.param(200, "no-store", False, True, id="no-store"),
        pytest.param(200, "private", False, True, id="private"),
        pytest.param(200, "vary-star", False, True, id="vary-star"),
        pytest.param(200, "no-ttl", False, True, id="no-ttl"),
        pytest.param(302, "status", False, True, id="now-a-redirect"),
        pytest.param(200, "authorization", False, False, id="authorization"),
        pytest.param(200, "set-cookie", False, False, id="set-cookie"),
        pytest.param(206, "partial", False, False, id="partial"),
        pytest.param(304, "status", True, False, id="304-to-client-validators"),
        pytest.param(503, "status", False, False, id="error-status"),
    ],
)
def test_supersedes_stored(status: int, reason: str, conditional: bool, supersedes: bool) -> None:
    refused = StoreDecision(store=False, reason=reason)
    assert supersedes_stored(status, refused, conditional) is supersedes
    stored = StoreDecision(store=True, reason="stored")
    assert supersedes_stored(status, stored, conditional) is False


def test_is_error_status() -> None:
    assert [s for s in (200, 304, 404, 408, 410, 429, 500, 501, 599) if is_error_status(s)] == [
        408,
        429,
        500,
        501,
        599,
    ]


# -- conditional requests (RFC 9110 13, RFC 9111 4.3.2) ----------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        pytest.param([b'"v1"'], (False, [b'"v1"']), id="one"),
        pytest.param([b'W/"v1"'], (False, [b'"v1"']), id="weak"),
        pytest.param([b'"a,b"'], (False, [b'"a,b"']), id="comma-inside"),
        pytest.param([b'"x", W/"a,b" ,"y"'], (False, [b'"x"', b'"a,b"', b'"y"']), id="list"),
        pytest.param([b'"x"', b'"y"'], (False, [b'"x"', b'"y"']), id="two-lines"),
        pytest.param([b'""'], (False, [b'""']), id="empty-tag"),
        pytest.param([b"*"], (True, []), id="star"),
        pytest.param([b' "a" , * '], (True, [b'"a"']), id="star-in-list"),
        pytest.param([b"abc, W/def"], (False, [b"abc", b"def"]), id="unquoted"),
        pytest.param([b'"a"junk, "b"'], (False, [b'"a"', b'"b"']), id="junk-after-quote"),
        pytest.param([b'"b", "unterminated'], (False, [b'"b"']), id="unterminated"),
        pytest.param([b"W/*"], (False, [b"*"]), id="weak-star-is-no-star"),
        pytest.param([b"", b",, ,", b"W/"], (False, []), id="nothing"),
    ],
)
def test_parse_entity_tags(values: list[bytes], expected: tuple[bool, list[bytes]]) -> None:
    assert parse_entity_tags(values) == expected


@pytest.mark.parametrize(
    "value",
    [b'"', b'W/"', b"W", b'\x00"\xff', b'"a""b"', b',"', b'W/W/"a"', b"\xe9\xe9", b'\\"a\\"'],
)
def test_parse_entity_tags_never_raises(value: bytes) -> None:
    star, tags = parse_entity_tags([value])
    assert isinstance(star, bool) and all(isinstance(t, bytes) and t for t in tags)


@pytest.mark.parametrize(
    ("if_none_match", "etag", "matches"),
    [
        pytest.param([b'"v1"'], b'"v1"', True, id="strong-strong"),
        pytest.param([b'"v1"'], b'W/"v1"', True, id="stored-weak-request-strong"),
        pytest.param([b'W/"v1"'], b'"v1"', True, id="stored-strong-request-weak"),
        pytest.param([b'W/"v1"'], b'W/"v1"', True, id="weak-weak"),
        pytest.param([b'"v2"'], b'"v1"', False, id="different"),
        pytest.param([b'"V1"'], b'"v1"', False, id="case-sensitive"),
        pytest.param([b'"other", "v1"'], b'"v1"', True, id="in-a-list"),
        pytest.param([b'"other"', b'W/"v1"'], b'"v1"', True, id="on-a-second-line"),
        pytest.param([b'"a,b"'], b'"a,b"', True, id="comma-etag"),
        pytest.param([b'"x", "a,b"'], b'W/"a,b"', True, id="comma-etag-in-a-list"),
        pytest.param([b'"a"'], b'"a,b"', False, id="comma-etag-prefix"),
        pytest.param([b'"b"'], b'"a,b"', False, id="comma-etag-suffix"),
        pytest.param([b'"a,b"'], b'"a"', False, id="request-comma-etag"),
        pytest.param([b"*"], b'"v1"', True, id="star"),
        pytest.param([b"*"], None, True, id="star-without-etag"),
        pytest.param([b'"v1"'], None, False, id="no-stored-etag"),
        pytest.param([b'junk, "v1"'], b'"v1"', True, id="junk-then-match"),
        pytest.param([b"garbage"], b'"v1"', False, id="garbage"),
    ],
)
def test_has_matching_etag(if_none_match: list[bytes], etag: bytes | None, matches: bool) -> None:
    assert has_matching_etag(if_none_match, etag) is matches


LAST_MODIFIED = http_date(NOW - 3600)


@pytest.mark.parametrize(
    ("if_none_match", "if_modified_since", "headers", "stored_at", "expected"),
    [
        pytest.param([b'W/"v1"'], None, [(b"etag", b'"v1"')], NOW, True, id="inm-weak"),
        pytest.param([b'"a,b"'], None, [(b"etag", b'"a,b"')], NOW, True, id="inm-comma"),
        pytest.param([b"*"], None, [(b"last-modified", LAST_MODIFIED)], NOW, True, id="inm-star"),
        # If-None-Match wins: a matching If-Modified-Since does not rescue a mismatch...
        pytest.param(
            [b'"x"'],
            http_date(NOW),
            [(b"etag", b'"v1"'), (b"last-modified", LAST_MODIFIED)],
            NOW,
            False,
            id="inm-wins-over-matching-ims",
        ),
        # ...and a stale one does not spoil a match.
        pytest.param(
            [b'"v1"'],
            http_date(NOW - 7200),
            [(b"etag", b'"v1"'), (b"last-modified", LAST_MODIFIED)],
            NOW,
            True,
            id="inm-wins-over-old-ims",
        ),
        pytest.param(
            [], LAST_MODIFIED, [(b"last-modified", LAST_MODIFIED)], NOW, True, id="ims-equal"
        ),
        pytest.param(
            [], http_date(NOW), [(b"last-modified", LAST_MODIFIED)], NOW, True, id="ims-later"
        ),
        pytest.param(
            [],
            http_date(NOW - 3601),
            [(b"last-modified", LAST_MODIFIED)],
            NOW,
            False,
            id="ims-earlier",
        ),
        # Without Last-Modified, the stored Date; without either, when it was stored.
        pytest.param(
            [], http_date(NOW - 10), [(b"date", http_date(NOW - 10))], NOW, True, id="date-equal"
        ),
        pytest.param(
            [], http_date(NOW - 11), [(b"date", http_date(NOW - 10))], NOW, False, id="date-later"
        ),
        pytest.param(
            [],
            http_date(NOW - 11),
            [(b"last-modified", LAST_MODIFIED), (b"date", http_date(NOW))],
            NOW,
            True,
            id="last-modified-before-date",
        ),
        pytest.param(
            [],
            http_date(NOW - 10),
            [(b"last-modified", b"junk"), (b"date", http_date(NOW - 20))],
            NOW,
            True,
            id="junk-last-modified-falls-back-to-date",
        ),
        pytest.param([], http_date(NOW - 5), [], NOW - 5, True, id="stored-at-equal"),
        pytest.param([], http_date(NOW - 6), [], NOW - 5, False, id="stored-at-later"),
        pytest.param(
            [], b"garbage", [(b"last-modified", LAST_MODIFIED)], NOW, False, id="ims-junk"
        ),
        pytest.param([], None, [(b"etag", b'"v1"')], NOW, False, id="unconditional"),
    ],
)
def test_is_not_modified(
    if_none_match: list[bytes],
    if_modified_since: bytes | None,
    headers: RawHeaders,
    stored_at: float,
    expected: bool,
) -> None:
    assert is_not_modified(if_none_match, if_modified_since, headers, stored_at) is expected


STORED: RawHeaders = [
    (b"content-type", b"text/html"),
    (b"cache-control", b"max-age=60"),
    (b"cache-control", b"public"),
    (b"etag", b'"v1"'),
    (b"content-length", b"1234"),
    (b"content-encoding", b"gzip"),
    (b"vary", b"accept-encoding"),
    (b"vary", b"accept-language"),
    (b"date", http_date(NOW)),
    (b"expires", http_date(NOW + 60)),
    (b"content-location", b"/doc.en.html"),
    (b"last-modified", LAST_MODIFIED),
    (b"x-version", b"1"),
    (b"set-cookie", b"a=b"),
]


def test_not_modified_carries_the_fields_rfc_9110_15_4_5_names() -> None:
    # ETag, Cache-Control, Date, Vary, Expires, Content-Location: every line, in order.
    assert get_not_modified_headers(STORED) == [
        (b"cache-control", b"max-age=60"),
        (b"cache-control", b"public"),
        (b"etag", b'"v1"'),
        (b"vary", b"accept-encoding"),
        (b"vary", b"accept-language"),
        (b"date", http_date(NOW)),
        (b"expires", http_date(NOW + 60)),
        (b"content-location", b"/doc.en.html"),
    ]


def test_not_modified_carries_last_modified_only_without_an_etag() -> None:
    without_etag = [(n, v) for n, v in STORED if n != b"etag"]
    headers = get_not_modified_headers(without_etag)
    assert (b"last-modified", LAST_MODIFIED) in headers
    assert {n for n, _ in headers} == {
        b"cache-control",
        b"vary",
        b"date",
        b"expires",
        b"content-location",
        b"last-modified",
    }
    assert get_not_modified_headers([(b"content-type", b"text/plain")]) == []


def test_merge_not_modified_updates_fields_in_place_and_keeps_framing() -> None:
    fresh: RawHeaders = [
        (b"cache-control", b"max-age=300"),
        (b"date", http_date(NOW + 100)),
        (b"etag", b'"v1"'),
        (b"x-new", b"1"),
        (b"x-new", b"2"),
        (b"content-length", b"0"),
        (b"content-encoding", b"identity"),
        (b"age", b"5"),
    ]
    merged = merge_not_modified(STORED, fresh)
    assert merged == [
        (b"content-type", b"text/html"),
        # Both stored Cache-Control lines give way to the 304's one, where they stood.
        (b"cache-control", b"max-age=300"),
        (b"etag", b'"v1"'),
        # Length and framing stay as stored: the body is the stored one.
        (b"content-length", b"1234"),
        (b"content-encoding", b"gzip"),
        (b"vary", b"accept-encoding"),
        (b"vary", b"accept-language"),
        (b"date", http_date(NOW + 100)),
        (b"expires", http_date(NOW + 60)),
        (b"content-location", b"/doc.en.html"),
        (b"last-modified", LAST_MODIFIED),
        (b"x-version", b"1"),
        (b"set-cookie", b"a=b"),
        (b"x-new", b"1"),
        (b"x-new", b"2"),
    ]


@pytest.mark.parametrize(
    "name", [b"upgrade", b"te", b"trailer", b"proxy-connection", b"connection", b"keep-alive"]
)
def test_merge_not_modified_takes_no_connection_field_from_the_304(name: bytes) -> None:
    # A 304's framing of its own connection is no part of the stored response: merged in,
    # it would make the refreshed entry one that decode refuses (a miss on every request).
    merged = merge_not_modified(STORED, [(name, b"x"), (b"x-new", b"1")])
    assert (name, b"x") not in merged and (b"x-new", b"1") in merged


@pytest.mark.parametrize(
    "vary", [b"accept language", b"accept, x:y", b"x\x01"], ids=["space", "colon", "control"]
)
def test_a_vary_name_that_is_no_field_name_is_not_stored(vary: bytes) -> None:
    assert decide([cc(b"max-age=60"), (b"vary", vary)]).reason == "vary-invalid"


def test_merge_not_modified_without_fields_keeps_the_stored_headers() -> None:
    assert merge_not_modified(STORED, []) == STORED
    assert merge_not_modified(STORED, [(b"content-length", b"0")]) == STORED
