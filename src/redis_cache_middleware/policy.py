"""HTTP caching policy: pure functions of headers, config and the clock, with no I/O.

This module answers three questions for the middleware, following RFC 9111 (HTTP Caching)
for a *shared* cache:

* What did the client ask for? ``parse_request`` reads the request's ``Cache-Control``
  (and ``Pragma``) into ``RequestDirectives``.
* May this response be stored, and for how long? ``decide_store`` returns a ``StoreDecision``
  whose ``reason`` names the first rule that refused it (used in ``Cache-Status: detail=``).
* May this stored response answer this request? ``check_usable`` compares an entry's age with
  its freshness and the request's directives.

Parsing is forgiving: junk never raises. Where a header is malformed, the safe reading wins
(an unparseable ``max-age`` makes the response stale, an invalid ``Expires`` means expired).
Freshness precedence (RFC 9111 4.2.1): ``s-maxage`` over ``max-age`` over ``Expires - Date``;
the configured default TTL applies only where the response states none.
"""

from __future__ import annotations

import datetime
import email.utils
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from ._types import RawHeaders

#: RFC 9111 1.2.2: a delta-seconds too large to represent is taken as 2**31.
MAX_DELTA_SECONDS = 2147483648

#: Statuses RFC 9110 15.1 calls heuristically cacheable.
HEURISTIC_STATUSES = frozenset({200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501})


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


def parse_http_date(value: bytes) -> float | None:
    """Return the POSIX time of an HTTP-date, or None if it does not parse."""
    try:
        parsed = email.utils.parsedate_to_datetime(value.decode("latin-1"))
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed.tzinfo is None:
        # asctime dates carry no zone; HTTP dates are always UTC (RFC 9110 5.6.7).
        parsed = parsed.replace(tzinfo=datetime.timezone.utc)
    try:
        return parsed.timestamp()
    except (OverflowError, OSError, ValueError):  # pragma: no cover - platform limits
        return None


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


@dataclass(frozen=True, slots=True)
class RequestDirectives:
    """What the request's ``Cache-Control`` asks of the cache."""

    no_store: bool = False
    no_cache: bool = False
    only_if_cached: bool = False
    max_age: int | None = None
    min_fresh: int | None = None


NO_DIRECTIVES = RequestDirectives()


def parse_request(cache_control: Iterable[bytes], pragma: Iterable[bytes]) -> RequestDirectives:
    """Return the request directives; ``Pragma: no-cache`` counts only without Cache-Control."""
    values = list(cache_control)
    if not values:
        if any(b"no-cache" in p.lower() for p in pragma):
            return RequestDirectives(no_cache=True)
        return NO_DIRECTIVES
    cc = parse_cache_control(values)
    return RequestDirectives(
        no_store=cc.no_store,
        no_cache=cc.no_cache,
        only_if_cached=cc.only_if_cached,
        max_age=cc.max_age,
        min_fresh=cc.min_fresh,
    )


@dataclass(frozen=True, slots=True)
class StoreDecision:
    """Whether to store a response and for how long; ``reason`` is a Cache-Status detail."""

    store: bool
    reason: str
    #: The freshness lifetime in seconds (0: always stale); it is compared with the entry's
    #: age, which starts at ``initial_age``.
    fresh_for: float = 0.0
    #: Seconds past freshness the entry is kept for stale serving (the longer window below).
    stale_for: float = 0.0
    #: Seconds past freshness a stale entry may be served while it is refreshed (RFC 5861).
    stale_while_revalidate: float = 0.0
    #: Seconds past freshness a stale entry may stand in for an error (RFC 5861).
    stale_if_error: float = 0.0
    #: Lowercase names of the request headers the response varies on.
    vary: tuple[str, ...] = ()
    #: The response may answer requests that carry ``Authorization`` (RFC 9111 3.5).
    shared_with_auth: bool = False
    #: The ``Age`` the origin already reported, added to the time spent in the cache.
    initial_age: float = 0.0

    @property
    def ttl(self) -> float:
        """Return how long Redis should keep the entry, in seconds."""
        return max(0.0, self.fresh_for + self.stale_for - self.initial_age)


