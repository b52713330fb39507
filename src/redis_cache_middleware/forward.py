"""The per-request pieces of the middleware: reading the request, replaying an entry, and
forwarding to the app while a copy of the response is captured and stored.

Nothing here lives longer than one request, except what ``CacheMiddleware`` hands in.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Coroutine
from logging import DEBUG
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote, unquote, urlsplit

from redis.exceptions import ResponseError

from . import entry as entry_codec
from . import policy
from ._timeouts import bounded, run_bounded
from ._types import Message, RawHeaders, Receive, Scope, Send
from .cache import FillLock, Lookup, PurgeEvent, RedisCache
from .config import MAX_TAG_LENGTH, MAX_TAGS, CacheConfig
from .entry import CachedEntry
from .keys import MAX_INDEXED_HOST, normalise_host
from .stats import RateLimitedWarning, logger

if TYPE_CHECKING:
    from .middleware import CacheMiddleware

#: Headers that describe one connection, not the response: never stored.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"age",
    }
)

NO_BODY_STATUSES = frozenset({204, 304})

#: Response headers that carry surrogate keys (tags): name -> separator (None: whitespace).
TAG_HEADERS: dict[bytes, str | None] = {b"surrogate-key": None, b"cache-tag": ","}

warn = RateLimitedWarning()

#: Characters a path keeps unescaped in the URLs given to ``on_purge`` (RFC 3986 pchar).
URL_PATH_SAFE = "/:@!$&'()*+,;=-._~"

T = TypeVar("T")


class Skipped:
    """What ``guarded`` returns when Redis was not asked or did not answer in time."""


SKIPPED = Skipped()


async def guarded(
    cache: RedisCache, timeout: float, kind: str, call: Callable[[], Coroutine[Any, Any, T]]
) -> T | Skipped:
    """Run one Redis call for the middleware: skipped while the circuit breaker is open,
    bounded by ``timeout`` (in a task of its own for clients that need it:
    ``RedisCache.isolate_calls``), any failure logged (rate-limited), counted and returned
    as ``SKIPPED`` so that the request carries on without the cache.

    A timeout while the event loop lags (CPU overload of this process, see
    ``CircuitBreaker.loop_lag``) is not held against Redis: counted in ``stats.loop_lag``
    too, it neither opens the breaker nor resets its count of failures."""
    breaker = cache.breaker
    if not breaker.allow():
        cache.stats.breaker_skipped += 1
        return SKIPPED
    started = breaker.clock()
    try:
        if cache.isolate_calls:
            result = await run_bounded(call, timeout, isolate=True)
        else:
            # run_bounded's other way, inlined: one coroutine frame less on every hit.
            async with bounded(timeout):
                result = await call()
    except Exception as exc:
        stats = cache.stats
        stats.redis_error += 1
        if isinstance(exc, ResponseError):
            # Redis answered, with an error (OOM under noeviction, WRONGTYPE, READONLY):
            # not an outage, so the breaker must not stop the reads that still work.
            breaker.success()
        elif (lag := await breaker.loop_lag(exc, started, timeout)) is not None:
            # Redis may have answered in time, unread while the loop was busy: turning the
            # cache off for everyone would add the cache's load to the overload.
            stats.loop_lag += 1
            warn(
                f"{kind} loop lag",
                f"redis-cache {kind} timed out with the event loop {lag * 1000:.0f} ms behind "
                "(CPU overload, not counted against Redis), carrying on without the cache",
            )
            return SKIPPED
        else:
            breaker.failure()
        warn(kind, f"redis-cache {kind} failed, carrying on without the cache", exc)
        return SKIPPED
    breaker.success()
    return result


class Request:
    """What the middleware needs from the request headers, read in one pass."""

    __slots__ = (
        "bypass_value",
        "cache_control",
        "cookie_filter",
        "cookies",
        "credentials",
        "debug",
        "found",
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
        "prefill",
        "private",
        "scheme",
        "started",
        "uhash",
    )

    def __init__(self, scope: Scope, config: CacheConfig) -> None:
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.scheme: str = scope.get("scheme", "http")
        self.headers: RawHeaders = scope["headers"]
        self.started = 0.0
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
        self.bypass_value: bytes | None = None
        self.uhash: str = ""
        self.found: Lookup | None = None
        #: Whether this request logs its decisions: one level check per request, so that a
        #: hit pays no more, and a change of level applies from the next request.
        self.debug = logger.isEnabledFor(DEBUG)
        #: The fill lock this request's own lookup tried, and how that went (ACQUIRED,
        #: HELD or PASS); None when the lookup did not try one.
        self.prefill: tuple[FillLock, int] | None = None
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
                self.if_modified_since = value
            elif key == b"content-length":
                self.has_body = self.has_body or value.strip() != b"0"
            elif key == b"transfer-encoding":
                self.has_body = True
            elif key == bypass_header:
                self.bypass_value = value
            elif key in credential_headers:
                self.credentials += (key.decode("latin-1"),)
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
    def host_key(self) -> bytes:
        """Return the host as keys use it: lowercase, without the scheme's default port."""
        return normalise_host(self.host, self.scheme)

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
        """Return the request's value of each named header: repeats joined, None if absent.

        ``Cookie`` is given without the cookies of ``ignore_cookies``, so that they never
        reach a key.
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
        values = [None if v is None else b", ".join(v) for v in found]
        cookie = wanted.get(b"cookie")
        if cookie is not None and self.cookie_filter is not None and self.cookies:
            kept = self._kept_cookies()
            values[cookie] = b"; ".join(kept) if kept else None
        return values


async def replay(
    entry: CachedEntry,
    age: float,
    request: Request,
    cache_status: str,
    send: Send,
) -> None:
    """Send a stored response: its headers as stored, plus ``Age`` and ``Cache-Status``.

    A client whose ``If-None-Match`` / ``If-Modified-Since`` matches gets a 304 with the
    headers RFC 9110 15.4.5 asks for.
    """
    age_seconds = int(age)
    if request.is_conditional and policy.is_not_modified(
        request.if_none_match, request.if_modified_since, entry.headers, entry.stored_at
    ):
        status = 304
        headers = policy.get_not_modified_headers(entry.headers)
        body = b""
    else:
        status = entry.status
        headers = list(entry.headers)
        body = b"" if request.method == "HEAD" else entry.body
    headers.append((b"age", str(age_seconds).encode()))
    headers.append((b"cache-status", cache_status.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def hit_status(name: str, entry: CachedEntry, age: float, extra: str = "") -> str:
    """Return the ``Cache-Status`` of a response served from the cache."""
    return f"{name}; hit; ttl={int(entry.fresh_for) - int(age)}{extra}"


class Forward:
    """Send one request to the app, pass its response through, and store a copy if allowed.

    The client gets each chunk as soon as the app sends it. ``http.response.start`` is held
    until the first body message, so that a response sent whole (the common case) can say
    truthfully in ``Cache-Status`` whether it was stored.

    ``fallback`` is a stale entry that may stand in for an error (stale-if-error);
    ``revalidate`` a stale entry whose validators are sent to the app, so that a 304 refreshes
    it without its body; ``fill`` the fill lock this request owns, kept alive while the app
    runs (``LockRenewal``) and released (or deleted by the store) at the end.
    """

    def __init__(
        self,
        middleware: CacheMiddleware,
        request: Request,
        *,
        fwd: str,
        detail: str | None = None,
        store: bool = True,
        default_ttl: float | None = None,
        fallback: CachedEntry | None = None,
        revalidate: CachedEntry | None = None,
        fill: FillLock | None = None,
        extra: str = "",
    ) -> None:
        self.middleware = middleware
        self.request = request
        self.fwd = fwd
        self.detail = detail
        self.extra = extra
        self.store = store and request.method == "GET"
        if store and request.method == "HEAD" and detail is None:
            self.detail = "head"
        self.default_ttl = default_ttl
        self.fallback = fallback
        self.revalidate = revalidate if self.store else None
        self.fill = fill
        self.decision: policy.StoreDecision | None = None
        #: The request headers the entry varies on and this request's values of them.
        self._vary: tuple[tuple[str, ...], list[bytes | None] | None] | None = None
        #: Those values as the entry stores them (``vary_record``), once computed.
        self._vary_record: tuple[tuple[str, bytes | None], ...] = ()
        self.start: Message | None = None
        self.started_client = False
        self.swallow = False
        self.not_modified = False
        self.status = 0
        self.headers: RawHeaders = []
        self.tags: tuple[str, ...] = ()
        self.chunks: list[bytes] = []
        self.size = 0
        self.capturing = False
        self.complete = False
        self.stored_at = 0.0
        #: Whether the store already ran (before the start message of a response sent whole).
        self.stored: bool | None = None
        self.send: Send = discard
        #: How it ended, for requests waiting on this fill: ``stored``, ``refused`` (not
        #: storable, and hit-for-pass), ``error`` (the app raised) or ``other`` (nothing
        #: stored, for no lasting reason: an error status, a 304 to the client's validators).
        self.outcome = "error"
        if request.debug:
            logger.debug(
                "%s (fwd=%s%s): %s %r",
                "bypass" if fwd in ("bypass", "request") else "miss",
                fwd,
                f"; detail={self.detail}" if self.detail else "",
                request.method,
                request.path,
            )

    async def run(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app for this request and deliver (and maybe store) its response."""
        self.send = send
        if self.revalidate is not None:
            scope = _with_validators(scope, self.revalidate)
        stored = False
        try:
            try:
                await self._call_app(scope, receive)
            except Exception:
                if self.fallback is None or self.started_client:
                    raise
                await self._serve_fallback("error")
                return
            if self.swallow:
                await self._serve_fallback(str(self.status))
            elif self.not_modified:
                stored = await self._serve_revalidated()
            elif self.capturing and self.complete:
                stored = self.stored if self.stored is not None else await self._store()
            if stored:
                self.outcome = "stored"
            elif self._not_storable():
                self.outcome = "refused"
                decision = self.decision
                if decision is not None and policy.supersedes_stored(
                    self.status, decision, self.request.is_conditional
                ):
                    # The entry this request found, if any, is out of date: it goes.
                    await self.middleware._drop_superseded(self.request)
            else:
                self.outcome = "other"
        finally:
            if self.fill is not None and not stored:
                await self._release(refused=self._not_storable())

    def _not_storable(self) -> bool:
        """Whether the response shows the URL's responses cannot be stored (hit-for-pass):
        refused, but not as a 304 to the client's own validators or an error status."""
        decision = self.decision
        return decision is not None and policy.marks_hit_for_pass(
            self.status, decision, self.request.is_conditional
        )

    async def _call_app(self, scope: Scope, receive: Receive) -> None:
        """Run the app; while it runs (and only then), keep this forward's fill lock alive."""
        fill = self.fill
        if fill is None:
            await self.middleware.app(scope, receive, self.send_wrapper)
            return
        renewal = LockRenewal(self.middleware, self.request, fill)
        try:
            await self.middleware.app(scope, receive, self.send_wrapper)
        finally:
            renewal.stop()

    def _cache_status(self, stored: bool, detail: str | None) -> bytes:
        name = self.middleware.config.cache_name
        value = f"{name}; fwd={self.fwd}; fwd-status={self.status}{self.extra}"
        if stored:
            value += "; stored"
        elif detail:
            value += f"; detail={detail}"
        return value.encode()

    async def send_wrapper(self, message: Message) -> None:
        kind = message["type"]
        if self.swallow or self.not_modified:
            return  # the app's answer is replaced by the cache's
        if kind == "http.response.start":
            await self._on_start(message)
        elif kind == "http.response.body":
            await self._on_body(message)
        else:
            # Trailers, pathsend or anything else we cannot copy: pass it on, store nothing.
            if self.capturing and self.request.debug:
                self._log_not_stored("uncapturable")
            self.capturing = False
            self.chunks = []
            if self.start is not None:
                await self._release_start(stored=False, detail="uncapturable")
            await self._send(message)

    async def _send(self, message: Message) -> None:
        self.started_client = True
        await self.send(message)

    async def _on_start(self, message: Message) -> None:
        self.status = int(message["status"])
        self.headers = [(bytes(k).lower(), bytes(v)) for k, v in message.get("headers", [])]
        config = self.middleware.config
        self.tags = tuple(dict.fromkeys(_tags(self.headers) + config.tags_for(self.request.path)))
        if not config.keep_tag_header and any(k in TAG_HEADERS for k, _ in self.headers):
            # The tag headers are for the cache: the client does not see them.
            self.headers = [(k, v) for k, v in self.headers if k not in TAG_HEADERS]
            message["headers"] = list(self.headers)
        if self.fallback is not None and self.status in policy.ERROR_STATUSES:
            # stale-if-error: the stale entry answers instead of this error.
            self.swallow = True
            return
        if self.revalidate is not None and self.status == 304:
            self.not_modified = True
            return
        if not self.store:
            self._add_status(message, stored=False, detail=self.detail)
            await self._send(message)
            return
        self.stored_at = time.time()
        decision = self._decide(self.status, self.headers, self.stored_at)
        if decision.store and message.get("trailers"):
            decision = policy.refuse("trailers")
        if decision.store and not entry_codec.is_sendable(self.headers):
            # A header no server could send again (a control character, a name that is not
            # a token, two Content-Lengths): stored, it would only ever be read as damaged.
            decision = policy.refuse("unsendable")
        # max_body_size bounds a whole entry: all it stores besides the body (headers, the
        # request values it varies on, as stored, and its tags) counts with the body.
        header_bytes = sum(len(k) + len(v) for k, v in self.headers)
        if decision.store:
            names, values = self._vary = self._varying(decision)
            if names:
                self._vary_record = vary_record(names, values)
                header_bytes += sum(len(n) + len(v or b"") for n, v in self._vary_record)
            if self.tags:
                header_bytes += sum(len(t) for t in self.tags)
        if decision.store and (
            header_bytes > config.max_body_size
            or _declared_length(self.headers) > config.max_body_size - header_bytes
        ):
            decision = policy.refuse("too-large")
        self.size = header_bytes
        self.decision = decision
        if not decision.store:
            self.middleware.cache.stats.not_stored[decision.reason] += 1
            if self.request.debug:
                self._log_not_stored(decision.reason)
            self._add_status(message, stored=False, detail=decision.reason)
            await self._send(message)
            return
        self.capturing = True
        self.start = message

    def _log_not_stored(self, reason: str) -> None:
        request = self.request
        logger.debug(
            "not stored (%s; fwd-status=%d): %s %r",
            reason,
            self.status,
            request.method,
            request.path,
        )

    def _add_status(self, message: Message, *, stored: bool, detail: str | None) -> None:
        headers = list(message.get("headers", []))
        headers.append((b"cache-status", self._cache_status(stored, detail)))
        message["headers"] = headers

    async def _release_start(self, *, stored: bool, detail: str | None) -> None:
        start, self.start = self.start, None
        assert start is not None
        self._add_status(start, stored=stored, detail=detail)
        await self._send(start)

    async def _on_body(self, message: Message) -> None:
        if self.capturing:
            body: bytes = message.get("body", b"")
            more = bool(message.get("more_body", False))
            self.size += len(body)
            if self.size > self.middleware.config.max_body_size:
                # Too large to keep: stop copying, forget what was kept.
                self.capturing = False
                self.chunks = []
                self.decision = policy.refuse("too-large")
                self.middleware.cache.stats.not_stored["too-large"] += 1
                if self.request.debug:
                    self._log_not_stored("too-large")
                if self.start is not None:
                    await self._release_start(stored=False, detail="too-large")
            else:
                self.chunks.append(body)
                if not more:
                    self.complete = True
                if self.start is not None:
                    if self.complete:
                        # Sent whole: store it before the client hears back (one round trip,
                        # bounded by the timeout), so that Cache-Status says what happened.
                        self.stored = await self._store()
                        detail = None if self.stored else "redis-error"
                        await self._release_start(stored=self.stored, detail=detail)
                    else:
                        # Streamed: whether it will be stored is known only at its end, so
                        # Cache-Status makes no claim.
                        await self._release_start(stored=False, detail=None)
        await self._send(message)

    def _entry(
        self,
        decision: policy.StoreDecision,
        body: bytes,
        names: tuple[str, ...],
        values: list[bytes | None] | None,
    ) -> CachedEntry:
        config = self.middleware.config
        headers = [(k, v) for k, v in self.headers if k not in HOP_BY_HOP]
        if self.status not in NO_BODY_STATUSES and not any(
            k == b"content-length" for k, _ in headers
        ):
            headers.append((b"content-length", str(len(body)).encode()))
        if config.add_etag and self.status == 200 and not any(k == b"etag" for k, _ in headers):
            headers.append(
                (b"etag", b'"' + hashlib.blake2b(body, digest_size=16).hexdigest().encode() + b'"')
            )
        return _stored_entry(
            decision,
            self.status,
            headers,
            body,
            self.stored_at,
            self.tags,
            self._vary_record or vary_record(names, values),
        )

    def _decide(self, status: int, headers: RawHeaders, now: float) -> policy.StoreDecision:
        """The policy's verdict on storing a response, with this middleware's options."""
        config = self.middleware.config
        return policy.decide_store(
            status,
            headers,
            now=now,
            default_ttl=self.default_ttl,
            cacheable_statuses=config.statuses,
            cache_set_cookie=config.cache_set_cookie,
            request_has_authorization=self.request.has_authorization,
            request_has_cookie=self.request.has_cookie,
            request_credentials=self.request.credentials,
            stale_while_revalidate=config.stale_while_revalidate,
            stale_if_error=config.stale_if_error,
            keep_for_revalidation=config.keep_for_revalidation,
            error_ttl=config.error_ttl,
        )

    def _varying(
        self, decision: policy.StoreDecision
    ) -> tuple[tuple[str, ...], list[bytes | None] | None]:
        """The request headers an entry is keyed on (the response's Vary and ``vary_on``),
        and this request's values of them."""
        names = tuple(sorted(set(decision.vary) | set(self.middleware.config.vary_on_names)))
        return names, self.request.values_for(names) if names else None

    async def _store(self) -> bool:
        decision = self.decision
        if decision is None or not decision.store:
            return False
        body = b"".join(self.chunks)
        self.chunks = []
        names, values = self._vary if self._vary is not None else self._varying(decision)
        return await self._put(self._entry(decision, body, names, values), decision, names, values)

    async def _put(
        self,
        entry: CachedEntry,
        decision: policy.StoreDecision,
        names: tuple[str, ...],
        values: list[bytes | None] | None,
    ) -> bool:
        """Store an entry with its indexes, releasing this request's fill lock; return
        whether Redis took it."""
        request = self.request
        middleware = self.middleware
        cache = middleware.cache
        found = request.found
        host: bytes | None = request.host_key
        if len(request.host) > MAX_INDEXED_HOST:
            host = None  # no real host is this long: keep it out of the index of hosts
        result = await guarded(
            cache,
            middleware.config.timeout,
            "store",
            lambda: cache.store(
                request.uhash,
                entry,
                ttl=decision.ttl,
                names=names,
                values=values,
                generation=found.generation if found is not None else None,
                found_names=found.names if found is not None else None,
                host=host,
                path=request.path,
                fill=self.fill,
            ),
        )
        if result is SKIPPED:
            return False
        cache.stats.stored += 1
        if request.debug:
            logger.debug(
                "stored (ttl=%d s, %d bytes%s): %s %r",
                int(decision.ttl),
                len(entry.body),
                f", vary={','.join(names)}" if names else "",
                request.method,
                request.path,
            )
        return True

    async def _release(self, *, refused: bool) -> None:
        assert self.fill is not None
        await self.middleware._release_lock(self.request, self.fill, refused=refused)

    async def _serve_fallback(self, why: str) -> None:
        entry = self.fallback
        assert entry is not None
        name = self.middleware.config.cache_name
        age = entry.age(time.time())
        status = f"{name}; hit; fwd=stale; fwd-status={why}; detail=stale-if-error"
        if why == "error":
            status = f"{name}; hit; fwd=stale; detail=stale-if-error"
        await replay(entry, age, self.request, status, self.send)

    async def _serve_revalidated(self) -> bool:
        """The app said 304 to our validators: store the entry again, its headers updated by
        the 304's and its freshness recomputed, and serve it; return whether it was stored.

        The refreshed entry takes the path of a fill (``cache.store``, with the stale
        entry's body): its tag and path indexes, the Vary marker and the variant set grow
        with its new TTL as on any store, so purges keep finding it, and the fill lock is
        released in the same script.
        """
        entry = self.revalidate
        assert entry is not None
        now = time.time()
        headers = policy.merge_not_modified(entry.headers, self.headers)
        decision = self._decide(entry.status, headers, now)
        names, values = self._varying(decision)
        # The tags the entry had and any the 304 names: a purge by either finds it.
        tags = tuple(dict.fromkeys(entry.tags + self.tags))[:MAX_TAGS]
        refreshed = _stored_entry(
            decision,
            entry.status,
            headers,
            entry.body,
            now,
            tags,
            vary_record(names, values),
        )
        stored = decision.store and await self._put(refreshed, decision, names, values)
        self.status = 304
        # Not stored: the policy's reason, or Redis refused or missed the write.
        detail = None if stored else decision.reason if not decision.store else "redis-error"
        status = self._cache_status(stored, detail).decode()
        await replay(refreshed, refreshed.age(now), self.request, status, self.send)
        return stored


