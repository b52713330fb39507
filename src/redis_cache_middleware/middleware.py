"""``CacheMiddleware``: the ASGI shell that answers from Redis before the app runs.

One request flows one way::

    scope -> admit? -> key -> lookup -> usable entry ----------> replay (Age, Cache-Status)
      |                         |
      |                         +-> miss, stale, vary-miss -> app -> capture -> decide -> store
      +-> not http, not GET/HEAD, excluded -> app untouched

The decisions are made by ``policy`` (pure); Redis is reached only through ``RedisCache``.
Every Redis call is bounded by ``timeout``, and any failure there (error, timeout, garbage)
sends the request to the app as if there were no cache: the cache never causes a 500.
"""

from __future__ import annotations

import hmac
import sys
import time
from collections.abc import Collection, Mapping, Sequence
from urllib.parse import unquote, urlsplit

from . import policy
from ._types import ASGIApp, Message, RawHeaders, Receive, Scope, Send
from .cache import Lookup, RedisCache
from .config import (
    DEFAULT_CACHE_NAME,
    DEFAULT_MAX_BODY_SIZE,
    DEFAULT_TIMEOUT,
    MAX_TAG_LENGTH,
    MAX_TAGS,
    CacheConfig,
    Pattern,
)
from .entry import CachedEntry
from .exceptions import ConfigError
from .keys import normalise_host
from .stats import RateLimitedWarning, logger

if sys.version_info >= (3, 11):
    from asyncio import timeout as _timeout
else:  # pragma: no cover - Python 3.10
    from async_timeout import timeout as _timeout

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

_NO_BODY_STATUSES = frozenset({204, 304})

#: Methods whose success invalidates the cached GET of their URL (RFC 9111 4.4).
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

#: Response headers that carry surrogate keys (tags): name -> separator (None: whitespace).
TAG_HEADERS = {b"surrogate-key": None, b"cache-tag": ","}

_warn = RateLimitedWarning()


