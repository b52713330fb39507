"""``CacheMiddleware``: the ASGI shell that answers from Redis before the app runs.

One request flows one way, each step in a module of its own::

    scope -> admit (admit.py) -> look up (lookups.py) -> fresh ------------> serve (respond.py)
      |        |                                    +-> stale-while-revalidate: serve + refresh
      |        |                                    |                            (refresh.py)
      |        |                                    +-> miss / stale -> fill or wait for a fill
      |        |                                          (coalesce.py) -> app -> capture ->
      |        |                                          store (forward.py, storing.py)
      |        +-> rule says never, bypass header, client no-store/no-cache -> forward
      +-> not http; purge endpoint (purge.py); unsafe methods invalidate (invalidate.py);
          excluded paths and GETs with a body: the app, untouched

The decisions are made by ``policy`` (pure); Redis is reached only through ``RedisCache``,
and every call to it through ``guarded``: bounded by ``timeout``, and any failure there
(error, timeout, garbage) sends the request to the app as if there were no cache: the cache
never causes a 500.
"""

from __future__ import annotations

import gc
import inspect
import time
from collections.abc import Collection, Mapping, Sequence

from . import policy
from ._types import ASGIApp, Message, Receive, Scope, Send
from .admit import Request, Route, admit
from .background import BackgroundTasks
from .cache import FillLock, Lookup, RedisCache, new_token
from .coalesce import Coalescer, Miss
from .config import (
    DEFAULT_CACHE_NAME,
    DEFAULT_COALESCE_TIMEOUT,
    DEFAULT_ERROR_TTL,
    DEFAULT_HIT_FOR_PASS_TTL,
    DEFAULT_KEEP_FOR_REVALIDATION,
    DEFAULT_MAX_BACKGROUND_REFRESHES,
    DEFAULT_MAX_BODY_SIZE,
    DEFAULT_PURGE_PATH,
    DEFAULT_SHUTDOWN_TIMEOUT,
    DEFAULT_TARGETED_CACHE_CONTROL,
    DEFAULT_TIMEOUT,
    CacheConfig,
    Pattern,
    check_option_names,
)
from .context import Context
from .entry import CachedEntry
from .exceptions import ConfigError
from .fill_lock import LockCalls
from .forward import Forward
from .invalidate import Invalidate, invalidates
from .lookups import Lookups, usable
from .purge import PurgeEndpoint, is_purge_request
from .refresh import Refresher
from .respond import hit_status, refuse_only_if_cached, replay, replay_range
from .stats import logger


class _ConstructorSignature:
    """``CacheMiddleware.__signature__``: what ``inspect.signature`` shows of the class is its
    ``__init__``'s options, not the catch-all of ``__new__``; an instance has none of its own
    (None: ``inspect`` reads its ``__call__``)."""

    def __get__(self, instance: object, owner: type[CacheMiddleware]) -> inspect.Signature | None:
        if instance is not None:
            return None
        init = inspect.signature(owner.__init__)
        return init.replace(parameters=list(init.parameters.values())[1:])


