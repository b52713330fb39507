"""HTTP caching policy: pure functions of headers, config and the clock, with no I/O.

This module answers three questions for the middleware, following RFC 9111 (HTTP Caching)
for a *shared* cache:

* What did the client ask for? ``parse_request`` reads the request's ``Cache-Control``
  (and ``Pragma``) into ``RequestDirectives``.
* May this response be stored, and for how long? ``decide_store`` returns a ``StoreDecision``
  whose ``reason`` names the first rule that refused it (used in ``Cache-Status: detail=``).
* May this stored response answer this request? ``check_usable`` compares an entry's age with
  its freshness and the request's directives.

The header parsers it builds on (re-exported here) are in ``headers`` and ``targeted``: junk
never raises there, and the safe reading of a malformed header wins. A response's directives
are ``effective_cache_control``'s: a targeted field (RFC 9213, ``CDN-Cache-Control``) when
present and valid, else ``Cache-Control``. Freshness precedence (RFC 9111 4.2.1):
``s-maxage`` over ``max-age`` over ``Expires - Date`` (no ``Expires`` under a targeted
field); where the response states none, the configured default TTL, else (when turned on) a
heuristic from ``Last-Modified`` (RFC 9111 4.2.2).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from ._types import RawHeaders
from .headers import MAX_DELTA_SECONDS as MAX_DELTA_SECONDS
from .headers import CacheControl as CacheControl
from .headers import get_not_modified_headers as get_not_modified_headers
from .headers import get_validators as get_validators
from .headers import has_matching_etag as has_matching_etag
from .headers import is_field_name as is_field_name
from .headers import is_not_modified as is_not_modified
from .headers import merge_not_modified as merge_not_modified
from .headers import parse_age as parse_age
from .headers import parse_cache_control as parse_cache_control
from .headers import parse_entity_tags as parse_entity_tags
from .headers import parse_http_date as parse_http_date
from .headers import parse_vary as parse_vary
from .targeted import effective_cache_control as effective_cache_control

#: Statuses RFC 9110 15.1 calls heuristically cacheable.
HEURISTIC_STATUSES = frozenset({200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501})

#: The final statuses whose semantics RFC 9110 section 15 defines, less 305 (deprecated),
#: 306 and 418 (unused): a response with explicit freshness is stored whatever its status,
#: as long as it is one of these (RFC 9111 3) or one the operator made cacheable.
UNDERSTOOD_STATUSES = frozenset(
    {*range(200, 207), *range(300, 305), 307, 308}
    | {*range(400, 418), 421, 422, 426, *range(500, 506)}
)

#: The longest heuristic freshness lifetime by default (``heuristic_max_ttl``): a day, so
#: that no heuristically fresh entry is ever served more than 24 hours old.
DEFAULT_HEURISTIC_MAX_TTL = 86400.0
#: The fraction of the time since ``Last-Modified`` a heuristic lifetime is by default, the
#: "typical setting" of RFC 9111 4.2.2.
DEFAULT_HEURISTIC_FRACTION = 0.1


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
    """Return the explicit freshness lifetime in seconds, or None if the response states none.

    ``expires`` and ``date`` are the field values (several lines joined with ", ", which no
    HTTP-date is). An invalid ``Expires`` means "already expired" (RFC 9111 5.3); an invalid
    ``Date`` is replaced by the time the response was received, ``now`` (RFC 9110 6.6.1).
    Directives read from a targeted field make ``Expires`` ignored (RFC 9213 2.1).
    """
    if cc.s_maxage is not None:
        return float(cc.s_maxage)
    if cc.max_age is not None:
        return float(cc.max_age)
    if expires is not None and cc.source == "cache-control":
        expires_at = parse_http_date(expires, now)
        if expires_at is None:
            return 0.0
        return max(0.0, expires_at - _date_or(date, now))
    return None


def get_heuristic_lifetime(
    last_modified: bytes | None, date: bytes | None, now: float, fraction: float, cap: float
) -> float | None:
    """Return a heuristic freshness lifetime (RFC 9111 4.2.2): ``fraction`` of the time from
    ``Last-Modified`` to ``Date`` (or ``now``), at most ``cap``; None without a valid
    ``Last-Modified`` at or before it."""
    if last_modified is None:
        return None
    modified = parse_http_date(last_modified, now)
    base = _date_or(date, now)
    if modified is None or modified > base:
        return None
    return min(cap, fraction * (base - modified))


def _date_or(date: bytes | None, now: float) -> float:
    """The response's ``Date``, or ``now`` when it is absent or invalid."""
    date_at = parse_http_date(date, now) if date is not None else None
    return date_at if date_at is not None else now


