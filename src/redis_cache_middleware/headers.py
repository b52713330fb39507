"""HTTP header parsing for the cache: pure functions of header values, no I/O, no clock.

``Cache-Control`` (``parse_cache_control``; the targeted fields of RFC 9213 that may replace
it are read in ``targeted``), HTTP-dates (strictly: RFC 9110 5.6.7's three forms, nothing
else), ``Age``, ``Vary`` and field names, entity tags and the conditional-request helpers
(``is_not_modified``, the headers of a 304, ``merge_not_modified``). Parsing is forgiving:
junk never raises. Where a header is malformed, the safe reading wins (an unparseable
``max-age`` makes the response stale, an invalid ``Expires`` means expired, an invalid
``Age`` is ignored). The decisions built on them are in ``policy``.
"""

from __future__ import annotations

import calendar
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ._types import RawHeaders

#: RFC 9111 1.2.2: a delta-seconds too large to represent is taken as 2**31.
MAX_DELTA_SECONDS = 2147483648


@dataclass(frozen=True, slots=True)
class CacheControl:
    """The directives of one or more ``Cache-Control`` field lines.

    A delta-seconds directive that was present but unparseable is recorded as 0 (stale), which
    is the safe reading for a shared cache (RFC 9111 4.2.1, 5.2).
    """

    no_store: bool = False
    no_cache: bool = False
    private: bool = False
    public: bool = False
    must_revalidate: bool = False
    proxy_revalidate: bool = False
    only_if_cached: bool = False
    max_age: int | None = None
    s_maxage: int | None = None
    min_fresh: int | None = None
    #: ``max-stale`` with no value is "any staleness": stored as ``MAX_DELTA_SECONDS``.
    max_stale: int | None = None
    stale_while_revalidate: int | None = None
    stale_if_error: int | None = None
    #: The lowercase name of the field the directives were read from: ``cache-control``, or
    #: the targeted field (RFC 9213) that replaced it, in which case ``Expires`` is ignored.
    source: str = "cache-control"


_DELTA_DIRECTIVES = {
    "max-age": "max_age",
    "s-maxage": "s_maxage",
    "min-fresh": "min_fresh",
    "max-stale": "max_stale",
    "stale-while-revalidate": "stale_while_revalidate",
    "stale-if-error": "stale_if_error",
}
_FLAG_DIRECTIVES = {
    "no-store": "no_store",
    "no-cache": "no_cache",
    "private": "private",
    "public": "public",
    "must-revalidate": "must_revalidate",
    "proxy-revalidate": "proxy_revalidate",
    "only-if-cached": "only_if_cached",
}


def _split_directives(value: str) -> Iterable[tuple[str, str | None]]:
    """Yield ``(name, argument)`` pairs from a Cache-Control value, honouring quoted strings."""
    i, n = 0, len(value)
    while i < n:
        # name
        while i < n and value[i] in " \t,":
            i += 1
        start = i
        while i < n and value[i] not in "=,":
            i += 1
        name = value[start:i].strip().lower()
        arg: str | None = None
        if i < n and value[i] == "=":
            i += 1
            while i < n and value[i] in " \t":
                i += 1
            if i < n and value[i] == '"':
                i += 1
                chars: list[str] = []
                while i < n and value[i] != '"':
                    if value[i] == "\\" and i + 1 < n:
                        i += 1
                    chars.append(value[i])
                    i += 1
                i += 1  # closing quote (or end)
                arg = "".join(chars)
                while i < n and value[i] != ",":
                    i += 1
            else:
                start = i
                while i < n and value[i] != ",":
                    i += 1
                arg = value[start:i].strip()
        if name:
            yield name, arg


def _parse_delta(arg: str | None) -> int:
    """Return delta-seconds, 0 when malformed, clamped to ``MAX_DELTA_SECONDS``."""
    if arg is None or not arg.isascii() or not arg.isdigit():
        return 0
    return min(int(arg), MAX_DELTA_SECONDS)