def refuse(reason: str) -> StoreDecision:
    """Return a decision not to store, for the given reason."""
    return StoreDecision(store=False, reason=reason)


def get_freshness_lifetime(
    cc: CacheControl, expires: bytes | None, date: bytes | None, now: float
) -> float | None:
    """Return the explicit freshness lifetime in seconds, or None if the response states none."""
    if cc.s_maxage is not None:
        return float(cc.s_maxage)
    if cc.max_age is not None:
        return float(cc.max_age)
    if expires is not None:
        expires_at = parse_http_date(expires)
        if expires_at is None:
            return 0.0  # an invalid Expires means "already expired" (RFC 9111 5.3)
        date_at = parse_http_date(date) if date is not None else None
        return max(0.0, expires_at - (date_at if date_at is not None else now))
    return None


def decide_store(
    status: int,
    headers: RawHeaders,
    *,
    now: float,
    default_ttl: float | None,
    cacheable_statuses: Collection[int],
    cache_set_cookie: bool = False,
    request_has_authorization: bool = False,
    request_has_cookie: bool = False,
    request_credentials: tuple[str, ...] = (),
    stale_while_revalidate: float = 0.0,
    stale_if_error: float = 0.0,
    keep_for_revalidation: float = 0.0,
    error_ttl: float | None = None,
) -> StoreDecision:
    """Return whether a response to a GET may be stored in a shared cache, and for how long.

    ``request_has_cookie`` and ``request_credentials`` (the names of the operator's
    credential headers the request carried) make the request a private one: its response is
    stored only where it says it may be shared (``private_request_refusal``). ``error_ttl``
    caps ``default_ttl`` for statuses other than 2xx and 3xx.

    Each guard below refuses one thing; the first that applies names the reason.
    """
    cc_values: list[bytes] = []
    vary_values: list[bytes] = []
    expires: bytes | None = None
    date: bytes | None = None
    age: bytes | None = None
    has_set_cookie = has_content_range = has_validator = False
    for name, value in headers:
        if name == b"cache-control":
            cc_values.append(value)
        elif name == b"vary":
            vary_values.append(value)
        elif name == b"expires":
            expires = value if expires is None else expires
        elif name == b"date":
            date = value if date is None else date
        elif name == b"age":
            age = value
        elif name == b"set-cookie":
            has_set_cookie = True
        elif name == b"content-range":
            has_content_range = True
        elif name == b"etag" or name == b"last-modified":
            has_validator = True

    # Only the statuses configured as cacheable (by default RFC 9110's heuristic set).
    if status not in cacheable_statuses:
        return refuse("status")
    # Partial content is never stored: we do not combine ranges.
    if has_content_range or status == 206:
        return refuse("partial")
    # A 304 answers one client's validators; it is no response for anyone else.
    if status == 304:
        return refuse("status")
    cc = parse_cache_control(cc_values)
    # The origin forbids storing.
    if cc.no_store:
        return refuse("no-store")
    # Meant for one user only; a shared cache must not keep it.
    if cc.private:
        return refuse("private")
    # A response to an authorised request needs explicit permission (RFC 9111 3.5).
    shared_with_auth = cc.public or cc.s_maxage is not None or cc.must_revalidate
    if request_has_authorization and not shared_with_auth:
        return refuse("authorization")
    # Cookies set for one client must not be replayed to others.
    if has_set_cookie and not cache_set_cookie:
        return refuse("set-cookie")
    vary = parse_vary(vary_values)
    # "Vary: *" can never match a later request.
    if vary is None:
        return refuse("vary-star")
    # A Vary name that is no field name (``accept language``) names nothing a request can
    # carry, and such a marker would be read as damaged: never stored.
    if not all(map(is_field_name, vary)):
        return refuse("vary-invalid")
    # A request with a cookie or a credential header asked for its own page: shared only
    # where the response says so, or is keyed on what made the request private.
    if request_has_cookie or request_credentials:
        private = private_request_refusal(
            cc.public or cc.s_maxage is not None, vary, request_has_cookie, request_credentials
        )
        if private is not None:
            return refuse(private)
    if default_ttl is not None and error_ttl is not None and not 200 <= status < 400:
        # An error page pinned for default_ttl is a denial of service: a short default.
        default_ttl = min(default_ttl, error_ttl)
    lifetime = get_freshness_lifetime(cc, expires, date, now)
    if lifetime is None:
        # No explicit freshness: the configured default, if any.
        if default_ttl is None:
            return refuse("no-ttl")
        lifetime = float(default_ttl)
    swr_window = sie_window = 0.0
    if not (cc.must_revalidate or cc.proxy_revalidate or cc.s_maxage is not None):
        # must-revalidate (and s-maxage, RFC 9111 5.2.2.10) forbid serving it stale.
        swr = cc.stale_while_revalidate
        sie = cc.stale_if_error
        swr_window = float(swr if swr is not None else stale_while_revalidate)
        sie_window = float(sie if sie is not None else stale_if_error)
    stale_for = max(swr_window, sie_window)
    if has_validator:
        # Kept past freshness so that a 304 can refresh it without its body.
        stale_for = max(stale_for, float(keep_for_revalidation))
    initial_age = _parse_age(age)
    if cc.no_cache:
        # Stored, but never served without revalidation: kept for its stated lifetime.
        keep = lifetime if lifetime > 0 else float(default_ttl or 0)
        if keep <= initial_age:
            return refuse("stale" if keep > 0 else "no-ttl")
        return StoreDecision(
            store=True,
            reason="no-cache",
            fresh_for=0.0,
            stale_for=max(keep, float(keep_for_revalidation) if has_validator else 0.0),
            vary=vary,
            shared_with_auth=shared_with_auth,
            initial_age=initial_age,
        )
    # Already stale on arrival: its Age uses up its lifetime and any stale window.
    if lifetime + stale_for <= initial_age or (lifetime <= initial_age and stale_for <= 0):
        return refuse("stale")
    return StoreDecision(
        store=True,
        reason="stored",
        fresh_for=lifetime,
        stale_for=stale_for,
        stale_while_revalidate=swr_window,
        stale_if_error=sie_window,
        vary=vary,
        shared_with_auth=shared_with_auth,
        initial_age=initial_age,
    )