class CacheMiddleware:
    """Serve GET and HEAD responses from a shared Redis cache; see the README for options."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        cache: RedisCache,
        default_ttl: float | None = None,
        rules: Mapping[Pattern, float | None] | None = None,
        exclude: Sequence[Pattern] = (),
        vary_on: Sequence[str] = (),
        ignore_query_params: Sequence[str] = (),
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
        cacheable_statuses: Collection[int] = policy.HEURISTIC_STATUSES,
        cache_set_cookie: bool = False,
        bypass_header: str | None = None,
        bypass_token: str | None = None,
        honour_request_cache_control: bool = True,
        cache_name: str = DEFAULT_CACHE_NAME,
        timeout: float = DEFAULT_TIMEOUT,
        tag_rules: Mapping[Pattern, Sequence[str]] | None = None,
        keep_tag_header: bool = False,
        invalidate_on_unsafe: bool = True,
    ) -> None:
        if not isinstance(cache, RedisCache):
            raise ConfigError(f"cache must be a RedisCache; got {type(cache).__name__}")
        self.app = app
        self.cache = cache
        self.config = CacheConfig(
            default_ttl=default_ttl,
            rules=rules if rules is not None else {},
            exclude=exclude,
            vary_on=vary_on,
            ignore_query_params=ignore_query_params,
            max_body_size=max_body_size,
            cacheable_statuses=cacheable_statuses,
            cache_set_cookie=cache_set_cookie,
            bypass_header=bypass_header,
            bypass_token=bypass_token,
            honour_request_cache_control=honour_request_cache_control,
            cache_name=cache_name,
            timeout=timeout,
            tag_rules=tag_rules if tag_rules is not None else {},
            keep_tag_header=keep_tag_header,
            invalidate_on_unsafe=invalidate_on_unsafe,
        )
        if ignore_query_params:
            cache.ignore_query_params(list(ignore_query_params))
        self._vary_guess = self.config.vary_on_names or None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        if method != "GET" and method != "HEAD":
            if method in UNSAFE_METHODS and self.config.invalidate_on_unsafe:
                await _Invalidate(self, scope).run(receive, send)
            else:
                await self.app(scope, receive, send)
            return
        config = self.config
        path: str = scope["path"]
        if config.exclude_matchers and config.is_excluded(path):
            await self.app(scope, receive, send)
            return
        request = _Request(scope, config.bypass_header_bytes)
        name = config.cache_name
        ruled, rule_ttl = config.rule_for(path) if config.rule_matchers else (False, None)
        if ruled and rule_ttl is None:
            # A rule says never cache this path.
            await _Forward(self, request, fwd="bypass", detail="rule", store=False).run(
                scope, receive, send
            )
            return
        default_ttl = rule_ttl if ruled else config.default_ttl
        cache = self.cache
        stats = cache.stats
        request.uhash = uhash = cache.url_hash(
            scope.get("scheme", "http"),
            request.host,
            path,
            scope.get("query_string", b""),
        )
        if request.bypass_value is not None and self._bypass_allowed(request.bypass_value):
            # Skip the lookup; the response refreshes the entry.
            stats.bypass += 1
            await _Forward(self, request, fwd="bypass", default_ttl=default_ttl).run(
                scope, receive, send
            )
            return
        directives = (
            policy.parse_request(request.cache_control, request.pragma)
            if config.honour_request_cache_control and (request.cache_control or request.pragma)
            else policy.NO_DIRECTIVES
        )
        if directives.no_store or directives.no_cache:
            # The client asked us not to answer from the cache.
            stats.bypass += 1
            await _Forward(
                self,
                request,
                fwd="request",
                store=not directives.no_store,
                default_ttl=default_ttl,
            ).run(scope, receive, send)
            return
        found: Lookup | None = None
        request.started = time.perf_counter()
        try:
            async with _timeout(config.timeout):
                found = await cache.lookup(uhash, request.values_for, self._vary_guess)
        except Exception as exc:
            stats.redis_error += 1
            _warn("lookup", "redis-cache lookup failed, serving from the app", exc)
        if found is None:
            await _Forward(self, request, fwd="miss", detail="redis-error", store=False).run(
                scope, receive, send
            )
            return
        request.found = found
        fwd = "uri-miss" if found.state in ("uri-miss", "corrupt") else found.state
        entry = found.entry
        if entry is not None:
            now = time.time()
            age = entry.age(now)
            usable = policy.check_usable(entry.fresh_for, age, directives)
            if usable.usable and request.has_authorization and not entry.shared_with_auth:
                usable = policy.Usability(usable=False, reason="authorization")
            if usable.usable:
                stats.hit += 1
                await _replay(entry, age, method, name, send)
                stats.hit_seconds += time.perf_counter() - request.started
                return
            fwd = "stale" if usable.reason != "authorization" else "miss"
        if directives.only_if_cached:
            # RFC 9111 5.2.1.7: nothing usable, and the client will not wait for the origin.
            await send(
                {
                    "type": "http.response.start",
                    "status": 504,
                    "headers": [
                        (b"content-length", b"0"),
                        (
                            b"cache-status",
                            f"{name}; fwd={fwd}; detail=only-if-cached".encode(),
                        ),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": b""})
            return
        if fwd == "stale":
            stats.stale += 1
        else:
            stats.miss += 1
        await _Forward(self, request, fwd=fwd, default_ttl=default_ttl).run(scope, receive, send)

    def _bypass_allowed(self, value: bytes) -> bool:
        token = self.config.bypass_token
        if token is None:
            return True
        return hmac.compare_digest(value.strip(), token.encode())


class _Request:
    """What the middleware needs from the request headers, read in one pass."""

    __slots__ = (
        "bypass_value",
        "cache_control",
        "found",
        "has_authorization",
        "headers",
        "host",
        "method",
        "path",
        "pragma",
        "scheme",
        "started",
        "uhash",
    )

    def __init__(self, scope: Scope, bypass_header: bytes | None) -> None:
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.scheme: str = scope.get("scheme", "http")
        self.started = 0.0
        self.headers: RawHeaders = scope["headers"]
        self.host = b""
        self.cache_control: list[bytes] = []
        self.pragma: list[bytes] = []
        self.has_authorization = False
        self.bypass_value: bytes | None = None
        self.uhash: str | None = None
        self.found: Lookup | None = None
        for key, value in self.headers:
            if key == b"host":
                self.host = value
            elif key == b"cache-control":
                self.cache_control.append(value)
            elif key == b"pragma":
                self.pragma.append(value)
            elif key == b"authorization":
                self.has_authorization = True
            elif key == bypass_header:
                self.bypass_value = value

    @property
    def host_key(self) -> bytes:
        """Return the host as keys use it: lowercase, without the scheme's default port."""
        return normalise_host(self.host, self.scheme)

    def values_for(self, names: tuple[str, ...]) -> list[bytes | None]:
        """Return the request's value of each named header: repeats joined, None if absent."""
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
        return [None if v is None else b", ".join(v) for v in found]