def _joined(values: list[bytes]) -> bytes | None:
    """A field's lines as one value (RFC 9110 5.3), None when absent."""
    if not values:
        return None
    return values[0] if len(values) == 1 else b", ".join(values)


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
    targeted: Sequence[bytes] = (),
    heuristic_fraction: float | None = None,
    heuristic_max_ttl: float = DEFAULT_HEURISTIC_MAX_TTL,
    stale_on_error_grace: float = 0.0,
) -> StoreDecision:
    """Return whether a response to a GET may be stored in a shared cache, and for how long.

    The response's directives are ``effective_cache_control(headers, targeted)``. A response
    with explicit freshness (``s-maxage``, ``max-age``, ``Expires``) is storable whatever
    its status, if RFC 9110 defines it (``UNDERSTOOD_STATUSES``) or the operator made it
    cacheable; ``cacheable_statuses`` governs the rest: ``default_ttl``, then (with
    ``heuristic_fraction``, None for off) a heuristic from ``Last-Modified`` capped at
    ``heuristic_max_ttl``. ``error_ttl`` caps both for statuses other than 2xx and 3xx.
    A ``no-cache`` response is stored only with a validator (nothing else could ever serve
    it), never fresh, kept for its lifetime and at least ``keep_for_revalidation``.

    ``request_has_cookie`` and ``request_credentials`` (the names of the operator's
    credential headers the request carried) make the request a private one: its response is
    stored only where it says it may be shared (``private_request_refusal``).
    ``stale_on_error_grace`` keeps a response that may be served stale that long past
    freshness, for the app's failures.

    Each guard below refuses one thing; the first that applies names the reason.
    """
    vary_values: list[bytes] = []
    expires: list[bytes] = []
    dates: list[bytes] = []
    ages: list[bytes] = []
    modified: list[bytes] = []
    has_set_cookie = has_validator = False
    for name, value in headers:
        if name == b"vary":
            vary_values.append(value)
        elif name == b"expires":
            expires.append(value)
        elif name == b"date":
            dates.append(value)
        elif name == b"age":
            ages.append(value)
        elif name == b"set-cookie":
            has_set_cookie = True
        elif name == b"etag":
            has_validator = True
        elif name == b"last-modified":
            has_validator = True
            modified.append(value)

    # Partial content is never stored: we do not combine ranges. (A 200 with Content-Range
    # is the whole representation: stored like any 200.)
    if status == 206:
        return refuse("partial")
    # A 304 answers one client's validators; it is no response for anyone else. And a
    # status whose meaning the cache does not know is never stored (RFC 9111 3).
    if status == 304 or (status not in UNDERSTOOD_STATUSES and status not in cacheable_statuses):
        return refuse("status")
    cc = effective_cache_control(headers, targeted)
    date = _joined(dates)
    lifetime = get_freshness_lifetime(cc, _joined(expires), date, now)
    # Without explicit freshness, only the configured (heuristically cacheable) statuses.
    if lifetime is None and status not in cacheable_statuses:
        return refuse("status")
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
    if not 200 <= status < 400 and error_ttl is not None:
        # An error page pinned for a guessed lifetime is a denial of service: a short one.
        if default_ttl is not None:
            default_ttl = min(default_ttl, error_ttl)
        heuristic_max_ttl = min(heuristic_max_ttl, error_ttl)
    initial_age = parse_age(ages)
    if cc.no_cache:
        return _no_cache_decision(
            lifetime if lifetime is not None else default_ttl,
            has_validator,
            keep_for_revalidation,
            vary,
            shared_with_auth,
            initial_age,
        )
    reason = "stored"
    if lifetime is None and default_ttl is not None:
        # No explicit freshness: the operator's default (or the path's rule) first.
        lifetime = float(default_ttl)
    elif lifetime is None and heuristic_fraction is not None:
        lifetime = get_heuristic_lifetime(
            _joined(modified), date, now, heuristic_fraction, heuristic_max_ttl
        )
        reason = "heuristic"
    if lifetime is None:
        return refuse("no-ttl")
    swr_window = sie_window = grace_window = 0.0
    if not (cc.must_revalidate or cc.proxy_revalidate or cc.s_maxage is not None):
        # must-revalidate (and s-maxage, RFC 9111 5.2.2.10) forbid serving it stale.
        swr = cc.stale_while_revalidate
        sie = cc.stale_if_error
        swr_window = float(swr if swr is not None else stale_while_revalidate)
        sie_window = float(sie if sie is not None else stale_if_error)
        grace_window = float(stale_on_error_grace)
    stale_for = max(swr_window, sie_window, grace_window)
    if has_validator:
        # Kept past freshness so that a 304 can refresh it without its body.
        stale_for = max(stale_for, float(keep_for_revalidation))
    # Already stale on arrival: its Age uses up its lifetime and any stale window.
    if lifetime + stale_for <= initial_age or (lifetime <= initial_age and stale_for <= 0):
        return refuse("stale")
    return StoreDecision(
        store=True,
        reason=reason,
        fresh_for=lifetime,
        stale_for=stale_for,
        stale_while_revalidate=swr_window,
        stale_if_error=sie_window,
        vary=vary,
        shared_with_auth=shared_with_auth,
        initial_age=initial_age,
    )


def _no_cache_decision(
    lifetime: float | None,
    has_validator: bool,
    keep_for_revalidation: float,
    vary: tuple[str, ...],
    shared_with_auth: bool,
    initial_age: float,
) -> StoreDecision:
    """A ``no-cache`` response (RFC 9111 5.2.2.4) may answer a request only once the origin
    has validated it: stored never fresh, with no stale window, for its stated lifetime (or
    the default) and at least ``keep_for_revalidation``. Without an ``ETag`` or
    ``Last-Modified`` it could never be validated, only replaced by a full answer, so it
    is not stored at all."""
    if not has_validator:
        return refuse("no-cache-no-validator")
    keep = max(lifetime or 0.0, float(keep_for_revalidation))
    if keep <= initial_age:
        return refuse("stale" if keep > 0 else "no-ttl")
    return StoreDecision(
        store=True,
        reason="no-cache",
        fresh_for=0.0,
        stale_for=keep,
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


def is_explicitly_shared(headers: RawHeaders, targeted: Sequence[bytes] = ()) -> bool:
    """Return whether a stored response says it may be shared: ``public`` or ``s-maxage``,
    in its effective directives (``effective_cache_control`` with the ``targeted`` fields
    the response was stored under)."""
    cc = effective_cache_control(headers, targeted)
    return cc.public or cc.s_maxage is not None


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
