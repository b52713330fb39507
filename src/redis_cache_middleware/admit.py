"""Admission: which GET and HEAD requests the cache handles, and how.

``admit`` reads a request once (``Request``: its headers, cookies, credentials, directives)
and decides, without I/O, whether the cache leaves it alone (excluded paths, a GET with a
body), forwards it past the cache (a rule that never caches, the bypass header, a client's
``no-store`` or ``no-cache``) or looks it up; it also computes its key and the query the app
is shown.

May call: ``policy`` (request directives), ``config`` (rules), ``RedisCache.url_hash`` and
``app_query`` (pure key arithmetic), ``vary_values`` (pure). No Redis, no app.
"""

from __future__ import annotations

import enum
import hmac
from logging import DEBUG
from typing import TYPE_CHECKING

from . import policy
from ._types import RawHeaders, Scope
from .config import CacheConfig
from .stats import logger
from .vary_values import FIELDS, normalise

if TYPE_CHECKING:
    from .cache import RedisCache


class Route(enum.Enum):
    """How an admitted request goes on."""

    #: Looked up: served from the cache, or a miss that fills it.
    LOOK_UP = "lookup"
    #: A rule says never cache its path: forwarded, nothing stored.
    NEVER = "rule"
    #: The bypass header: forwarded without a lookup; its answer refreshes the entry.
    BYPASS = "bypass"
    #: The client's ``no-store`` (or ``no-cache`` where it cannot be coalesced): forwarded
    #: alone; under ``no-store`` nothing of the exchange is stored (RFC 9111 5.2.1.5).
    ALONE = "alone"
    #: The client's ``no-cache``: answered by a response produced after it arrived,
    #: coalesced like a miss (RFC 9111 5.2.1.4).
    RELOAD = "reload"


def admit(scope: Scope, config: CacheConfig, cache: RedisCache) -> Request | None:
    """Read a GET or HEAD request and decide its route; None: leave it to the app untouched
    (an excluded path, or a body no key holds)."""
    path: str = scope["path"]
    if config.exclude_matchers and config.is_excluded(path):
        return None
    request = Request(scope, config)
    if request.has_body:
        # A GET or HEAD with a body (a "fat GET"): its answer may depend on the body,
        # which no key holds. Not looked up, not stored, not coalesced: untouched.
        return None
    query: bytes = scope.get("query_string", b"")
    if cache.has_ignored_query:
        # The app sees the query the key holds: an ignored parameter it cannot read,
        # it cannot reflect into a page that others are served.
        kept = cache.app_query(query)
        if kept != query:
            request.scope = {**scope, "query_string": kept}
            query = kept
    ruled, rule_ttl = config.rule_for(path) if config.rule_matchers else (False, None)
    if ruled and rule_ttl is None:
        request.route = Route.NEVER
        return request
    request.default_ttl = rule_ttl if ruled else config.default_ttl
    request.uhash = cache.url_hash(request.scheme, request.host, path, query)
    if request.bypass_value is not None and bypass_allowed(config, request.bypass_value):
        # Skip the lookup; the response refreshes the entry.
        request.route = Route.BYPASS
        return request
    if config.honour_request_cache_control and (request.cache_control or request.pragma):
        directives = request.directives = policy.parse_request(
            request.cache_control, request.pragma
        )
        if directives.no_store or directives.no_cache:
            # The client asked us not to answer from the cache.
            coalesced = config.coalesce and not request.private
            request.route = Route.RELOAD if coalesced and not directives.no_store else Route.ALONE
    return request


def bypass_allowed(config: CacheConfig, value: bytes) -> bool:
    """Whether a request's bypass header may skip the lookup: any value without a
    ``bypass_token``, else only the token (compared in constant time)."""
    token = config.bypass_token
    if token is None:
        return True
    return hmac.compare_digest(value.strip(), token.encode())