#: A fill lock's owner renews it this many times per TTL (``LockRenewal``).
RENEWALS_PER_TTL = 3


class LockRenewal:
    """Keep the fill lock a forward owns alive for as long as its app call runs.

    The lock lives ``fill_lock_ttl`` seconds, well under ``coalesce_timeout``, so that the
    lock of an owner that died frees up long before its waiters give up. A live owner whose
    app is slower than that renews it every third of the TTL with a compare-token
    ``PEXPIRE`` (``RedisCache.renew_fill``), so that no waiter takes it over and calls the
    app again; a renewal that fails still leaves another before the lock would expire.

    Nothing runs in between: a timer waits, and only when it fires does a task send the
    renewal, so a fill quicker than a third of the TTL (most are) costs one timer and no
    Redis call. Each renewal is bounded by ``timeout`` and fails open (a failed one is tried
    again at the next tick: the lock may still be ours). The renewals end when ``stop`` is
    called, as the app call ends (it answered, raised, or was cancelled; a client that went away
    ends it when the app stops on ``http.disconnect`` or on its ``send`` raising); the store
    or release that follows is bounded by ``timeout``, under the two thirds of its TTL the
    lock has left.
    They also end when the lock is found not to be ours any more. A renewal whose timer
    fired but whose task had not run yet when ``stop`` was called sends nothing; one already
    sent is let finish: it only ever extends our own token, so it cannot
    keep a lock someone else holds, and a lock that was stored or released is gone.
    """

    __slots__ = ("_fill", "_handle", "_interval", "_loop", "_middleware", "_request", "_task")

    def __init__(self, middleware: CacheMiddleware, request: Request, fill: FillLock) -> None:
        self._middleware = middleware
        self._request = request
        self._fill = fill
        self._interval = middleware.config.fill_lock_ttl / RENEWALS_PER_TTL
        self._loop = asyncio.get_running_loop()
        self._task: asyncio.Task[None] | None = None
        self._handle: asyncio.TimerHandle | None = self._loop.call_later(self._interval, self._fire)

    def _fire(self) -> None:
        self._handle = None
        # Held here until it is done: the loop keeps only a weak reference to its tasks.
        self._task = self._loop.create_task(self._renew(self._loop.time()))

    async def _renew(self, fired: float) -> None:
        if not self._interval:
            # Stopped after the timer fired but before this task ran: send nothing.
            self._task = None
            return
        kept = await self._middleware._renew_lock(self._request, self._fill)
        self._task = None
        if kept is not False and self._interval:
            self._handle = self._loop.call_at(fired + self._interval, self._fire)

    def stop(self) -> None:
        """Renew no more (a renewal under way finishes, and schedules nothing)."""
        self._interval = 0.0
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


