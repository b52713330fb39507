"""``CacheMiddleware``: the ASGI shell that answers from Redis before the app runs.

One request flows one way::

    scope -> admit? -> key -> lookup -> fresh entry ---------------> replay (Age, Cache-Status)
      |                         +-> stale, within stale-while-revalidate -> replay + refresh
      |                         +-> miss / stale -> fill lock? -> app -> capture -> store
      |                                              +-> held: wait for the entry, then replay
      +-> not http, not GET/HEAD, excluded -> app untouched (unsafe methods invalidate)

The decisions are made by ``policy`` (pure); Redis is reached only through ``RedisCache``.
Every Redis call is bounded by ``timeout``, and any failure there (error, timeout, garbage)
sends the request to the app as if there were no cache: the cache never causes a 500.

Concurrent misses for one URL are coalesced: in one process they wait on one future, across
processes on a fill lock in Redis (``SET NX PX`` with a random token, released by its owner
only). The lock lives a fraction of ``coalesce_timeout`` and its owner renews it while the
app runs, so waiters poll for the entry with backoff and take the lock over soon after its
owner vanished. Waiters whose ``coalesce_timeout`` runs out do not all go to the app: the
first in each process asks Redis (``TAKEOVER_SCRIPT``), at most one per ``coalesce_timeout``
across all processes takes the fill over and calls the app, and the others wait again, as
long again, served by whichever fill stores first. Requests with ``Cache-Control:
no-cache`` take the same path, served only by an entry produced after they arrived. A URL
whose response was not storable is remembered for ``hit_for_pass_ttl`` so that later
requests are not serialised behind a lock (Varnish's hit-for-pass).
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Callable, Collection, Coroutine, Mapping, Sequence
from typing import Any

from . import policy
from ._timeouts import bounded
from ._types import ASGIApp, Message, Receive, Scope, Send
from .background import BackgroundTasks
from .cache import ACQUIRED, HELD, FillLock, Lookup, RedisCache, new_token
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
    DEFAULT_TIMEOUT,
    CacheConfig,
    Pattern,
)
from .entry import CachedEntry
from .exceptions import ConfigError
from .forward import (
    Forward,
    Invalidate,
    Request,
    Skipped,
    T,
    discard,
    empty_receive,
    guarded,
    has_validators,
    hit_status,
    replay,
    warn,
)
from .keys import variant_hash
from .stats import logger

#: Methods whose success invalidates the cached GET of their URL (RFC 9111 4.4).
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

#: Waiters poll for the filled entry starting at this delay, doubling up to the cap.
POLL_FIRST, POLL_CAP = 0.005, 0.1


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
        purge_token: str | None = None,
        purge_path: str = DEFAULT_PURGE_PATH,
        stale_while_revalidate: float = 0.0,
        stale_if_error: float = 0.0,
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
            purge_token=purge_token,
            purge_path=purge_path,
            stale_while_revalidate=stale_while_revalidate,
            stale_if_error=stale_if_error,
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
        )
        if ignore_query_params:
            cache.ignore_query_params(list(ignore_query_params))
        self._vary_guess = self.config.vary_on_names or None
        self._purge_endpoint: ASGIApp | None = None
        if purge_token is not None:
            from .purge import PurgeEndpoint

            self._purge_endpoint = PurgeEndpoint(cache, token=purge_token)
        #: In-process fills under way, by fill key: waiters in this process follow them.
        self._inflight: dict[str, _Fills] = {}
        #: In-process lookups under way, by key: concurrent lookups share one.
        self._lookups: dict[str, asyncio.Future[Lookup | None]] = {}
        #: Background refreshes this process has started and not finished, by fill key.
        self._refreshing: set[str] = set()
        self.background = BackgroundTasks(self.config.max_background_refreshes)
        cache.track_background(self.background, self.config.shutdown_timeout)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http":
            if kind == "lifespan":
                await self.app(scope, self._lifespan_receive(receive), send)
            else:
                await self.app(scope, receive, send)
            return
        method = scope["method"]
        if self._purge_endpoint is not None and (
            method == "PURGE" or scope["path"] == self.config.purge_path
        ):
            await self._purge_endpoint(scope, receive, send)
            return
        if method != "GET" and method != "HEAD":
            if method in UNSAFE_METHODS and self.config.invalidate_on_unsafe:
                await Invalidate(self, scope).run(receive, send)
            else:
                await self.app(scope, receive, send)
            return
        config = self.config
        path: str = scope["path"]
        if config.exclude_matchers and config.is_excluded(path):
            await self.app(scope, receive, send)
            return
        request = Request(scope, config)
        if request.has_body:
            # A GET or HEAD with a body (a "fat GET"): its answer may depend on the body,
            # which no key holds. Not looked up, not stored, not coalesced: untouched.
            await self.app(scope, receive, send)
            return
        cache = self.cache
        query: bytes = scope.get("query_string", b"")
        if cache.has_ignored_query:
            # The app sees the query the key holds: an ignored parameter it cannot read,
            # it cannot reflect into a page that others are served.
            kept = cache.app_query(query)
            if kept != query:
                scope = {**scope, "query_string": kept}
                query = kept
        ruled, rule_ttl = config.rule_for(path) if config.rule_matchers else (False, None)
        if ruled and rule_ttl is None:
            # A rule says never cache this path.
            await Forward(self, request, fwd="bypass", detail="rule", store=False).run(
                scope, receive, send
            )
            return
        default_ttl = rule_ttl if ruled else config.default_ttl
        stats = cache.stats
        request.uhash = cache.url_hash(request.scheme, request.host, path, query)
        if request.bypass_value is not None and self._bypass_allowed(request.bypass_value):
            # Skip the lookup; the response refreshes the entry.
            stats.bypass += 1
            await Forward(self, request, fwd="bypass", default_ttl=default_ttl).run(
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
            if directives.no_store or not config.coalesce or method != "GET" or request.private:
                # Forwarded alone. no-store: nothing of this request's exchange may be
                # stored (RFC 9111 5.2.1.5), so it fills nothing (nor waits for a fill).
                await Forward(
                    self,
                    request,
                    fwd="request",
                    store=not directives.no_store,
                    default_ttl=default_ttl,
                ).run(scope, receive, send)
            else:
                await self._refill(scope, receive, send, request, default_ttl)
            return
        request.started = time.perf_counter()
        fill = (
            FillLock(variant="", token=new_token())
            if config.coalesce
            and method == "GET"
            and not directives.only_if_cached
            and not request.private
            else None
        )
        found = await self._lookup(request, fill)
        if found is None:
            await Forward(self, request, fwd="miss", detail="redis-error", store=False).run(
                scope, receive, send
            )
            return
        request.found = found
        fwd = "uri-miss" if found.state in ("uri-miss", "corrupt") else found.state
        entry = found.entry
        stale: CachedEntry | None = None
        if entry is not None:
            age = entry.age(time.time())
            usable = policy.check_usable(
                entry.fresh_for, age, directives, entry.stale_while_revalidate
            )
            if usable.usable and request.private:
                why = _private_refusal(request, found)
                if why is not None:
                    usable = policy.Usability(usable=False, reason=why)
            if usable.usable:
                if usable.stale:
                    # stale-while-revalidate: answer now, refresh behind the response.
                    self._refresh_later(scope, request, entry, default_ttl)
                    status = hit_status(config.cache_name, entry, age, "; fwd=stale")
                else:
                    status = hit_status(config.cache_name, entry, age)
                # Answered from the cache, fresh or within stale-while-revalidate: a hit, and
                # its time goes to hit_seconds, so that the two describe the same answers.
                stats.hit += 1
                await replay(entry, age, request, status, send)
                stats.hit_seconds += time.perf_counter() - request.started
                if request.debug:
                    kind = "stale hit" if usable.stale else "hit"
                    logger.debug("%s (%s): %s %r", kind, status, method, path)
                return
            if usable.reason in policy.REQUEST_REFUSALS:
                fwd = "miss"
            else:
                fwd = "stale"
                stale = entry
        if directives.only_if_cached:
            # RFC 9111 5.2.1.7: nothing usable, and the client will not wait for the origin.
            refused = f"{config.cache_name}; fwd={fwd}; detail=only-if-cached".encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 504,
                    "headers": [(b"content-length", b"0"), (b"cache-status", refused)],
                }
            )
            await send({"type": "http.response.body", "body": b""})
            return
        if fwd == "stale":
            # Counted once here, whatever the app answers (a stale-if-error answer included).
            stats.stale += 1
        else:
            stats.miss += 1
        await self._miss(scope, receive, send, request, fwd, default_ttl, stale)

    def _bypass_allowed(self, value: bytes) -> bool:
        token = self.config.bypass_token
        if token is None:
            return True
        return hmac.compare_digest(value.strip(), token.encode())

    async def _lookup(self, request: Request, fill: FillLock | None = None) -> Lookup | None:
        """Look the request up, bounded by the timeout; None when Redis failed.

        Concurrent lookups of one key in this process share one Redis call (a burst for a
        hot URL costs one round trip, not one per request); a shared result is used only
        where it cannot depend on this request's own headers.

        With ``fill``, a miss also tries the URL's fill lock in the same round trip; the
        outcome goes to ``request.prefill``, for this request only (a shared result never
        hands the lock to another request).
        """
        cache = self.cache
        guess = cache.remembered_vary(request.uhash) or self._vary_guess
        key = request.uhash
        if guess:
            key += ":" + variant_hash(guess, request.values_for(guess))
        pending = self._lookups.get(key)
        if pending is not None:
            shared = await asyncio.shield(pending)
            if shared is None or not shared.names or shared.names == guess:
                return shared
        future: asyncio.Future[Lookup | None] = asyncio.get_running_loop().create_future()
        self._lookups[key] = future
        found: Lookup | None = None
        try:
            result = await guarded(
                cache,
                self.config.timeout,
                "lookup",
                lambda: cache.lookup(
                    request.uhash,
                    request.values_for,
                    guess,
                    fill=fill,
                    fill_ttl=self.config.fill_lock_ttl,
                ),
            )
            found = None if isinstance(result, Skipped) else result
            if found is not None and fill is not None and found.lock is not None:
                request.prefill = (fill, found.lock)
        finally:
            del self._lookups[key]
            future.set_result(found)
        return found

    def _forward(
        self,
        request: Request,
        fwd: str,
        default_ttl: float | None,
        stale: CachedEntry | None,
        fill: FillLock | None = None,
        extra: str = "",
    ) -> Forward:
        fallback = revalidate = None
        if stale is not None:
            age = stale.age(time.time())
            if policy.can_serve_stale_on_error(stale.fresh_for, age, stale.stale_if_error):
                fallback = stale
            if has_validators(stale) and not request.is_conditional:
                revalidate = stale
        return Forward(
            self,
            request,
            fwd=fwd,
            default_ttl=default_ttl,
            fallback=fallback,
            revalidate=revalidate,
            fill=fill,
            extra=extra,
        )

    # -- misses and coalescing --------------------------------------------------------------

    def _fill_variant(self, request: Request) -> str:
        """Return which variant a fill is for: "" for a URL whose Vary is not known yet."""
        found = request.found
        names = found.names if found is not None else None
        if not names:
            return ""
        return variant_hash(names, request.values_for(names))

    async def _miss(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        request: Request,
        fwd: str,
        default_ttl: float | None,
        stale: CachedEntry | None,
        since: float | None = None,
    ) -> None:
        """Answer a request the cache could not: fill the entry, or wait for the request that
        fills it (in this process or another) and serve what that one stores.

        ``since`` is set for a request ``no-cache`` (when it arrived): only an entry whose
        response the app produced after then may serve it (``_serve_filled``); for a fill
        that began answering before, it waits for the next fill, or makes it.
        """
        config = self.config
        if not config.coalesce or request.method != "GET" or request.private:
            await self._forward(request, fwd, default_ttl, stale).run(scope, receive, send)
            return
        # A lock the lookup took is this request's to fill under at once (no other request
        # can fill meanwhile), or to give back.
        pre: tuple[FillLock, int | None] | None
        pre, request.prefill = request.prefill, None
        owns_lock = pre is not None and pre[1] == ACQUIRED
        variant = self._fill_variant(request)
        key = f"{request.uhash}:{variant}"
        deadline = time.monotonic() + config.coalesce_timeout
        while not owns_lock and (fills := self._inflight.get(key)) is not None:
            # Other requests of this process are filling, or waiting for another process's
            # fill: follow them, and look again when one of them ends.
            outcome = await fills.next_end(deadline - time.monotonic())
            if outcome == "stored" and await self._serve_filled(request, send, fwd, since):
                return
            if outcome == "timeout":
                # Waited coalesce_timeout: one waiter takes the fill over, the others (here
                # or in other processes) wait again, as long again, for any fill to store.
                deadline = time.monotonic() + config.coalesce_timeout
                if fills.claim_takeover(config.coalesce_timeout):
                    # The first here: it fills, or if a waiter of another process took the
                    # fill over, looks for that one's entry in Redis for this process.
                    takeover = FillLock(variant=variant, token=new_token())
                    pre = (takeover, await self._take_over(request, takeover))
                    break
            elif outcome != "error" and not (outcome == "stored" and since is not None):
                # Not storable, or not our variant: no more waiting.
                await self._forward(request, fwd, default_ttl, stale).run(scope, receive, send)
                return
            # The fill failed, or answered before this request came: follow the fills still
            # under way, or become the next filler.
        fills = self._inflight.get(key)
        if fills is None:
            fills = self._inflight[key] = _Fills()
        fills.running += 1
        outcome = "error"
        try:
            outcome = await self._fill_or_wait(
                scope,
                receive,
                send,
                request,
                fwd,
                default_ttl,
                stale,
                variant,
                deadline,
                pre,
                since=since,
                fills=fills,
            )
        finally:
            fills.end(outcome)
            # A fill that took over from this one may be under way: its waiters stay.
            if not fills.running and self._inflight.get(key) is fills:
                del self._inflight[key]

    async def _fill_or_wait(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        request: Request,
        fwd: str,
        default_ttl: float | None,
        stale: CachedEntry | None,
        variant: str,
        deadline: float,
        pre: tuple[FillLock, int | None] | None = None,
        *,
        since: float | None = None,
        fills: _Fills,
    ) -> str:
        """Fill the entry under the Redis lock, or wait for the process that holds it.

        ``pre`` is the lock the lookup (or a takeover) already tried for this variant, and
        how that went. ``fills`` are this process's fills of the key, this one among them.
        Return the outcome for this process's waiters: ``stored``, ``refused`` (not
        storable), ``error`` (the app failed) or ``other`` (not stored, for no lasting
        reason).
        """
        state: int | None
        if pre is not None and pre[0].variant == variant:
            fill, state = pre
        else:
            if pre is not None and pre[1] == ACQUIRED:  # another variant's lock: give it back
                await self._release_lock(request, pre[0])
            fill = FillLock(variant=variant, token=new_token())
            state = await self._acquire(request, fill)
        delay = POLL_FIRST
        waited = False
        while True:
            if state == HELD and time.monotonic() >= deadline:
                # Waited coalesce_timeout: one waiter takes the fill over, as in _miss.
                window = self.config.coalesce_timeout
                deadline = time.monotonic() + window
                if fills.claim_takeover(window):
                    state = await self._take_over(request, fill)
            if state == ACQUIRED and waited and await self._serve_filled(request, send, fwd, since):
                # The lock came free because its owner stored (the store deletes the lock),
                # after our last look: serve that entry, not a second app call.
                await self._release_lock(request, fill)
                return "stored"
            if state != HELD:
                # The filler; or Redis failed, or the URL is known not to be storable
                # (hit-for-pass): no queueing either way.
                owned = fill if state == ACQUIRED else None
                forward = self._forward(request, fwd, default_ttl, stale, fill=owned)
                await forward.run(scope, receive, send)
                return forward.outcome
            # Held by another process: wait for its entry, or for the lock to free up (and
            # look at once when a fill of this process ends).
            await fills.next_end(min(delay, deadline - time.monotonic()))
            delay = min(delay * 2, POLL_CAP)
            waited = True
            if await self._serve_filled(request, send, fwd, since):
                return "stored"
            state = await self._acquire(request, fill)

    async def _take_over(self, request: Request, fill: FillLock) -> int | None:
        """The first waiter of this process whose ``coalesce_timeout`` ran out asks Redis
        whether it takes the fill over (under ``fill``), calling the app in place of the slow
        filler: one waiter across all processes may per ``coalesce_timeout``
        (``RedisCache.take_over_fill``). ``ACQUIRED``: the lock is this waiter's now;
        ``HELD``: another's was; ``PASS``: hit-for-pass, go to the app without a lock. None
        when Redis failed: this waiter fills without a lock.
        """
        window = self.config.coalesce_timeout
        ttl = self.config.fill_lock_ttl
        state = await self._lock_call(
            request,
            "fill takeover",
            lambda gen: self.cache.take_over_fill(request.uhash, fill, ttl, window, gen),
        )
        if state != HELD and request.debug:
            logger.debug(
                "fill taken over after waiting %g s (coalesce_timeout): %s %r",
                window,
                request.method,
                request.path,
            )
        return state

    async def _lock_call(
        self, request: Request, kind: str, call: Callable[[int], Coroutine[Any, Any, T]]
    ) -> T | None:
        """Run one fill-lock call (``call`` takes the generation the request's keys are in),
        bounded by the timeout; None when Redis failed or the breaker is open."""
        found = request.found
        generation = found.generation if found is not None else self.cache.generation
        result = await guarded(self.cache, self.config.timeout, kind, lambda: call(generation))
        return None if isinstance(result, Skipped) else result

    async def _acquire(self, request: Request, fill: FillLock) -> int | None:
        ttl = self.config.fill_lock_ttl
        return await self._lock_call(
            request,
            "fill lock",
            lambda gen: self.cache.acquire_fill(request.uhash, fill, ttl, gen),
        )

    async def _renew_lock(self, request: Request, fill: FillLock) -> bool | None:
        """Give a fill lock this request holds its full TTL again (``LockRenewal``): True;
        False when it is no longer ours; None when Redis did not answer in time."""
        ttl = self.config.fill_lock_ttl
        return await self._lock_call(
            request,
            "lock renewal",
            lambda gen: self.cache.renew_fill(request.uhash, fill, ttl, gen),
        )

    async def _release_lock(
        self, request: Request, fill: FillLock, *, refused: bool = False
    ) -> None:
        """Give back a fill lock this request holds; ``refused`` (the response was not
        storable) also marks the URL hit-for-pass for ``hit_for_pass_ttl``."""
        pass_for = self.config.hit_for_pass_ttl if refused else 0.0
        await self._lock_call(
            request,
            "lock release",
            lambda gen: self.cache.release_fill(request.uhash, fill, gen, pass_for=pass_for),
        )

    async def _drop_superseded(self, request: Request) -> None:
        """Drop the entry the request found: the app's answer to it may not be stored
        (``no-store``, ``private`` …) and says the entry is out of date (RFC 9111 4.3.3), so
        it must not be served stale again, in the background refresh's window or as a
        stale-if-error stand-in. Bounded like every other call; on failure the entry stays."""
        found = request.found
        entry = found.entry if found is not None else None
        if found is None or entry is None or found.key is None:
            return
        key = found.key
        dropped = await guarded(
            self.cache,
            self.config.timeout,
            "drop",
            lambda: self.cache.drop_entry(request.uhash, key, entry.stored_at),
        )
        if dropped is True:
            # An invalidation by the newer answer: counted like one (and so as a purge).
            stats = self.cache.stats
            stats.invalidated += 1
            stats.purged += 1
            if request.debug:
                logger.debug(
                    "invalidated (superseded by an answer that may not be stored): %s %r",
                    request.method,
                    request.path,
                )

    async def _serve_filled(
        self, request: Request, send: Send, fwd: str, since: float | None = None
    ) -> bool:
        """Serve the entry another request just filled, if it is there and usable; with
        ``since`` (a request ``no-cache``), only if the app produced it (``stored_at``, its
        response's start) at or after that time."""
        found = await self._lookup(request)
        if found is None or found.entry is None:
            return False
        entry = found.entry
        if since is not None and entry.stored_at < since:
            return False
        age = entry.age(time.time())
        if age >= entry.fresh_for or request.private:
            # A private request (credentials, cookies) never follows a fill (``_miss``); were
            # one to get here, another request's fill is not its answer.
            return False
        name = self.config.cache_name
        ttl = int(entry.fresh_for) - int(age)
        status = f"{name}; fwd={fwd}; fwd-status={entry.status}; collapsed; ttl={ttl}"
        self.cache.stats.collapsed += 1
        await replay(entry, age, request, status, send)
        if request.debug:
            logger.debug("collapsed (%s): %s %r", status, request.method, request.path)
        return True

    async def _refill(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        request: Request,
        default_ttl: float | None,
    ) -> None:
        """Answer a request ``no-cache`` (or ``Pragma: no-cache``) with a response the app
        produced after it arrived (RFC 9111 5.2.1.4), coalesced like a miss: by its own app
        call, whose response refills the entry, or by a fill of another request that began
        answering after this one arrived (``Cache-Status: fwd=request; ...; collapsed``).

        The lookup's entry does not answer it; what the lookup says of the URL (its Vary
        names, the generation, a fill lock on a cold URL) is used as for a miss.
        """
        since = time.time()
        found = await self._lookup(request, FillLock(variant="", token=new_token()))
        if found is None:
            forward = Forward(self, request, fwd="request", detail="redis-error", store=False)
            await forward.run(scope, receive, send)
            return
        # Without its entry: an answer that may not be stored leaves the entry alone, as
        # the answer to a bypass does (_drop_superseded).
        request.found = Lookup(state=found.state, generation=found.generation, names=found.names)
        await self._miss(scope, receive, send, request, "request", default_ttl, None, since=since)

    # -- background refresh (stale-while-revalidate) ---------------------------------------

    def _refresh_later(
        self, scope: Scope, request: Request, entry: CachedEntry, default_ttl: float | None
    ) -> None:
        key = f"{request.uhash}:{self._fill_variant(request)}"
        if key in self._refreshing:
            return  # this process is refreshing it already: no second task, no lock attempt
        background_scope: Scope = {**scope, "method": "GET", "headers": list(scope["headers"])}
        refresh = Request(background_scope, self.config)
        refresh.uhash = request.uhash
        refresh.found = request.found
        started = self.background.spawn(
            self._refresh(background_scope, refresh, entry, default_ttl, key)
        )
        if started:
            self._refreshing.add(key)
        else:
            self.cache.stats.not_stored["refresh-limit"] += 1

    async def _refresh(
        self,
        scope: Scope,
        request: Request,
        entry: CachedEntry,
        default_ttl: float | None,
        key: str,
    ) -> None:
        """Refresh a stale entry once across every process: only the fill lock's owner runs
        the app; a failure (the app raises or answers an error status) leaves the stale entry
        in place and is logged as a warning."""
        try:
            await self._refresh_once(scope, request, entry, default_ttl)
        finally:
            self._refreshing.discard(key)

    async def _refresh_once(
        self, scope: Scope, request: Request, entry: CachedEntry, default_ttl: float | None
    ) -> None:
        fill = FillLock(variant=self._fill_variant(request), token=new_token())
        if await self._acquire(request, fill) != ACQUIRED:
            return
        # The lock may be free because another process has just refreshed the entry (its
        # store releases the lock): look again rather than call the app a second time.
        found = await self._lookup(request)
        current = found.entry if found is not None else None
        if current is not None and current.stored_at > entry.stored_at:
            await self._release_lock(request, fill)
            return
        revalidate = entry if has_validators(entry) else None
        forward = Forward(
            self,
            request,
            fwd="stale",
            default_ttl=default_ttl,
            revalidate=revalidate,
            fill=fill,
        )
        failed = f"redis-cache background refresh of {request.path} failed"
        try:
            await forward.run(scope, empty_receive(), discard)
        except Exception as exc:
            # Rate-limited: an outage fails every stale URL's refresh at once.
            warn("background refresh", f"{failed}; the stale entry stays", exc)
            return
        if forward.outcome != "stored" and policy.is_error_status(forward.status):
            warn(
                "background refresh",
                f"{failed} (the app answered {forward.status}); the stale entry stays",
            )

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


def _private_refusal(request: Request, found: Lookup) -> str | None:
    """Return why the entry found may not answer a private request (credentials, cookies),
    else None: ``authorization`` unless the response allowed it (RFC 9111 3.5), ``cookie``
    or ``credentials`` unless it is explicitly shared or keyed on them."""
    entry = found.entry
    assert entry is not None
    if request.has_authorization and not entry.shared_with_auth:
        return "authorization"
    if not request.has_cookie and not request.credentials:
        return None
    return policy.private_request_refusal(
        policy.is_explicitly_shared(entry.headers),
        found.names or (),
        request.has_cookie,
        request.credentials,
    )


class _Fills:
    """The requests of this process filling one fill key (URL hash and variant), or waiting
    for another process's fill of it: the process's other requests for the key follow them.

    Usually one; more when a waiter took a slow fill over (``_take_over``) while the slow
    one runs on. Each one's end wakes every follower, so that any fill that stores serves
    them all.
    """

    __slots__ = ("_ended", "_taken_until", "running")

    def __init__(self) -> None:
        #: How many are under way.
        self.running = 0
        #: Until when (monotonic) a waiter of this process has the takeover in hand.
        self._taken_until = 0.0
        self._ended: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def next_end(self, timeout: float) -> str:
        """Wait for the next of them to end: its outcome, or "timeout" after ``timeout``."""
        if timeout <= 0:
            return "timeout"
        try:
            async with bounded(timeout):
                return await asyncio.shield(self._ended)
        except asyncio.TimeoutError:  # TimeoutError on 3.11+, not on 3.10
            return "timeout"

    def claim_takeover(self, window: float) -> bool:
        """Whether a waiter whose wait ran out is the first of this process to in ``window``
        seconds: it then tries to take the fill over (``_take_over``); the others wait
        again, for its fill or, when it loses to another process, its look in Redis."""
        now = time.monotonic()
        if self._taken_until > now:
            return False
        self._taken_until = now + window
        return True

    def end(self, outcome: str) -> None:
        """One of them ended, with ``outcome``: wake its followers."""
        self.running -= 1
        ended, self._ended = self._ended, asyncio.get_running_loop().create_future()
        ended.set_result(outcome)