class CacheMiddleware:
    """Serve GET and HEAD responses from a shared Redis cache; see the README for options."""

    __signature__ = _ConstructorSignature()

    def __new__(cls, *args: object, **options: object) -> CacheMiddleware:
        """Name a misspelt option (and the nearest real one) with a ``ConfigError`` before
        ``__init__`` would raise a bare ``TypeError``: ``add_middleware`` only keeps the
        options, and Starlette builds the middleware at the first request. Type checkers
        read ``__init__``'s keywords and refuse the misspelling before that."""
        taken = _options_of(cls)
        if taken is not None:
            names, required = taken
            check_option_names(cls.__name__, options, names)
            for name in sorted(required - options.keys()):
                what = " (the RedisCache to use)" if name == "cache" else ""
                raise ConfigError(f"{name}: a required option{what}")
        return super().__new__(cls)

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
        host_aliases: Mapping[str, str] | None = None,
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
        purge_token: str | None = None,
        purge_path: str = DEFAULT_PURGE_PATH,
        stale_while_revalidate: float = 0.0,
        stale_if_error: float = 0.0,
        stale_on_error_grace: float = 0.0,
        keep_for_revalidation: float = DEFAULT_KEEP_FOR_REVALIDATION,
        add_etag: bool = False,
        coalesce: bool = True,
        coalesce_timeout: float = DEFAULT_COALESCE_TIMEOUT,
        hit_for_pass_ttl: float = DEFAULT_HIT_FOR_PASS_TTL,
        max_background_refreshes: int = DEFAULT_MAX_BACKGROUND_REFRESHES,
        shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
        share_cookie_requests: bool = False,
        ignore_cookies: Sequence[str] = (),
        credential_headers: Sequence[str] = (),
        error_ttl: float | None = DEFAULT_ERROR_TTL,
        invalidate_locations: bool = True,
        targeted_cache_control: Sequence[str] = DEFAULT_TARGETED_CACHE_CONTROL,
        heuristic_freshness: bool = False,
        heuristic_fraction: float = policy.DEFAULT_HEURISTIC_FRACTION,
        heuristic_max_ttl: float = policy.DEFAULT_HEURISTIC_MAX_TTL,
        freeze_gc: bool = True,
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
            host_aliases=host_aliases if host_aliases is not None else {},
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
            purge_token=purge_token,
            purge_path=purge_path,
            stale_while_revalidate=stale_while_revalidate,
            stale_if_error=stale_if_error,
            stale_on_error_grace=stale_on_error_grace,
            keep_for_revalidation=keep_for_revalidation,
            add_etag=add_etag,
            coalesce=coalesce,
            coalesce_timeout=coalesce_timeout,
            hit_for_pass_ttl=hit_for_pass_ttl,
            max_background_refreshes=max_background_refreshes,
            shutdown_timeout=shutdown_timeout,
            share_cookie_requests=share_cookie_requests,
            ignore_cookies=ignore_cookies,
            credential_headers=credential_headers,
            error_ttl=error_ttl,
            invalidate_locations=invalidate_locations,
            targeted_cache_control=targeted_cache_control,
            heuristic_freshness=heuristic_freshness,
            heuristic_fraction=heuristic_fraction,
            heuristic_max_ttl=heuristic_max_ttl,
            freeze_gc=freeze_gc,
        )
        if ignore_query_params:
            cache.ignore_query_params(list(ignore_query_params))
        if host_aliases:
            cache.alias_hosts(host_aliases)
        self._purge_endpoint: ASGIApp | None = None
        if purge_token is not None:
            self._purge_endpoint = PurgeEndpoint(cache, token=purge_token)
        #: What every request's pieces share: app, cache, options, clock, fill locks.
        self.context = Context(app, cache, self.config, LockCalls(cache, self.config))
        self.lookups = Lookups(cache, self.config)
        self.coalescer = Coalescer(self.context, self.lookups)
        self.background = BackgroundTasks(self.config.max_background_refreshes)
        self.refresher = Refresher(self.context, self.lookups, self.background)
        cache.track_background(self.background, self.config.shutdown_timeout)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._not_http(scope, receive, send)
            return
        method = scope["method"]
        if self._purge_endpoint is not None and is_purge_request(scope, self.config.purge_path):
            await self._purge_endpoint(scope, receive, send)
            return
        if method != "GET" and method != "HEAD":
            await self._other_method(scope, receive, send)
            return
        request = admit(scope, self.config, self.cache)
        if request is None:
            await self.app(scope, receive, send)  # excluded, or a body no key holds
        elif request.route is Route.LOOK_UP:
            await self._look_up(request, receive, send)
        else:
            await self._pass(request, receive, send)

    async def _look_up(self, request: Request, receive: Receive, send: Send) -> None:
        """Look the request up; serve what is usable, else fill (or follow a fill)."""
        started = time.perf_counter()
        fill = (
            FillLock(variant="", token=new_token())
            if self.config.coalesce
            and not request.directives.only_if_cached
            and not request.private
            else None
        )
        found, lock = await self.lookups.find(request, fill)
        if found is None:
            forward = Forward(self.context, request, fwd="miss", detail="redis-error", store=False)
            await forward.run(request.scope, receive, send)
            return
        fwd = "uri-miss" if found.state in ("uri-miss", "corrupt") else found.state
        entry = found.entry
        stale: CachedEntry | None = None
        if entry is not None:
            age = entry.age(self.context.clock())
            verdict = usable(request, found, entry, age)
            if verdict.usable:
                status = self._hit(request, found, entry, age, verdict.stale)
                if request.range is None:
                    await replay(entry, age, request, status, send)
                else:
                    await replay_range(entry, age, request, status, send)
                self.cache.stats.hit_seconds += time.perf_counter() - started
                return
            if verdict.reason in policy.REQUEST_REFUSALS:
                fwd = "miss"
            else:
                fwd = "stale"
                stale = entry
        if request.directives.only_if_cached:
            # RFC 9111 5.2.1.7: nothing usable, and the client will not wait for the origin.
            await refuse_only_if_cached(self.config.cache_name, fwd, send)
            return
        if fwd == "stale":
            # Counted once here, whatever the app answers (a stale-if-error answer included).
            self.cache.stats.stale += 1
        else:
            self.cache.stats.miss += 1
        tried = (fill, lock) if fill is not None and lock is not None else None
        await Miss(self.coalescer, request, found, receive, send, fwd, stale).run(tried)

    def _hit(
        self, request: Request, found: Lookup, entry: CachedEntry, age: float, stale: bool
    ) -> str:
        """Count a hit, fresh or within stale-while-revalidate (then refreshed behind the
        response), and return its ``Cache-Status``. Its time goes to ``hit_seconds``, so
        that the two describe the same answers."""
        name = self.config.cache_name
        near = "; detail=near" if found.near else ""
        if stale:
            self.refresher.refresh_later(request, found, entry)
            status = hit_status(name, entry, age, "; fwd=stale" + near)
        else:
            status = hit_status(name, entry, age, near)
        self.cache.stats.hit += 1
        if request.debug:
            kind = "stale hit" if stale else "hit"
            logger.debug("%s (%s): %s %r", kind, status, request.method, request.path)
        return status

    async def _pass(self, request: Request, receive: Receive, send: Send) -> None:
        """Forward a request past the cache: a rule that never caches its path, the bypass
        header (its answer refreshes the entry), or the client's ``no-store`` /
        ``no-cache``."""
        route = request.route
        scope = request.scope
        if route is Route.NEVER:
            forward = Forward(self.context, request, fwd="bypass", detail="rule", store=False)
            await forward.run(scope, receive, send)
            return
        self.cache.stats.bypass += 1
        if route is Route.BYPASS:
            await Forward(self.context, request, fwd="bypass").run(scope, receive, send)
        elif route is Route.RELOAD:
            await self.coalescer.refill(request, receive, send)
        else:
            # Forwarded alone. no-store: nothing of this request's exchange may be stored
            # (RFC 9111 5.2.1.5), so it fills nothing (nor waits for a fill).
            store = not request.directives.no_store
            await Forward(self.context, request, fwd="request", store=store).run(
                scope, receive, send
            )

    async def _other_method(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Methods other than GET and HEAD go to the app; those not known to be safe (all
        but OPTIONS and TRACE) invalidate when they succeed."""
        if self.config.invalidate_on_unsafe and invalidates(scope["method"]):
            await Invalidate(self.context, scope).run(receive, send)
        else:
            await self.app(scope, receive, send)

    async def _not_http(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Lifespan (connect at startup, drain refreshes at shutdown); websockets pass."""
        if scope["type"] == "lifespan":
            await self.app(scope, self._lifespan_receive(receive), self._lifespan_send(send))
        else:
            await self.app(scope, receive, send)

    def _lifespan_send(self, send: Send) -> Send:
        async def wrapped(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete" and self.config.freeze_gc:
                freeze_startup_heap()
            await send(message)

        return wrapped

    def _lifespan_receive(self, receive: Receive) -> Receive:
        async def wrapped() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup":
                # Connect (and on a cluster, learn the slot map) before the first request.
                await self.cache.warm_up()
            elif message["type"] == "lifespan.shutdown":
                # Let refreshes in flight finish (or cancel them) before the app shuts down.
                await self.background.drain(self.config.shutdown_timeout)
            return message

        return wrapped


def _options_of(cls: type[CacheMiddleware]) -> tuple[frozenset[str], frozenset[str]] | None:
    """Return the keywords a middleware class takes (the app and its options) and those it
    requires; None when its ``__init__`` takes any keyword (a subclass's ``**kwargs``)."""
    parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    required = (
        p.name
        for p in parameters
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is inspect.Parameter.empty
    )
    return frozenset(p.name for p in parameters), frozenset(required)


#: Whether this process froze its startup heap (``freeze_startup_heap``).
_frozen = False


def freeze_startup_heap() -> None:
    """Once a process, when the app has started: collect, then move every object alive now
    (the app's modules, routes, models: what lives as long as the process) out of the
    garbage collector's reach (``gc.freeze``).

    A worker serving many requests at once keeps their objects alive across each await;
    every collection of the youngest generations promotes them, and every tenth or so of
    those then makes a full collection, which walks the whole heap: tens of milliseconds on a
    FastAPI app, for every request in flight. That was the hit tail (``docs/performance.md``).
    Frozen, the startup heap is no longer walked. ``freeze_gc=False`` leaves the collector
    alone."""
    global _frozen
    if _frozen:
        return
    _frozen = True
    gc.collect()
    gc.freeze()