def parse_cache_control(values: Iterable[bytes]) -> CacheControl:
    """Return the directives of the given ``Cache-Control`` field values; never raises.

    Unknown directives are ignored. A delta directive repeated with conflicting values reads as
    0 (RFC 9111 4.2.1 allows treating such a response as stale). ``max-stale`` without a value
    means any staleness is acceptable.
    """
    flags: dict[str, bool] = {}
    deltas: dict[str, int] = {}
    for raw in values:
        text = raw.decode("latin-1")
        for name, arg in _split_directives(text):
            if name in _FLAG_DIRECTIVES:
                flags[_FLAG_DIRECTIVES[name]] = True
            elif name in _DELTA_DIRECTIVES:
                attr = _DELTA_DIRECTIVES[name]
                if name == "max-stale" and arg is None:
                    seconds = MAX_DELTA_SECONDS
                else:
                    seconds = _parse_delta(arg)
                if attr in deltas and deltas[attr] != seconds:
                    seconds = 0
                deltas[attr] = seconds
    return CacheControl(**flags, **deltas)  # type: ignore[arg-type]


_DAY_NAME = rb"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
_MONTH_NAME = rb"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_TIME_OF_DAY = rb"(\d\d):(\d\d):(\d\d)"
#: RFC 9110 5.6.7's three forms, whole: ``Sun, 06 Nov 1994 08:49:37 GMT`` (IMF-fixdate),
#: ``Sunday, 06-Nov-94 08:49:37 GMT`` (rfc850-date) and ``Sun Nov  6 08:49:37 1994``
#: (asctime-date). Case-insensitive, as RFC 9111 4.2 asks of a cache; only ``GMT``.
_IMF_FIXDATE = re.compile(
    _DAY_NAME + rb", (\d\d) " + _MONTH_NAME + rb" (\d{4}) " + _TIME_OF_DAY + rb" GMT",
    re.IGNORECASE,
)
_RFC850_DATE = re.compile(
    rb"(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday), (\d\d)-"
    + _MONTH_NAME
    + rb"-(\d\d) "
    + _TIME_OF_DAY
    + rb" GMT",
    re.IGNORECASE,
)
_ASCTIME_DATE = re.compile(
    _DAY_NAME + rb" " + _MONTH_NAME + rb" (\d\d| \d) " + _TIME_OF_DAY + rb" (\d{4})",
    re.IGNORECASE,
)
_MONTHS = {
    name: number
    for number, name in enumerate(b"jan feb mar apr may jun jul aug sep oct nov dec".split(), 1)
}
#: The year an rfc850-date's two digits are read against when the caller gives no clock.
_PIVOT_YEAR = 2000


def parse_http_date(value: bytes, now: float | None = None) -> float | None:
    """Return the POSIX time of an HTTP-date, or None if it is not one.

    Strict (RFC 9110 5.6.7): an IMF-fixdate, or one of the two obsolete forms a recipient
    must accept, rfc850-date and asctime-date, with nothing else around them but the field's
    own leading and trailing whitespace. Another zone (``UTC``, ``+0000``, ``AEST``), a
    two-digit year outside rfc850-date, a missing comma, doubled spaces, dashes in an
    IMF-fixdate, a one-digit hour, a day the month does not have, or a combination of
    several lines (``date, date``) is not an HTTP-date. Names are matched without regard to
    case (RFC 9111 4.2); the day name is not checked against the date. An rfc850-date's
    two-digit year that would be more than 50 years after ``now`` is read in the century
    before (RFC 9110 5.6.7); without ``now``, it is read against the year 2000.
    """
    text = value.strip(b" \t")
    match = _IMF_FIXDATE.fullmatch(text)
    if match is not None:
        day, month, year, hour, minute, second = match.groups()
        return _timestamp(int(year), month, int(day), int(hour), int(minute), int(second))
    match = _RFC850_DATE.fullmatch(text)
    if match is not None:
        day, month, short_year, hour, minute, second = match.groups()
        this_year = _year_of(now)
        year = this_year - this_year % 100 + int(short_year)
        if year > this_year + 50:
            year -= 100
        return _timestamp(year, month, int(day), int(hour), int(minute), int(second))
    match = _ASCTIME_DATE.fullmatch(text)
    if match is not None:
        month, day, hour, minute, second, year = match.groups()
        return _timestamp(int(year), month, int(day), int(hour), int(minute), int(second))
    return None