class Request:
    """What the middleware needs from a GET or HEAD request, its headers read in one pass.

    ``admit`` builds it and sets how the request goes on (``route``), its key (``uhash``),
    the TTL its rule gives, the client's directives and the scope the app is to see; after
    that nothing changes it.
    """

    __slots__ = (
        "bypass_value",
        "cache_control",
        "cookie_filter",
        "cookies",
        "credentials",
        "debug",
        "default_ttl",
        "directives",
        "has_authorization",
        "has_body",
        "has_cookie",
        "headers",
        "host",
        "if_modified_since",
        "if_none_match",
        "method",
        "path",
        "pragma",
        "private",
        "range",
        "route",
        "scheme",
        "scope",
        "targeted",
        "uhash",
    )

    def __init__(self, scope: Scope, config: CacheConfig) -> None:
        self.scope = scope
        self.route = Route.LOOK_UP
        self.default_ttl: float | None = None
        self.directives = policy.NO_DIRECTIVES
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.scheme: str = scope.get("scheme", "http")
        self.headers: RawHeaders = scope["headers"]
        self.host = b""
        self.cache_control: list[bytes] = []
        self.pragma: list[bytes] = []
        self.if_none_match: list[bytes] = []
        self.if_modified_since: bytes | None = None
        self.has_authorization = False
        #: Whether a body comes with this GET/HEAD (``Content-Length`` > 0, or chunked).
        self.has_body = False
        #: The ``Cookie`` field lines, and whether any cookie not in ``ignore_cookies``.
        self.cookies: list[bytes] = []
        self.has_cookie = False
        self.cookie_filter = config.cookie_filter
        #: The operator's ``credential_headers`` this request carries (lowercase names).
        self.credentials: tuple[str, ...] = ()
        #: The targeted cache-control fields a stored response's directives are read with.
        self.targeted = config.targeted_fields
        self.bypass_value: bytes | None = None
        #: The ``Range`` header, read only when a hit answers it (``respond.replay_range``);
        #: b"" for several lines, which make no valid Range.
        self.range: bytes | None = None
        #: The URL's hash (``RedisCache.url_hash``): the key's stem.
        self.uhash: str = ""
        #: Whether this request logs its decisions: one level check per request, so that a
        #: hit pays no more, and a change of level applies from the next request.
        self.debug = logger.isEnabledFor(DEBUG)
        bypass_header = config.bypass_header_bytes
        credential_headers = config.credential_header_bytes
        hosts: list[bytes] = []
        for key, value in self.headers:
            if key == b"host":
                hosts.append(value)
            elif key == b"cache-control":
                self.cache_control.append(value)
            elif key == b"pragma":
                self.pragma.append(value)
            elif key == b"authorization":
                self.has_authorization = True
            elif key == b"cookie":
                self.cookies.append(value)
            elif key == b"if-none-match":
                self.if_none_match.append(value)
            elif key == b"if-modified-since":
                # Several lines make one list, which no HTTP-date is: ignored (RFC 9110 13.1.3).
                ims: bytes | None = self.if_modified_since
                self.if_modified_since = value if ims is None else ims + b", " + value
            elif key == b"content-length":
                self.has_body = self.has_body or value.strip() != b"0"
            elif key == b"transfer-encoding":
                self.has_body = True
            elif key == bypass_header:
                self.bypass_value = value
            elif key in credential_headers:
                self.credentials += (key.decode("latin-1"),)
            elif key == b"range":
                self.range = value if self.range is None else b""
        # Several Host lines (RFC 9112 3.2 says to refuse them; not every server does) are
        # keyed all together, a host no one-Host request has: whichever one the app reads,
        # its answer can never be served to a request naming a single host.
        self.host = hosts[0] if len(hosts) == 1 else b"\x00".join(hosts)
        if self.cookies and not config.share_cookie_requests:
            self.has_cookie = self.cookie_filter is None or bool(self._kept_cookies())
        #: Whether the request carries credentials or cookies: its page may be its user's
        #: own, so it neither waits on nor fills for others (no coalescing).
        self.private = self.has_authorization or self.has_cookie or bool(self.credentials)

    @property
    def is_conditional(self) -> bool:
        """Return whether the client sent a validator of its own."""
        return bool(self.if_none_match) or self.if_modified_since is not None

    def _kept_cookies(self) -> list[bytes]:
        """Return the request's ``name=value`` cookie pairs that ``ignore_cookies`` keeps."""
        ignored = self.cookie_filter
        kept: list[bytes] = []
        for line in self.cookies:
            for pair in line.split(b";"):
                pair = pair.strip()
                name = pair.partition(b"=")[0].strip().decode("latin-1")
                if pair and (ignored is None or not ignored(name)):
                    kept.append(pair)
        return kept

    def values_for(self, names: tuple[str, ...]) -> list[bytes | None]:
        """Return the request's value of each named header: repeats joined, None if absent,
        as variants compare them (``vary_values.normalise``: ``gzip, br`` is ``br,gzip``).

        ``Cookie`` is given without the cookies of ``ignore_cookies``, so that they never
        reach a key; otherwise exactly as sent.
        """
        wanted = {n.encode("latin-1"): i for i, n in enumerate(names)}
        found: list[list[bytes] | None] = [None] * len(names)
        for key, value in self.headers:
            index = wanted.get(key.lower())
            if index is not None:
                bucket = found[index]
                if bucket is None:
                    found[index] = [value.strip()]
                else:
                    bucket.append(value.strip())
        values: list[bytes | None] = [None] * len(names)
        for index, lines in enumerate(found):
            if lines is not None:
                name = names[index]
                joined = b", ".join(lines)
                values[index] = normalise(name, joined) if name in FIELDS else joined
        cookie = wanted.get(b"cookie")
        if cookie is not None and self.cookie_filter is not None and self.cookies:
            kept = self._kept_cookies()
            values[cookie] = b"; ".join(kept) if kept else None
        return values