#: A varying request header's value is kept whole only up to this many bytes in an entry
#: (it is there for ``inspect``; the key holds its digest): a 60 KB ``User-Agent`` must not
#: make a 500-byte page cost 60 KB of Redis for its whole TTL.
MAX_VARY_VALUE = 256


def vary_record(
    names: tuple[str, ...], values: list[bytes | None] | None
) -> tuple[tuple[str, bytes | None], ...]:
    """Return the request values an entry varies on as stored: each bounded to
    ``MAX_VARY_VALUE`` bytes, a longer one cut and marked with its full length."""
    record: list[tuple[str, bytes | None]] = []
    for name, value in zip(names, values or (), strict=True):
        if value is not None and len(value) > MAX_VARY_VALUE:
            value = value[:MAX_VARY_VALUE] + f"...[{len(value)} bytes]".encode()
        record.append((name, value))
    return tuple(record)


def _stored_entry(
    decision: policy.StoreDecision,
    status: int,
    headers: RawHeaders,
    body: bytes,
    stored_at: float,
    tags: tuple[str, ...],
    request_vary: tuple[tuple[str, bytes | None], ...],
) -> CachedEntry:
    """The entry to store for a response, with the freshness the policy decided."""
    return CachedEntry(
        status=status,
        headers=headers,
        body=body,
        stored_at=stored_at,
        fresh_for=decision.fresh_for,
        stale_for=decision.stale_for,
        initial_age=decision.initial_age,
        stale_while_revalidate=decision.stale_while_revalidate,
        stale_if_error=decision.stale_if_error,
        shared_with_auth=decision.shared_with_auth,
        tags=tags,
        request_vary=request_vary,
    )


