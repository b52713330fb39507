"""RFC 9111 / 9110 / 9213 conformance, rule by rule: a table for each pure parser or
decision, and the same rule shown through the real middleware over every backend.

Each section names the RFC section it checks; docs/architecture.md ("RFC conformance") lists
the rules with what we do and the tests here that show it.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from email.utils import formatdate
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from redis_cache_middleware import CacheMiddleware, RedisCache
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
from redis_cache_middleware.targeted import parse_dictionary, parse_targeted

from .helpers import TEST_TIMEOUT, Origin, Spec, make_client

RawHeaders = list[tuple[bytes, bytes]]

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


pytestmark = pytest.mark.anyio


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