def _year_of(now: float | None) -> int:
    """The year of ``now`` (``_PIVOT_YEAR`` without one, or for a time no calendar has)."""
    if now is None:
        return _PIVOT_YEAR
    try:
        return time.gmtime(now).tm_year
    except (OverflowError, OSError, ValueError):
        return _PIVOT_YEAR


def _timestamp(
    year: int, month: bytes, day: int, hour: int, minute: int, second: int
) -> float | None:
    """The POSIX time of a date whose fields matched; None for a date no calendar has (31
    Nov, 25:00, year 0). A leap second (``:60``) is the next second."""
    number = _MONTHS[month.lower()]
    if year < 1 or hour > 23 or minute > 59 or second > 60:
        return None
    if not 1 <= day <= calendar.monthrange(year, number)[1]:
        return None
    return float(calendar.timegm((year, number, day, hour, minute, second)))


#: An RFC 9110 field name (``token``), lowercase.
_FIELD_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9a-z]+")


def is_field_name(name: str) -> bool:
    """Return whether a lowercase name is an RFC 9110 field name (a token)."""
    return _FIELD_NAME.fullmatch(name) is not None


def parse_vary(values: Iterable[bytes]) -> tuple[str, ...] | None:
    """Return the sorted, de-duplicated, lowercase field names of ``Vary``; None for ``*``."""
    names: set[str] = set()
    for raw in values:
        for part in raw.decode("latin-1").split(","):
            name = part.strip(" \t").lower()  # OWS only (RFC 9110 5.6.1)
            if name == "*":
                return None
            if name:
                names.add(name)
    return tuple(sorted(names))


def parse_age(values: Sequence[bytes] | bytes | None) -> float:
    """Return the seconds an ``Age`` field (its field lines, or one value) says, 0 when absent.

    RFC 9111 5.1: of a list-valued ``Age`` (``Age: 7200, 0``, or several lines, which make
    one list) the first member counts and the rest are discarded; a first member that is no
    delta-seconds (``abc``, ``-5``, ``1.5``) makes the cache ignore the field: 0, as if it
    were absent. Too large a value is 2**31 (RFC 9111 1.2.2).
    """
    if values is None:
        return 0.0
    lines = [values] if isinstance(values, bytes) else values
    for line in lines:
        for member in line.split(b","):
            member = member.strip(b" \t")
            if member:  # empty list elements are skipped (RFC 9110 5.6.1)
                if not member.isdigit() or not member.isascii():
                    return 0.0
                return float(min(int(member), MAX_DELTA_SECONDS))
    return 0.0


def get_validators(headers: RawHeaders) -> tuple[bytes | None, bytes | None]:
    """Return the ``ETag`` and ``Last-Modified`` of a stored response (None where absent)."""
    etag = last_modified = None
    for name, value in headers:
        if name == b"etag" and etag is None:
            etag = value.strip()
        elif name == b"last-modified" and last_modified is None:
            last_modified = value.strip()
    return etag, last_modified


def _opaque(tag: bytes) -> bytes:
    tag = tag.strip()
    return tag[2:] if tag.startswith((b"W/", b"w/")) else tag


_DQUOTE = 0x22
_LIST_SPACE = b" \t,"


def parse_entity_tags(values: Iterable[bytes]) -> tuple[bool, list[bytes]]:
    """Return whether an ``If-None-Match`` (or ``If-Match``) field holds ``*``, and its
    entity-tags, each as its opaque-tag (quotes kept, the ``W/`` prefix dropped).

    An entity-tag is ``[W/] "..."`` (RFC 9110 8.8.3) and may hold a comma, so the list is
    read quote by quote, not split on commas. Forgiving, never raising: an unquoted token
    (some servers send unquoted ETags) is kept as it stands, up to the next comma; junk
    after a closing quote is skipped up to the next comma; an unterminated quote ends the
    field line.
    """
    star = False
    tags: list[bytes] = []
    for value in values:
        i, n = 0, len(value)
        while i < n:
            if value[i] in _LIST_SPACE:
                i += 1
                continue
            start = i
            if value.startswith((b"W/", b"w/"), i) and i + 2 < n and value[i + 2] == _DQUOTE:
                start = i + 2
            if value[start] == _DQUOTE:
                end = value.find(b'"', start + 1)
                if end < 0:
                    break  # unterminated: the rest of the line is not a tag
                tags.append(value[start : end + 1])
                comma = value.find(b",", end + 1)
                i = n if comma < 0 else comma
                continue
            comma = value.find(b",", i)
            end = n if comma < 0 else comma
            token = value[i:end].strip()
            if token == b"*":
                star = True
            elif _opaque(token):
                tags.append(_opaque(token))
            i = end
    return star, tags