def private_request_refusal(
    explicitly_shared: bool,
    vary: tuple[str, ...],
    has_cookie: bool,
    credentials: tuple[str, ...],
) -> str | None:
    """Return why a response may not be shared with (or from) a private request, else None.

    A request carrying ``Cookie`` (``has_cookie``) or one of the operator's credential
    headers (``credentials``, lowercase names) asks for a page that may be its user's own,
    as Varnish's builtin assumes. Such a request is answered from, or stored in, the shared
    cache only when the response is ``explicitly_shared`` (``public`` or ``s-maxage``) or
    is keyed on what made the request private (``Vary: Cookie``, ``Vary: X-Api-Key``):
    ``cookie`` or ``credentials`` otherwise.
    """
    if explicitly_shared:
        return None
    if has_cookie and "cookie" not in vary:
        return "cookie"
    if any(name not in vary for name in credentials):
        return "credentials"
    return None


def is_explicitly_shared(headers: RawHeaders) -> bool:
    """Return whether a stored response says it may be shared: ``public`` or ``s-maxage``."""
    cc = parse_cache_control(v for n, v in headers if n == b"cache-control")
    return cc.public or cc.s_maxage is not None


def _parse_age(value: bytes | None) -> float:
    if value is None:
        return 0.0
    return float(_parse_delta(value.decode("latin-1").strip()))


@dataclass(frozen=True, slots=True)
class Usability:
    """Whether a stored entry may answer a request; ``reason`` says why not.

    ``stale`` marks an entry that may be served only while it is refreshed in the background
    (inside its stale-while-revalidate window).
    """

    usable: bool
    reason: str = ""
    stale: bool = False