async def discard(message: Message) -> None:
    """A ``send`` for background refreshes: the response goes only to the cache."""


def empty_receive() -> Receive:
    """Return a ``receive`` that gives an empty body, then waits until cancelled."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        import asyncio

        await asyncio.Event().wait()
        return {"type": "http.disconnect"}  # pragma: no cover - never reached

    return receive


def _with_validators(scope: Scope, entry: CachedEntry) -> Scope:
    """Return a copy of the scope that asks the app whether the entry is still current."""
    etag, last_modified = policy.get_validators(entry.headers)
    headers = [
        (k, v) for k, v in scope["headers"] if k not in (b"if-none-match", b"if-modified-since")
    ]
    if etag is not None:
        headers.append((b"if-none-match", etag))
    if last_modified is not None:
        headers.append((b"if-modified-since", last_modified))
    return {**scope, "headers": headers}


def has_validators(entry: CachedEntry) -> bool:
    """Return whether the entry can be revalidated (it has an ETag or Last-Modified)."""
    etag, last_modified = policy.get_validators(entry.headers)
    return etag is not None or last_modified is not None


def _tags(headers: RawHeaders) -> tuple[str, ...]:
    """Return the tags named by the response's Surrogate-Key and Cache-Tag headers."""
    tags: list[str] = []
    for name, value in headers:
        if name in TAG_HEADERS:
            text = value.decode("latin-1")
            separator = TAG_HEADERS[name]
            parts = text.split(separator) if separator else text.split()
            tags += [t.strip() for t in parts if t.strip() and len(t.strip()) <= MAX_TAG_LENGTH]
    unique = tuple(dict.fromkeys(tags))
    if len(unique) > MAX_TAGS:
        logger.debug("only the first %d of %d tags are kept", MAX_TAGS, len(unique))
    return unique[:MAX_TAGS]