def has_matching_etag(if_none_match: Iterable[bytes], etag: bytes | None) -> bool:
    """Return whether ``If-None-Match`` matches the ETag by weak comparison (RFC 9110 8.8.3.2):
    the opaque-tags are equal, whether either is weak or not; ``*`` matches any stored
    response, with or without an ETag (RFC 9110 13.1.2)."""
    star, tags = parse_entity_tags(if_none_match)
    if star:
        return True
    return etag is not None and _opaque(etag) in tags


def is_not_modified(
    if_none_match: list[bytes],
    if_modified_since: bytes | None,
    headers: RawHeaders,
    stored_at: float,
) -> bool:
    """Return whether a client's conditional GET/HEAD is answered by 304 for this entry.

    ``If-None-Match`` wins when present (RFC 9110 13.2.2); otherwise ``If-Modified-Since``
    is compared with ``Last-Modified``, else ``Date``, else the time the entry was stored
    (RFC 9111 4.3.2).
    """
    etag, last_modified = get_validators(headers)
    if if_none_match:
        return has_matching_etag(if_none_match, etag)
    if if_modified_since is None:
        return False
    since = parse_http_date(if_modified_since, stored_at)
    if since is None:
        return False  # not an HTTP-date: the field is ignored (RFC 9110 13.1.3)
    modified: float | None = None
    if last_modified is not None:
        modified = parse_http_date(last_modified, stored_at)
    if modified is None:
        dates = [v for n, v in headers if n == b"date"]
        # Several Date lines make no HTTP-date: as if there were none.
        modified = parse_http_date(dates[0], stored_at) if len(dates) == 1 else None
    if modified is None:
        modified = stored_at
    return modified <= since


#: The fields a 304 carries from the stored response (RFC 9110 15.4.5), and
#: ``CDN-Cache-Control``: metadata "for the purpose of guiding cache updates", which a CDN in
#: front of us needs to refresh its copy (RFC 9213 3 says such caches forward it).
NOT_MODIFIED_FIELDS = frozenset(
    {
        b"cache-control",
        b"cdn-cache-control",
        b"content-location",
        b"date",
        b"etag",
        b"expires",
        b"vary",
    }
)


def get_not_modified_headers(headers: RawHeaders) -> RawHeaders:
    """Return the stored headers a 304 repeats; ``Last-Modified`` only without an ETag."""
    has_etag = any(n == b"etag" for n, _ in headers)
    return [
        (n, v)
        for n, v in headers
        if n in NOT_MODIFIED_FIELDS or (n == b"last-modified" and not has_etag)
    ]


#: Fields a 304 must not change in the stored response (RFC 9111 3.2).
_KEEP_ON_UPDATE = frozenset(
    {
        b"content-length",
        b"content-encoding",
        b"content-range",
        b"transfer-encoding",
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"upgrade",
        b"age",
    }
)


def merge_not_modified(stored: RawHeaders, fresh: RawHeaders) -> RawHeaders:
    """Return the stored headers updated by a 304's headers (RFC 9111 3.2).

    Each field the 304 carries replaces the stored field of that name (all its lines), in
    the stored position; new fields go at the end. Length and framing fields stay as stored.
    """
    updates: dict[bytes, list[bytes]] = {}
    for name, value in fresh:
        if name not in _KEEP_ON_UPDATE:
            updates.setdefault(name, []).append(value)
    merged: RawHeaders = []
    placed: set[bytes] = set()
    for name, value in stored:
        if name in updates:
            if name not in placed:
                merged += [(name, v) for v in updates[name]]
                placed.add(name)
        else:
            merged.append((name, value))
    for name, values in updates.items():
        if name not in placed:
            merged += [(name, v) for v in values]
    return merged