FRESH = Usability(usable=True)


def check_usable(
    fresh_for: float,
    age: float,
    request: RequestDirectives,
    stale_while_revalidate: float = 0.0,
) -> Usability:
    """Return whether an entry of the given freshness and age may answer the request."""
    if request.max_age is not None and age > request.max_age:
        return Usability(usable=False, reason="max-age")
    if age >= fresh_for:
        if age < fresh_for + stale_while_revalidate and request.min_fresh is None:
            return Usability(usable=True, reason="stale-while-revalidate", stale=True)
        return Usability(usable=False, reason="stale")
    if request.min_fresh is not None and fresh_for - age < request.min_fresh:
        return Usability(usable=False, reason="min-fresh")
    return FRESH


def can_serve_stale_on_error(fresh_for: float, age: float, stale_if_error: float) -> bool:
    """Return whether a stale entry may stand in for an error answer (RFC 5861 4)."""
    return age < fresh_for + stale_if_error


#: Statuses that stale-if-error may replace (RFC 5861 4).
ERROR_STATUSES = frozenset({500, 502, 503, 504})


def is_error_status(status: int) -> bool:
    """Return whether a status tells of the server's state at the moment rather than of the
    resource: a server error (5xx), 408 Request Timeout or 429 Too Many Requests."""
    return status >= 500 or status in (408, 429)


def marks_hit_for_pass(status: int, decision: StoreDecision, conditional_request: bool) -> bool:
    """Return whether a response shows that the URL's responses cannot be stored, so that
    requests for it skip coalescing for a while (hit-for-pass).

    Only a refused response does, and not every one: a 304 answering the client's own
    validators says nothing of whether the full response is storable, an error status
    (``is_error_status``) says nothing of the next answer, and a refusal for what the
    request carried (``REQUEST_REFUSALS``) says nothing of the next request.
    """
    if decision.store or decision.reason in REQUEST_REFUSALS:
        return False
    if status == 304 and conditional_request:
        return False
    return not is_error_status(status)


#: Refusals caused by what one request carried (credentials, cookies, a range), which say
#: nothing of whether the URL's responses can be stored: they never mark hit-for-pass, so
#: that one request with a junk ``Authorization`` cannot turn coalescing off for a URL.
REQUEST_REFUSALS = frozenset({"authorization", "cookie", "credentials", "partial"})

#: Refusals that speak of one request rather than of the resource: the credentials it
#: carried, a cookie set for one user, or the range it asked for.
PER_REQUEST_REFUSALS = REQUEST_REFUSALS | {"set-cookie"}


def supersedes_stored(status: int, decision: StoreDecision, conditional_request: bool) -> bool:
    """Return whether a response that may not be stored replaces the entry its request found,
    so that the entry is dropped rather than served stale again.

    A full answer to a request for a stored URL is what the origin says of it now (RFC 9111
    4.3.3): a ``no-store``, ``private``, ``Vary: *`` or otherwise refused answer means the
    stored copy is out of date. Not so for the answers that ``marks_hit_for_pass`` ignores,
    nor for refusals that speak of the one request (``PER_REQUEST_REFUSALS``): an
    authorised user's answer must not evict the copy every anonymous user is served.
    """
    return (
        marks_hit_for_pass(status, decision, conditional_request)
        and decision.reason not in PER_REQUEST_REFUSALS
    )


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
    since = parse_http_date(if_modified_since)
    if since is None:
        return False
    modified: float | None = None
    if last_modified is not None:
        modified = parse_http_date(last_modified)
    if modified is None:
        date = next((v for n, v in headers if n == b"date"), None)
        modified = parse_http_date(date) if date is not None else None
    if modified is None:
        modified = stored_at
    return modified <= since


#: The fields a 304 carries from the stored response (RFC 9110 15.4.5).
NOT_MODIFIED_FIELDS = frozenset(
    {b"cache-control", b"content-location", b"date", b"etag", b"expires", b"vary"}
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
