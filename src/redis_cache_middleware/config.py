"""``CacheConfig``: the middleware's options, checked once when it is built.

Every check raises ``ConfigError`` (a ``ValueError``) with a message that starts with the
option's name, so a typo in settings fails at start-up, not on the first request.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from difflib import get_close_matches
from fnmatch import translate

from .exceptions import ConfigError
from .keys import host_alias_table, make_query_filter
from .policy import DEFAULT_HEURISTIC_FRACTION, DEFAULT_HEURISTIC_MAX_TTL, HEURISTIC_STATUSES

#: The shortest purge token accepted (the purge endpoint can empty the cache).
MIN_TOKEN_LENGTH = 16

DEFAULT_MAX_BODY_SIZE = 1024 * 1024
DEFAULT_TIMEOUT = 0.1
DEFAULT_CACHE_NAME = "redis-cache"
DEFAULT_PURGE_PATH = "/_cache/purge"
DEFAULT_COALESCE_TIMEOUT = 5.0
DEFAULT_KEEP_FOR_REVALIDATION = 60.0
DEFAULT_HIT_FOR_PASS_TTL = 10.0
DEFAULT_MAX_BACKGROUND_REFRESHES = 32
DEFAULT_SHUTDOWN_TIMEOUT = 5.0
#: The default lifetime of a status other than 2xx/3xx that states none (Varnish's
#: ``shortlived`` is 10 s too): an error page pinned by one request is gone soon.
DEFAULT_ERROR_TTL = 10.0
#: The fill lock lives a quarter of ``coalesce_timeout``, never less than this many seconds
#: (nor than three ``timeout``s), never more than half of ``coalesce_timeout``.
MIN_FILL_LOCK_TTL = 0.25
#: The targeted cache-control fields (RFC 9213) obeyed by default: this cache is a gateway
#: cache run for the origin, the class of cache ``CDN-Cache-Control`` speaks to.
DEFAULT_TARGETED_CACHE_CONTROL = ("CDN-Cache-Control",)
#: At most this many tags are kept per response, each at most MAX_TAG_LENGTH characters.
MAX_TAGS = 64
MAX_TAG_LENGTH = 256

#: A rule's value that means "never cache these paths".
NEVER = None

Pattern = str | re.Pattern[str]

_TOKEN_RE = re.compile(r"^[A-Za-z*][A-Za-z0-9!#$%&'*+\-.^_`|~:/]*$")
_HEADER_NAME_RE = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


@dataclass(frozen=True, slots=True)
class PathMatcher:
    """One path pattern: a glob (``*`` also crosses ``/``) or a compiled regex (``search``)."""

    source: Pattern
    regex: re.Pattern[str]

    @classmethod
    def of(cls, pattern: object, option: str) -> PathMatcher:
        """Return a matcher for a glob string or compiled regex, or raise naming the option."""
        if isinstance(pattern, re.Pattern):
            if not isinstance(pattern.pattern, str):
                raise ConfigError(f"{option}: regex patterns must be str, not bytes")
            return cls(pattern, pattern)
        if isinstance(pattern, str) and pattern:
            return cls(pattern, re.compile(translate(pattern)))
        raise ConfigError(f"{option}: a pattern must be a non-empty glob string or re.Pattern")

    def matches(self, path: str) -> bool:
        """Return whether the path matches."""
        if isinstance(self.source, str):
            return self.regex.match(path) is not None  # translate() anchors both ends
        return self.regex.search(path) is not None


def check_option_names(owner: str, given: Collection[str], known: Collection[str]) -> None:
    """Raise ``ConfigError`` naming each of ``given`` that is not an option of ``owner``,
    with the nearest known name when one is close (``defualt_ttl``: ``default_ttl``)."""
    problems = []
    for name in sorted(set(given) - set(known)):
        near = get_close_matches(name, sorted(known), n=1)
        hint = f"; did you mean {near[0]!r}?" if near else f" (see {owner}'s options)"
        problems.append(f"{name}: unknown option of {owner}{hint}")
    if problems:
        raise ConfigError("; ".join(problems))


def _seconds(option: str, value: object, *, allow_none: bool) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{option} must be a number of seconds; got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{option} must be a finite number >= 0; got {value!r}")
    return float(value)


def lock_ttl_for(coalesce_timeout: float, timeout: float) -> float:
    """Return how long a fill lock lives unless its owner renews it.

    Waiters wait up to ``coalesce_timeout``; the lock must expire well before that, so that
    when its owner dies they take over and are served by one new fill instead of all going
    to the app at their deadline. A quarter of ``coalesce_timeout``, but at least
    ``MIN_FILL_LOCK_TTL`` and three ``timeout``s (the owner renews it every third of the TTL
    and each renewal may take ``timeout``: one that fails still leaves another in time), and
    at most half of ``coalesce_timeout``.
    """
    floor = max(MIN_FILL_LOCK_TTL, 3 * timeout)
    return min(coalesce_timeout / 2, max(coalesce_timeout / 4, floor))


def _header_names(option: str, names: object) -> tuple[str, ...]:
    if isinstance(names, (str, bytes)) or not isinstance(names, Sequence | set | frozenset):
        raise ConfigError(f"{option} must be a list of header names; got {names!r}")
    out: list[str] = []
    for name in names:
        if not isinstance(name, str) or not _HEADER_NAME_RE.match(name):
            raise ConfigError(f"{option}: {name!r} is not a valid header name")
        out.append(name.lower())
    return tuple(sorted(set(out)))


def _targeted_fields(names: object) -> tuple[bytes, ...]:
    """The targeted cache-control fields, in precedence order, as lowercase bytes."""
    option = "targeted_cache_control"
    if isinstance(names, (str, bytes)) or not isinstance(names, Sequence):
        raise ConfigError(
            f"{option} must be a list of header names in precedence order; got {names!r}"
        )
    out: list[bytes] = []
    for name in names:
        if not isinstance(name, str) or not _HEADER_NAME_RE.match(name):
            raise ConfigError(f"{option}: {name!r} is not a valid header name")
        lowered = name.lower().encode()
        if lowered == b"cache-control":
            raise ConfigError(f"{option}: Cache-Control is what a targeted field replaces")
        if lowered in out:
            raise ConfigError(f"{option}: {name!r} is named twice")
        out.append(lowered)
    return tuple(out)


@dataclass(frozen=True, slots=True)
class CacheConfig:
    """The middleware's options, validated; see the README for each one's meaning."""

    default_ttl: float | None = None
    rules: Mapping[Pattern, float | None] = field(default_factory=dict)
    exclude: Sequence[Pattern] = ()
    vary_on: Sequence[str] = ()
    ignore_query_params: Sequence[str] = ()
    host_aliases: Mapping[str, str] = field(default_factory=dict)
    max_body_size: int = DEFAULT_MAX_BODY_SIZE
    cacheable_statuses: Collection[int] = HEURISTIC_STATUSES
    cache_set_cookie: bool = False
    bypass_header: str | None = None
    bypass_token: str | None = None
    honour_request_cache_control: bool = True
    cache_name: str = DEFAULT_CACHE_NAME
    timeout: float = DEFAULT_TIMEOUT
    tag_rules: Mapping[Pattern, Sequence[str]] = field(default_factory=dict)
    keep_tag_header: bool = False
    invalidate_on_unsafe: bool = True
    purge_token: str | None = None
    purge_path: str = DEFAULT_PURGE_PATH
    stale_while_revalidate: float = 0.0
    stale_if_error: float = 0.0
    stale_on_error_grace: float = 0.0
    keep_for_revalidation: float = DEFAULT_KEEP_FOR_REVALIDATION
    add_etag: bool = False
    coalesce: bool = True
    coalesce_timeout: float = DEFAULT_COALESCE_TIMEOUT
    hit_for_pass_ttl: float = DEFAULT_HIT_FOR_PASS_TTL
    max_background_refreshes: int = DEFAULT_MAX_BACKGROUND_REFRESHES
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT
    share_cookie_requests: bool = False
    ignore_cookies: Sequence[str] = ()
    credential_headers: Sequence[str] = ()
    error_ttl: float | None = DEFAULT_ERROR_TTL
    invalidate_locations: bool = True
    targeted_cache_control: Sequence[str] = DEFAULT_TARGETED_CACHE_CONTROL
    heuristic_freshness: bool = False
    heuristic_fraction: float = DEFAULT_HEURISTIC_FRACTION
    heuristic_max_ttl: float = DEFAULT_HEURISTIC_MAX_TTL
    freeze_gc: bool = True

    # Derived at construction.
    rule_matchers: tuple[tuple[PathMatcher, float | None], ...] = field(init=False)
    exclude_matchers: tuple[PathMatcher, ...] = field(init=False)
    vary_on_names: tuple[str, ...] = field(init=False)
    statuses: frozenset[int] = field(init=False)
    bypass_header_bytes: bytes | None = field(init=False)
    tag_matchers: tuple[tuple[PathMatcher, tuple[str, ...]], ...] = field(init=False)
    #: Seconds a fill lock lives unless its owner renews it (``lock_ttl_for``).
    fill_lock_ttl: float = field(init=False)
    #: Tells whether a cookie name is one of ``ignore_cookies`` (None: none are ignored).
    cookie_filter: Callable[[str], bool] | None = field(init=False)
    #: ``credential_headers`` as lowercase bytes, for matching raw request headers.
    credential_header_bytes: frozenset[bytes] = field(init=False)
    #: ``targeted_cache_control`` as lowercase bytes, in precedence order (the ``targeted``
    #: argument of ``policy.effective_cache_control``).
    targeted_fields: tuple[bytes, ...] = field(init=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        _seconds("default_ttl", self.default_ttl, allow_none=True)
        if not isinstance(self.rules, Mapping):
            raise ConfigError("rules must be a mapping of path pattern -> ttl seconds or None")
        rules = []
        for pattern, ttl in self.rules.items():
            matcher = PathMatcher.of(pattern, "rules")
            rules.append((matcher, _seconds(f"rules[{pattern!r}]", ttl, allow_none=True)))
        set_(self, "rule_matchers", tuple(rules))
        if isinstance(self.exclude, (str, re.Pattern)) or not isinstance(
            self.exclude, Sequence | set | frozenset
        ):
            raise ConfigError("exclude must be a list of path patterns")
        set_(
            self,
            "exclude_matchers",
            tuple(PathMatcher.of(p, "exclude") for p in self.exclude),
        )
        set_(self, "vary_on_names", _header_names("vary_on", self.vary_on))
        if isinstance(self.ignore_query_params, str) or not isinstance(
            self.ignore_query_params, Sequence | set | frozenset
        ):
            raise ConfigError("ignore_query_params must be a list of glob patterns")
        for p in self.ignore_query_params:
            if not isinstance(p, str) or not p:
                raise ConfigError(f"ignore_query_params: {p!r} is not a non-empty string")
        host_alias_table(self.host_aliases)
        if (
            isinstance(self.max_body_size, bool)
            or not isinstance(self.max_body_size, int)
            or self.max_body_size < 0
        ):
            raise ConfigError(f"max_body_size must be an int >= 0; got {self.max_body_size!r}")
        try:
            statuses = frozenset(self.cacheable_statuses)
        except TypeError:
            raise ConfigError("cacheable_statuses must be a collection of ints") from None
        for s in statuses:
            if isinstance(s, bool) or not isinstance(s, int) or not 200 <= s <= 599:
                raise ConfigError(f"cacheable_statuses: {s!r} is not a final status (200-599)")
        if 206 in statuses:
            raise ConfigError("cacheable_statuses: 206 cannot be cached (ranges are not stored)")
        if 304 in statuses:
            # A 304 answers one client's conditional request: it has no body, and served
            # to anyone else it would be an empty page.
            raise ConfigError("cacheable_statuses: 304 cannot be cached (it has no body to serve)")
        set_(self, "statuses", statuses)
        for option in ("cache_set_cookie", "honour_request_cache_control"):
            if not isinstance(getattr(self, option), bool):
                raise ConfigError(f"{option} must be True or False")
        if self.bypass_header is None:
            if self.bypass_token is not None:
                raise ConfigError("bypass_token needs bypass_header to be set")
            set_(self, "bypass_header_bytes", None)
        else:
            if not isinstance(self.bypass_header, str) or not _HEADER_NAME_RE.match(
                self.bypass_header
            ):
                raise ConfigError(f"bypass_header: {self.bypass_header!r} is not a header name")
            set_(self, "bypass_header_bytes", self.bypass_header.lower().encode())
        if self.bypass_token is not None and (
            not isinstance(self.bypass_token, str) or not self.bypass_token
        ):
            raise ConfigError("bypass_token must be a non-empty string or None")
        if not isinstance(self.cache_name, str) or not _TOKEN_RE.match(self.cache_name):
            raise ConfigError(
                f"cache_name must be an HTTP token (letters, digits, '-', ...); "
                f"got {self.cache_name!r}"
            )
        timeout = _seconds("timeout", self.timeout, allow_none=False)
        if not timeout:
            raise ConfigError("timeout must be > 0 seconds")
        if not isinstance(self.tag_rules, Mapping):
            raise ConfigError("tag_rules must be a mapping of path pattern -> list of tags")
        tag_rules = []
        for pattern, tags in self.tag_rules.items():
            matcher = PathMatcher.of(pattern, "tag_rules")
            if isinstance(tags, str) or not isinstance(tags, Sequence):
                raise ConfigError(f"tag_rules[{pattern!r}] must be a list of tags")
            for tag in tags:
                if not isinstance(tag, str) or not tag or len(tag) > MAX_TAG_LENGTH:
                    raise ConfigError(
                        f"tag_rules[{pattern!r}]: {tag!r} is not a tag (1-{MAX_TAG_LENGTH} chars)"
                    )
            tag_rules.append((matcher, tuple(tags)))
        set_(self, "tag_matchers", tuple(tag_rules))
        for option in ("keep_tag_header", "invalidate_on_unsafe"):
            if not isinstance(getattr(self, option), bool):
                raise ConfigError(f"{option} must be True or False")
        if self.purge_token is not None and (
            not isinstance(self.purge_token, str) or len(self.purge_token) < MIN_TOKEN_LENGTH
        ):
            raise ConfigError(
                f"purge_token must be a string of at least {MIN_TOKEN_LENGTH} characters, or None"
            )
        for option in (
            "stale_while_revalidate",
            "stale_if_error",
            "stale_on_error_grace",
            "hit_for_pass_ttl",
            "shutdown_timeout",
        ):
            _seconds(option, getattr(self, option), allow_none=False)
        if not _seconds("coalesce_timeout", self.coalesce_timeout, allow_none=False):
            raise ConfigError("coalesce_timeout must be > 0 seconds")
        set_(self, "fill_lock_ttl", lock_ttl_for(self.coalesce_timeout, self.timeout))
        for option in ("add_etag", "coalesce"):
            if not isinstance(getattr(self, option), bool):
                raise ConfigError(f"{option} must be True or False")
        limit = self.max_background_refreshes
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise ConfigError(f"max_background_refreshes must be an int >= 0; got {limit!r}")
        if not isinstance(self.purge_path, str) or not self.purge_path.startswith("/"):
            raise ConfigError(
                f"purge_path must be a path starting with '/'; got {self.purge_path!r}"
            )
        for option in ("share_cookie_requests", "invalidate_locations", "freeze_gc"):
            if not isinstance(getattr(self, option), bool):
                raise ConfigError(f"{option} must be True or False")
        if isinstance(self.ignore_cookies, str) or not isinstance(
            self.ignore_cookies, Sequence | set | frozenset
        ):
            raise ConfigError("ignore_cookies must be a list of cookie names (globs allowed)")
        for name in self.ignore_cookies:
            if not isinstance(name, str) or not name or any(c in name for c in "=; \t,"):
                raise ConfigError(f"ignore_cookies: {name!r} is not a cookie name or glob")
        set_(self, "cookie_filter", make_query_filter(list(self.ignore_cookies)))
        credentials = _header_names("credential_headers", self.credential_headers)
        if "authorization" in credentials or "cookie" in credentials:
            raise ConfigError(
                "credential_headers: Authorization and Cookie are always credentials; "
                "name only the others (e.g. X-Api-Key)"
            )
        set_(self, "credential_header_bytes", frozenset(n.encode() for n in credentials))
        _seconds("error_ttl", self.error_ttl, allow_none=True)
        set_(self, "targeted_fields", _targeted_fields(self.targeted_cache_control))
        if not isinstance(self.heuristic_freshness, bool):
            raise ConfigError("heuristic_freshness must be True or False")
        fraction = self.heuristic_fraction
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)):
            raise ConfigError(f"heuristic_fraction must be a number; got {fraction!r}")
        if not 0 < fraction <= 1:
            raise ConfigError(f"heuristic_fraction must be > 0 and <= 1; got {fraction!r}")
        _seconds("heuristic_max_ttl", self.heuristic_max_ttl, allow_none=False)

    def rule_for(self, path: str) -> tuple[bool, float | None]:
        """Return ``(matched, ttl)`` for the first rule matching the path."""
        for matcher, ttl in self.rule_matchers:
            if matcher.matches(path):
                return True, ttl
        return False, None

    def tags_for(self, path: str) -> tuple[str, ...]:
        """Return the tags every matching tag rule adds to responses for the path."""
        out: list[str] = []
        for matcher, tags in self.tag_matchers:
            if matcher.matches(path):
                out += tags
        return tuple(out)

    def is_excluded(self, path: str) -> bool:
        """Return whether the path is excluded from caching altogether."""
        return any(m.matches(path) for m in self.exclude_matchers)