async def _replay(entry: CachedEntry, age: float, method: str, name: str, send: Send) -> None:
    """Send a stored response: its headers as stored, plus ``Age`` and ``Cache-Status``."""
    age_seconds = int(age)
    ttl = int(entry.fresh_for) - age_seconds
    headers = list(entry.headers)
    headers.append((b"age", str(age_seconds).encode()))
    headers.append((b"cache-status", f"{name}; hit; ttl={ttl}".encode()))
    await send({"type": "http.response.start", "status": entry.status, "headers": headers})
    body = b"" if method == "HEAD" else entry.body
    await send({"type": "http.response.body", "body": body})


class _Forward:
    """Send one request to the app, pass its response through, and store a copy if allowed.

    The client gets each chunk as soon as the app sends it. ``http.response.start`` is held
    until the first body message, so that a response sent whole (the common case) can say
    truthfully in ``Cache-Status`` whether it was stored.
    """

    def __init__(
        self,
        middleware: CacheMiddleware,
        request: _Request,
        *,
        fwd: str,
        detail: str | None = None,
        store: bool = True,
        default_ttl: float | None = None,
    ) -> None:
        self.middleware = middleware
        self.request = request
        self.fwd = fwd
        self.detail = detail
        self.store = store and request.method == "GET"
        if store and request.method == "HEAD" and detail is None:
            self.detail = "head"
        self.default_ttl = default_ttl
        self.decision: policy.StoreDecision | None = None
        self.start: Message | None = None
        self.status = 0
        self.headers: RawHeaders = []
        self.chunks: list[bytes] = []
        self.size = 0
        self.capturing = False
        self.complete = False
        self.stored_at = 0.0
        self.tags: tuple[str, ...] = ()

    async def run(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.send = send
        await self.middleware.app(scope, receive, self.send_wrapper)
        if self.capturing and self.complete:
            await self._store()

    def _cache_status(self, stored: bool, detail: str | None) -> bytes:
        value = f"{self.middleware.config.cache_name}; fwd={self.fwd}; fwd-status={self.status}"
        if stored:
            value += "; stored"
        elif detail:
            value += f"; detail={detail}"
        return value.encode()

    async def send_wrapper(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            await self._on_start(message)
        elif kind == "http.response.body":
            await self._on_body(message)
        else:
            # Trailers, pathsend or anything else we cannot copy: pass it on, store nothing.
            self.capturing = False
            self.chunks = []
            if self.start is not None:
                await self._release(stored=False, detail="uncapturable")
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
        if not self.store:
            self._add_status(message, stored=False, detail=self.detail)
            await self.send(message)
            return
        self.stored_at = time.time()
        decision = policy.decide_store(
            self.status,
            self.headers,
            now=self.stored_at,
            default_ttl=self.default_ttl,
            cacheable_statuses=config.statuses,
            cache_set_cookie=config.cache_set_cookie,
            request_has_authorization=self.request.has_authorization,
        )
        self.decision = decision
        if decision.store and message.get("trailers"):
            decision = policy.refuse("trailers")
        if decision.store and _declared_length(self.headers) > config.max_body_size:
            decision = policy.refuse("too-large")
        if not decision.store:
            stats = self.middleware.cache.stats
            stats.not_stored[decision.reason] += 1
            logger.debug("not stored (%s): %s", decision.reason, self.request.uhash)
            self._add_status(message, stored=False, detail=decision.reason)
            await self.send(message)
            return
        self.capturing = True
        self.start = message

    def _add_status(self, message: Message, *, stored: bool, detail: str | None) -> None:
        headers = list(message.get("headers", []))
        headers.append((b"cache-status", self._cache_status(stored, detail)))
        message["headers"] = headers

    async def _release(self, *, stored: bool, detail: str | None) -> None:
        start, self.start = self.start, None
        assert start is not None
        self._add_status(start, stored=stored, detail=detail)
        await self.send(start)

    async def _on_body(self, message: Message) -> None:
        if self.capturing:
            body: bytes = message.get("body", b"")
            more = bool(message.get("more_body", False))
            self.size += len(body)
            if self.size > self.middleware.config.max_body_size:
                # Too large to keep: stop copying, forget what was kept.
                self.capturing = False
                self.chunks = []
                self.middleware.cache.stats.not_stored["too-large"] += 1
                if self.start is not None:
                    await self._release(stored=False, detail="too-large")
            else:
                self.chunks.append(body)
                if not more:
                    self.complete = True
                if self.start is not None:
                    # Sent whole: we know now that it will be stored. Streamed: we cannot
                    # know yet, so Cache-Status makes no claim.
                    await self._release(stored=self.complete, detail=None)
        await self.send(message)

    async def _store(self) -> None:
        decision = self.decision
        request = self.request
        if decision is None or request.uhash is None:
            return
        middleware = self.middleware
        cache = middleware.cache
        body = b"".join(self.chunks)
        self.chunks = []
        headers = [(k, v) for k, v in self.headers if k not in HOP_BY_HOP]
        if self.status not in _NO_BODY_STATUSES and not any(
            k == b"content-length" for k, _ in headers
        ):
            headers.append((b"content-length", str(len(body)).encode()))
        names = tuple(sorted(set(decision.vary) | set(middleware.config.vary_on_names)))
        values = request.values_for(names) if names else None
        entry = CachedEntry(
            status=self.status,
            headers=headers,
            body=body,
            stored_at=self.stored_at,
            fresh_for=decision.fresh_for,
            stale_for=decision.stale_for,
            initial_age=decision.initial_age,
            shared_with_auth=decision.shared_with_auth,
            tags=self.tags,
            request_vary=tuple(zip(names, values or (), strict=True)),
        )
        found = request.found
        try:
            async with _timeout(middleware.config.timeout):
                await cache.store(
                    request.uhash,
                    entry,
                    ttl=decision.ttl,
                    names=names,
                    values=values,
                    generation=found.generation if found is not None else None,
                    found_names=found.names if found is not None else None,
                    host=request.host_key,
                    path=request.path,
                )
        except Exception as exc:
            cache.stats.redis_error += 1
            _warn("store", "redis-cache store failed, response not cached", exc)
            return
        cache.stats.stored += 1


def _tags(headers: RawHeaders) -> tuple[str, ...]:
    """Return the tags named by the response's Surrogate-Key and Cache-Tag headers."""
    tags: list[str] = []
    for name, value in headers:
        if name in TAG_HEADERS:
            text = value.decode("latin-1")
            parts = text.split(TAG_HEADERS[name]) if TAG_HEADERS[name] else text.split()
            tags += [t.strip() for t in parts if t.strip() and len(t.strip()) <= MAX_TAG_LENGTH]
    unique = tuple(dict.fromkeys(tags))
    if len(unique) > MAX_TAGS:
        logger.debug("only the first %d of %d tags are kept", MAX_TAGS, len(unique))
    return unique[:MAX_TAGS]


class _Invalidate:
    """Run an unsafe request; if it succeeds (2xx, 3xx), purge the cached GET of its URL and
    of ``Location`` / ``Content-Location`` on the same host, before the client hears back,
    so that the client's next read sees the change (RFC 9111 4.4)."""

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
        host = b""
        for key, value in scope["headers"]:
            if key == b"host":
                host = value
        uhashes = [cache.url_hash(scheme, host, scope["path"], scope.get("query_string", b""))]
        for key, value in response_headers:
            if bytes(key).lower() in (b"location", b"content-location"):
                target = _same_host_target(bytes(value), scheme, host)
                if target is not None:
                    uhashes.append(cache.url_hash(scheme, host, target[0], target[1]))
        try:
            async with _timeout(self.middleware.config.timeout):
                removed = await cache.purge_hashes(uhashes)
        except Exception as exc:
            cache.stats.redis_error += 1
            _warn("invalidate", "redis-cache invalidation failed", exc)
            return
        cache.stats.invalidated += removed


def _same_host_target(value: bytes, scheme: str, host: bytes) -> tuple[str, bytes] | None:
    """Return ``(path, query)`` of a Location-like value on the request's host, else None."""
    try:
        text = value.decode("latin-1").strip()
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes anything
        return None
    parts = urlsplit(text)
    if parts.scheme or parts.netloc:
        if parts.scheme not in ("", scheme):
            return None
        if normalise_host(parts.netloc.encode("latin-1"), scheme) != normalise_host(host, scheme):
            return None
    if not parts.path.startswith("/"):
        if parts.path:
            return None  # relative references other than absolute paths are not resolved
        return None
    return unquote(parts.path), parts.query.encode("latin-1")


def _declared_length(headers: RawHeaders) -> int:
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return 0
    return 0