def _declared_length(headers: RawHeaders) -> int:
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


class Invalidate:
    """Run an unsafe request; if it succeeds (2xx, 3xx), purge the cached GET of its URL and
    (unless ``invalidate_locations`` is off: an open redirect would let anyone evict any
    URL of the host) of ``Location`` / ``Content-Location`` on the same host, before the
    client hears back,
    so that the client's next read sees the change (RFC 9111 4.4). The cache's ``on_purge``
    hook hears of it in a task of its own: the response waits for the purge, not the hook."""

    def __init__(self, middleware: CacheMiddleware, scope: Scope) -> None:
        self.middleware = middleware
        self.scope = scope

    async def run(self, receive: Receive, send: Send) -> None:
        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start" and 200 <= message["status"] < 400:
                await self._purge(message.get("headers", []))
            await send(message)

        await self.middleware.app(self.scope, receive, send_wrapper)

    async def _purge(self, response_headers: RawHeaders) -> None:
        scope = self.scope
        cache = self.middleware.cache
        scheme = scope.get("scheme", "http")
        host = b"\x00".join(v for k, v in scope["headers"] if k == b"host")  # as Request does
        targets = [(scope["path"], scope.get("query_string", b""))]
        locations = self.middleware.config.invalidate_locations
        for key, value in response_headers if locations else ():
            if bytes(key).lower() in (b"location", b"content-location"):
                target = _same_host_target(bytes(value), scheme, host)
                if target is not None:
                    targets.append(target)
        uhashes = [cache.url_hash(scheme, host, path, query) for path, query in targets]
        removed = await guarded(
            cache,
            self.middleware.config.timeout,
            "invalidation",
            lambda: cache.purge_hashes(uhashes),
        )
        count = None if isinstance(removed, Skipped) else removed
        if count is not None:
            cache.stats.invalidated += count
        if logger.isEnabledFor(DEBUG):
            logger.debug(
                "invalidated (%s): %s %r purged %s",
                "redis-error" if count is None else f"{count} removed",
                scope["method"],
                scope["path"],
                ", ".join(repr(path) for path, _ in targets),
            )
        if cache.has_purge_hook:
            # The hook runs behind the response; the URLs changed even when Redis failed.
            urls = tuple(dict.fromkeys(_absolute(scheme, host, p, q) for p, q in targets))
            cache.notify_soon(PurgeEvent("invalidate", urls, count))


def _absolute(scheme: str, host: bytes, path: str, query: bytes) -> str:
    """Return the absolute URL of a request target, as ``RedisCache.purge_url`` takes it."""
    url = f"{scheme}://{host.decode('latin-1')}{quote(path, safe=URL_PATH_SAFE)}"
    return f"{url}?{query.decode('latin-1')}" if query else url


def _same_host_target(value: bytes, scheme: str, host: bytes) -> tuple[str, bytes] | None:
    """Return ``(path, query)`` of a Location-like value on the request's host, else None."""
    parts = urlsplit(value.decode("latin-1").strip())
    if parts.scheme or parts.netloc:
        if parts.scheme not in ("", scheme):
            return None
        if normalise_host(parts.netloc.encode("latin-1"), scheme) != normalise_host(host, scheme):
            return None
    if not parts.path.startswith("/"):
        return None  # relative references other than absolute paths are not resolved
    return unquote(parts.path), parts.query.encode("latin-1")
