"""``RedisCache``: the one object that owns the Redis client, the namespace and the key scheme.

The middleware, the app's own code (``await cache.purge_url(...)``) and the admin tools all go
through it, so every way of reading, writing or purging uses the same keys. It is the only
module that talks to Redis. Methods raise the client's ``redis.exceptions.RedisError`` on
trouble; the middleware catches them (it fails open), explicit admin calls let them surface.

Ownership follows redis-py: a cache built with ``from_url`` owns its client and closes it in
``aclose()``; a client handed in is the caller's and is never closed by us.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import itertools
import logging
import math
import os
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar
from urllib.parse import quote, unquote, urlsplit

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import NoScriptError, ResponseError

from . import entry as entry_codec
from . import keys
from ._scripts import (
    ACQUIRE_SCRIPT,
    DROP_SCRIPT,
    INDEX_SCRIPT,
    LOOKUP_SCRIPT,
    PURGE_MARK_SCRIPT,
    PURGE_SWEEP_SCRIPT,
    READ_SCRIPT,
    RELEASE_SCRIPT,
    RENEW_SCRIPT,
    STORE_SCRIPT,
    TAKEOVER_SCRIPT,
)
from ._timeouts import WAIT_FOR_SWALLOWS_CANCELLATION, run_bounded, sends_under_wait_for
from .background import BackgroundTasks
from .breaker import CircuitBreaker
from .entry import CachedEntry, VaryMarker
from .exceptions import ConfigError
from .stats import CacheStats, RateLimitedWarning

if TYPE_CHECKING:
    from redis.asyncio.cluster import RedisCluster

    AnyRedis = Redis | RedisCluster
else:
    AnyRedis = Any

logger = logging.getLogger("redis_cache_middleware")

#: How many URLs' Vary names a process remembers, to fetch a variant in the first round trip.
VARY_MEMORY = 4096
#: How many URLs' hashes a process keeps, so that a hot URL is hashed once.
HASH_MEMORY = 4096

METHOD_CLASS_GET = "GET"

#: Characters of a query that ``hash_for_url`` keeps as given: every printable ASCII
#: character but the space (``%`` too, so that escapes already there stay as they are).
QUERY_AS_SENT = "".join(chr(c) for c in range(0x21, 0x7F))

#: Most ``on_purge`` calls for invalidations running at once; past it, events are dropped
#: (with a warning) rather than kept without bound or made to delay responses.
MAX_PENDING_HOOKS = 1000
#: Seconds ``aclose()`` waits for ``on_purge`` calls still running before cancelling them.
HOOK_DRAIN_TIMEOUT = 5.0

_hook_warn = RateLimitedWarning()


_P = ParamSpec("_P")
_T = TypeVar("_T")


def _admin(
    method: Callable[Concatenate[RedisCache, _P], Coroutine[Any, Any, _T]],
) -> Callable[Concatenate[RedisCache, _P], Coroutine[Any, Any, _T]]:
    """Bound an admin call (purge, clear, inspect, scan) by the cache's ``admin_timeout``:
    ``TimeoutError`` past it."""

    @functools.wraps(method)
    async def bounded_call(self: RedisCache, /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        if self.admin_timeout is None:
            return await method(self, *args, **kwargs)
        try:
            return await run_bounded(
                lambda: method(self, *args, **kwargs),
                self.admin_timeout,
                isolate=self.isolate_calls,
            )
        except asyncio.TimeoutError as exc:  # the builtin TimeoutError on every Python
            raise TimeoutError(f"{method.__name__} took over {self.admin_timeout} s") from exc

    return bounded_call


@dataclass(frozen=True, slots=True)
class Lookup:
    """What a lookup found for a request.

    ``state`` is ``"hit"`` (``entry`` set), ``"uri-miss"`` (nothing stored for the URL),
    ``"vary-miss"`` (the URL varies and this request's variant is not stored) or ``"corrupt"``
    (something that is not ours is at the key: unreadable, or a hash without a TTL, which
    our stores always set; the next store overwrites it).
    """

    state: str
    generation: int
    entry: CachedEntry | None = None
    #: The Vary names found at the URL's key, when it holds a marker.
    names: tuple[str, ...] | None = None
    #: The key the entry was read from (the URL's key or a variant's).
    key: str | None = None
    #: When the lookup was asked to take the URL's fill lock on a miss, and did in the
    #: same round trip: ``ACQUIRED``, ``HELD`` or ``PASS``; else None.
    lock: int | None = None


class RedisCache:
    """A namespaced HTTP response cache kept in Redis.

    ``client`` is a ``redis.asyncio.Redis`` (or a ``redis.asyncio.cluster.RedisCluster``,
    a master client from ``redis.asyncio.sentinel.Sentinel(...).master_for(...)``, or
    ``fakeredis.FakeAsyncRedis``) made with ``decode_responses=False``; it is not closed by
    ``aclose()``. On a cluster every operation keeps to one slot per command (see
    ``docs/scaling.md``). ``namespace`` prefixes every key (letters, digits, ``_ . -``; at most 64).
    """

    def __init__(
        self,
        client: AnyRedis,
        *,
        namespace: str = "cache",
        on_purge: Callable[[PurgeEvent], Any] | None = None,
        breaker_threshold: int = 5,
        breaker_cooldown: float = 5.0,
        generation_check_interval: float = 1.0,
        admin_timeout: float | None = 5.0,
    ) -> None:
        if not isinstance(namespace, str) or not keys.NAMESPACE_RE.match(namespace):
            raise ConfigError(
                f"namespace must be 1-64 letters, digits, '_', '.' or '-'; got {namespace!r}"
            )
        if _decodes_responses(client):
            raise ConfigError(
                "client: the Redis client must be made with decode_responses=False "
                "(bodies are bytes)"
            )
        if admin_timeout is not None and (
            isinstance(admin_timeout, bool)
            or not isinstance(admin_timeout, (int, float))
            or not 0 < admin_timeout < float("inf")
        ):
            raise ConfigError(
                f"admin_timeout must be a positive number of seconds or None; got {admin_timeout!r}"
            )
        #: Bounds each purge, clear, inspect and scan call (the middleware bounds its own calls
        #: with its ``timeout``): a client without a socket timeout cannot hang them.
        self.admin_timeout = admin_timeout
        self._client = client
        self._owns_client = False
        self.namespace = namespace
        self._generation_key = keys.generation_key(namespace)
        self._generation = 0
        if (
            isinstance(generation_check_interval, bool)
            or not isinstance(generation_check_interval, (int, float))
            or not 0 <= generation_check_interval < float("inf")
        ):
            raise ConfigError(
                "generation_check_interval must be a number of seconds >= 0; "
                f"got {generation_check_interval!r}"
            )
        #: How often lookups re-read the namespace generation (0: every lookup).
        self._generation_interval = float(generation_check_interval)
        self._generation_checked_at = float("-inf")
        self._vary_names: OrderedDict[str, tuple[str, ...]] = OrderedDict()
        #: URLs (without Vary) this process saw stored, and until when (monotonic): their
        #: lookups are a plain HGETALL; others also try the fill lock in the same trip.
        self._stored_until: dict[str, float] = {}
        self._ignored_query: list[str] = []
        #: Recent URLs' hashes, by what url_hash was given (emptied when full).
        self._hash_memo: dict[tuple[str, str, bytes, str, bytes], str] = {}
        self._query_filter: Callable[[str], bool] | None = None
        #: Whether any query parameter is ignored (``ignore_query_params``).
        self.has_ignored_query = False
        #: What the middlewares using this cache did, in this process.
        self.stats = CacheStats()
        #: Skips Redis for a cool-down after repeated failures (shared by the middlewares).
        self.breaker = CircuitBreaker(
            breaker_threshold, breaker_cooldown, transitions=self.stats.breaker_transitions
        )
        if on_purge is not None and not callable(on_purge):
            raise ConfigError("on_purge must be a callable taking a PurgeEvent")
        self._on_purge = on_purge
        #: ``on_purge`` calls for the middleware's invalidations, run behind the response.
        self._hook_calls = BackgroundTasks(MAX_PENDING_HOOKS)
        self._cluster = _is_cluster(client)
        #: Whether each call is bounded in a task of its own (``_timeouts.run_bounded``):
        #: on Python < 3.12, for a client that sends under ``asyncio.wait_for`` (one with a
        #: ``socket_timeout``), whose calls can outlive a timeout in the request's task.
        self.isolate_calls = WAIT_FOR_SWALLOWS_CANCELLATION and sends_under_wait_for(client)
        self._also_close: list[Any] = []
        self._background: list[tuple[BackgroundTasks, float]] = []
        self._index_script = client.register_script(INDEX_SCRIPT)
        self._acquire_script = client.register_script(ACQUIRE_SCRIPT)
        self._release_script = client.register_script(RELEASE_SCRIPT)
        self._renew_script = client.register_script(RENEW_SCRIPT)
        self._takeover_script = client.register_script(TAKEOVER_SCRIPT)
        self._store_script = client.register_script(STORE_SCRIPT)
        self._lookup_script = client.register_script(LOOKUP_SCRIPT)
        self._read_script = client.register_script(READ_SCRIPT)
        self._mark_script = client.register_script(PURGE_MARK_SCRIPT)
        self._sweep_script = client.register_script(PURGE_SWEEP_SCRIPT)
        self._drop_script = client.register_script(DROP_SCRIPT)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        namespace: str = "cache",
        on_purge: Callable[[PurgeEvent], Any] | None = None,
        breaker_threshold: int = 5,
        breaker_cooldown: float = 5.0,
        generation_check_interval: float = 1.0,
        admin_timeout: float | None = 5.0,
        socket_timeout: float | None = None,
        connect_timeout: float = 0.5,
        max_connections: int | None = None,
        **client_options: Any,
    ) -> RedisCache:
        """Return a cache with its own client for ``url``, closed by ``aclose()``.

        The client connects within ``connect_timeout`` and retries at most once, so that an
        outage costs a request little (redis-py's own defaults retry for seconds). It has no
        socket timeout by default: the middleware bounds each of its calls with its own
        ``timeout``, purges and the other admin calls are bounded by ``admin_timeout``, and
        redis-py runs each command of a client with a socket timeout in a task of its own,
        which costs a hit or a miss about a tenth of its time (docs/performance.md). Give
        ``socket_timeout`` to bound every command anyway. ``client_options`` go to the
        client's constructor unchanged.

        Besides every redis-py URL (``redis://``, ``rediss://``, ``unix://``):

        - ``redis+cluster://[user:password@]host:port[,host:port...][/]`` (``rediss+cluster``
          for TLS) makes a ``redis.asyncio.cluster.RedisCluster`` with these startup nodes
          (the port defaults to 6379; one live node is enough, it tells the others).
        - ``redis+sentinel://[user:password@]host:port[,host:port...]/service[/db]``
          (``rediss+sentinel`` for TLS to the master) asks these sentinels for the master
          of ``service`` and follows it through failovers
          (``redis.asyncio.sentinel.Sentinel(...).master_for(service)``). The user and
          password are the master's; a ``sentinel_kwargs={...}`` client option is passed to
          ``Sentinel`` for the sentinels' own connections (e.g. their password).

        These two forms take no query string (give options as keywords). A malformed URL
        raises ``ConfigError`` naming ``url``.
        """
        for name, value in (
            ("socket_timeout", socket_timeout),
            ("connect_timeout", connect_timeout),
        ):
            if value is None and name == "socket_timeout":
                continue
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or value <= 0
            ):
                raise ConfigError(f"{name} must be a positive number of seconds; got {value!r}")
        options: dict[str, Any] = {
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": connect_timeout,
            "retry": Retry(NoBackoff(), 1),
            "socket_keepalive": True,
            "health_check_interval": 30,
        }
        if max_connections is not None:
            options["max_connections"] = max_connections
        options.update(client_options)
        options["decode_responses"] = False
        scheme = url.partition("://")[0].lower() if isinstance(url, str) else ""
        also_close: list[Any] = []
        try:
            if scheme in CLUSTER_SCHEMES:
                client: AnyRedis = _cluster_client(url, options)
            elif scheme in SENTINEL_SCHEMES:
                client, also_close = _sentinel_client(url, options)
            else:
                client = Redis.from_url(url, **options)
        except ValueError as exc:
            raise ConfigError(f"url: {exc}") from exc
        cache = cls(
            client,
            namespace=namespace,
            on_purge=on_purge,
            breaker_threshold=breaker_threshold,
            breaker_cooldown=breaker_cooldown,
            generation_check_interval=generation_check_interval,
            admin_timeout=admin_timeout,
        )
        cache._owns_client = True
        cache._also_close = also_close
        return cache

    @property
    def generation(self) -> int:
        """Return the namespace generation this process saw last."""
        return self._generation

    @property
    def client(self) -> AnyRedis:
        """Return the Redis client this cache uses."""
        return self._client

    def track_background(self, tasks: BackgroundTasks, timeout: float) -> None:
        """Have ``aclose()`` drain these background tasks (a middleware's refreshes)."""
        self._background.append((tasks, timeout))

    async def warm_up(self, timeout: float = 2.0) -> bool:
        """Connect before the first request: open a connection (on a cluster, read the slot
        map, which can take longer than a request's ``timeout``) and read the generation.

        Return whether Redis answered within ``timeout`` seconds; when it did not, the cache
        still works (requests fail open until Redis answers). The middleware calls this at
        lifespan startup.
        """

        async def connect() -> None:
            if self._cluster:
                await self._client.initialize()
            await self._current_generation()

        try:
            await run_bounded(connect, timeout, isolate=self.isolate_calls)
        except Exception as exc:
            logger.warning(
                "redis-cache could not reach Redis at startup (%s: %s); the app serves "
                "without the cache until it can",
                type(exc).__name__,
                exc,
            )
            return False
        return True

    async def aclose(self) -> None:
        """Drain the background refreshes of the middlewares using this cache and the
        ``on_purge`` calls still running, then close the client if this cache made it
        (``from_url``); a client handed in stays open."""
        for tasks, timeout in self._background:
            await tasks.drain(timeout)
        await self._hook_calls.drain(HOOK_DRAIN_TIMEOUT)
        if self._owns_client:
            await self._client.aclose()
            for other in self._also_close:  # a Sentinel's own clients
                await other.aclose()

    async def __aenter__(self) -> RedisCache:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- keys -----------------------------------------------------------------------------

    def ignore_query_params(self, patterns: Sequence[str]) -> None:
        """Drop query parameters matching these glob patterns from every key (and purge).

        The middleware also drops them from the query the app sees (``app_query``), so that
        an app can never answer differently for requests that share a key.
        """
        for pattern in patterns:
            if pattern not in self._ignored_query:
                self._ignored_query.append(pattern)
        self._query_filter = keys.make_query_filter(self._ignored_query)
        self.has_ignored_query = self._query_filter is not None
        self._hash_memo.clear()

    def app_query(self, query_string: bytes) -> bytes:
        """Return the raw query as keys see it: without the ignored parameters."""
        return keys.normalise_query(query_string, self._query_filter)

    def url_hash(
        self,
        scheme: str,
        host: bytes,
        path: str,
        query_string: bytes,
        method: str = "GET",
    ) -> str:
        """Return the hash naming the keys of a URL, as requested with ``method``.

        The query is keyed by its raw bytes (``keys.normalise_query``): never unquoted.
        """
        method_class = METHOD_CLASS_GET if method in ("GET", "HEAD") else method
        memo_key = (method_class, scheme, host, path, query_string)
        uhash = self._hash_memo.get(memo_key)
        if uhash is None:
            # Hot URLs skip the host normalising and hashing.
            uhash = keys.url_hash(
                method_class,
                scheme,
                keys.normalise_host(host, scheme),
                path,
                keys.normalise_query(query_string, self._query_filter),
            )
            if len(self._hash_memo) >= HASH_MEMORY:
                self._hash_memo.clear()
            self._hash_memo[memo_key] = uhash
        return uhash

    def hash_for_url(self, url: str, method: str = "GET") -> str:
        """Return the hash naming the keys of an absolute URL (``http://host/path?query``).

        The path is compared decoded (as ASGI servers give it); the query byte for byte as
        clients send it, percent-escapes included: ``?q=a%20b`` is not ``?q=a+b``. Spaces and
        non-ASCII characters in the given query are percent-encoded as UTF-8 first, as every
        HTTP client sends them.
        """
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"url must be absolute http(s), got {url!r}")
        host = parts.netloc.rpartition("@")[2]  # user info is not part of the key
        return self.url_hash(
            parts.scheme,
            host.encode("latin-1", "replace"),
            unquote(parts.path or "/"),
            quote(parts.query, safe=QUERY_AS_SENT).encode("ascii"),
            method.upper(),
        )

    def remembered_vary(self, uhash: str) -> tuple[str, ...] | None:
        """Return the Vary names last seen for a URL in this process, if any."""
        return self._vary_names.get(uhash)

    def _remember_stored(self, uhash: str, seconds: float) -> None:
        if seconds <= 0:
            self._stored_until.pop(uhash, None)
            return
        if len(self._stored_until) >= VARY_MEMORY and uhash not in self._stored_until:
            del self._stored_until[next(iter(self._stored_until))]  # the oldest remembered
        self._stored_until[uhash] = time.monotonic() + seconds

    def _remember_vary(self, uhash: str, names: tuple[str, ...] | None) -> None:
        if names is None:
            self._vary_names.pop(uhash, None)
            return
        self._vary_names[uhash] = names
        self._vary_names.move_to_end(uhash)
        if len(self._vary_names) > VARY_MEMORY:
            self._vary_names.popitem(last=False)

    # -- reads ----------------------------------------------------------------------------

    async def lookup(
        self,
        uhash: str,
        values_for: Callable[[tuple[str, ...]], list[bytes | None]],
        guess: tuple[str, ...] | None = None,
        fill: FillLock | None = None,
        fill_ttl: float = 5.0,
    ) -> Lookup:
        """Return what is stored for a URL and, when it varies, for this request's variant.

        ``values_for(names)`` returns the request's values of those headers (None if absent).
        ``guess`` names the Vary headers expected, so that the variant can be fetched in the
        same round trip as the URL's key; a wrong guess costs a second round trip.

        With ``fill`` (a lock for the URL itself, variant ``""``), a lookup that finds the
        URL's key empty also tries that fill lock, in the same round trip, for ``fill_ttl``
        seconds; ``Lookup.lock`` says how that went (None when it was not tried).
        """
        if guess is None:
            guess = self._vary_names.get(uhash)
        generation = self._generation
        base = keys.url_key(self.namespace, generation, uhash)
        guessed_key: str | None = None
        check = time.monotonic() - self._generation_checked_at >= self._generation_interval
        #: The PTTL a script read with the URL's key (None: a plain HGETALL read it).
        known_ttl: Any = None
        if not guess and not check:
            if self._stored_until.get(uhash, 0.0) >= time.monotonic():
                # The common hit: one plain HGETALL. This process knows the key has a TTL
                # until then (its own store set it, or a script read it): a key without one
                # (not ours) is caught by the next script read, once that deadline passes.
                replies = [None, await self._hgetall(base)]
            elif fill is not None:
                # Likely a miss: the same round trip also tries the fill lock.
                reply = await self._lookup_or_lock(base, fill, fill_ttl)
                if isinstance(reply, int):
                    self._remember_vary(uhash, None)
                    return Lookup(state="uri-miss", generation=generation, lock=reply)
                known_ttl = _first_pttl(reply)
                replies = [None, *_hash_replies(reply, 1)]
            else:
                reply = await self._read_reply([base])
                known_ttl = _first_pttl(reply)
                replies = [None, *_hash_replies(reply, 1)]
        else:
            while True:
                if guess:
                    guessed_key = keys.variant_key(
                        base, keys.variant_hash(guess, values_for(guess))
                    )
                read_keys = [base] if guessed_key is None else [base, guessed_key]
                if not check:
                    # The URL's key and the guessed variant's: one command.
                    read_reply = await self._read_reply(read_keys)
                    known_ttl = _first_pttl(read_reply)
                    replies = [None, *_hash_replies(read_reply, len(read_keys))]
                    break
                async with self._client.pipeline(transaction=False) as pipe:
                    pipe.get(self._generation_key)
                    # EVAL, not EVALSHA: a pipeline cannot load a missing script (and a
                    # cluster's refuses EVALSHA). Once per generation_check_interval.
                    pipe.eval(READ_SCRIPT, len(read_keys), *read_keys)
                    gen_reply, read_reply = await pipe.execute(raise_on_error=False)
                if isinstance(gen_reply, ResponseError):
                    _garbage_or_raise(gen_reply)
                if isinstance(read_reply, ResponseError):
                    raise read_reply
                known_ttl = _first_pttl(read_reply)
                replies = [gen_reply, *_hash_replies(read_reply, len(read_keys))]
                self._generation_checked_at = time.monotonic()
                current = _parse_generation(gen_reply)
                if current == generation:
                    break
                # The namespace was cleared: look again under the new generation.
                self._generation = generation = current
                base = keys.url_key(self.namespace, generation, uhash)
                check = False
        found = _decode_reply(replies[1])
        if found is None:
            self._stored_until.pop(uhash, None)
            state = "uri-miss" if _is_empty(replies[1]) else "corrupt"
            if state == "uri-miss":
                self._remember_vary(uhash, None)
            return Lookup(state=state, generation=generation)
        if isinstance(found, CachedEntry):
            self._remember_vary(uhash, None)
            if isinstance(known_ttl, int) and known_ttl > 0:
                # Only a TTL Redis reported extends the plain-read window, never the entry's
                # own claim of freshness (which whoever wrote the key chose).
                self._remember_stored(uhash, known_ttl / 1000)
            return Lookup(state="hit", generation=generation, entry=found, key=base)
        names = found.names
        self._remember_vary(uhash, names)
        vkey = keys.variant_key(base, keys.variant_hash(names, values_for(names)))
        if guessed_key is not None and guess == names:
            variant_reply = replies[2]
        else:
            (variant_reply,) = await self._read([vkey])
        variant = _decode_reply(variant_reply)
        if isinstance(variant, CachedEntry):
            return Lookup(state="hit", generation=generation, entry=variant, names=names, key=vkey)
        state = "vary-miss" if _is_empty(variant_reply) else "corrupt"
        return Lookup(state=state, generation=generation, names=names)

    async def _lookup_or_lock(self, base: str, fill: FillLock, ttl: float) -> Any:
        """PTTL and HGETALL of a URL's key (as READ_SCRIPT answers, for ``_hash_replies``);
        when it is empty, try its fill lock (an int) instead."""
        try:
            return await self._lookup_script(
                keys=[base, keys.lock_key(base, fill.variant), keys.pass_key(base)],
                args=[fill.token, max(1, int(ttl * 1000))],
            )
        except ResponseError as exc:  # WRONGTYPE inside the script: garbage at our key
            return _garbage_or_raise(exc)

    async def _hgetall(self, key: str) -> Any:
        """Return HGETALL of a key, or the error when the key holds another type."""
        try:
            return await self._client.hgetall(key)
        except ResponseError as exc:  # WRONGTYPE: garbage at our key, a miss
            return _garbage_or_raise(exc)

    async def _read(self, read_keys: list[str]) -> list[Any]:
        """Return, for each key (of one URL: one slot), its fields as HGETALL would, or
        ``NOT_OURS`` for a key holding another type or a hash without a TTL: one command."""
        return _hash_replies(await self._read_reply(read_keys), len(read_keys))

    async def _read_reply(self, read_keys: list[str]) -> Any:
        """Return READ_SCRIPT's reply for the keys (PTTL, fields, per key): one command."""
        script = self._read_script
        try:
            # EVALSHA itself: calling the script object costs a hit ~4% more CPU (it runs an
            # import statement on every call); it is there to load the script when missing.
            reply = await self._client.evalsha(script.sha, len(read_keys), *read_keys)
        except NoScriptError:
            return await script(keys=read_keys)
        return reply

    # -- writes ---------------------------------------------------------------------------

    async def store(
        self,
        uhash: str,
        entry: CachedEntry,
        *,
        ttl: float,
        names: tuple[str, ...] = (),
        values: list[bytes | None] | None = None,
        generation: int | None = None,
        found_names: tuple[str, ...] | None = None,
        host: bytes | None = None,
        path: str | None = None,
        fill: FillLock | None = None,
    ) -> None:
        """Store an entry for a URL (or for one variant of it), never half-written.

        ``names`` and ``values`` are the varying request headers and this request's values of
        them; with no names the entry sits at the URL's key. ``found_names`` are the Vary names
        the lookup found at the URL's key, so that an unchanged marker is only extended.
        ``ttl`` is in seconds, freshness plus the stale window. ``host`` and ``path`` index
        the entry for ``purge_prefix``; the entry's tags index it for ``purge_tag``.
        ``fill`` is the fill lock this request holds, released in the same transaction.

        On a single Redis one script writes the URL's keys, the indexes and the lock release
        atomically; on a cluster the script writes the URL's keys (one slot) and releases
        the lock, and the indexes (other slots) follow in a pipeline split by node.
        """
        ttl_ms = max(1, int(ttl * 1000))
        now_ms = int(time.time() * 1000)
        expiry_ms = now_ms + ttl_ms
        gen = self._generation if generation is None else generation
        base = keys.url_key(self.namespace, gen, uhash)
        fields = entry_codec.encode(entry)
        # On a single Redis one script writes the entry, its indexes and the lock release.
        # On a cluster the same script writes only the URL's keys (one slot, its hash tag)
        # and the lock release; the indexes (other slots) follow in a pipeline the client
        # splits by node. redis-py's transactional cluster pipeline is not used: it queues
        # each command through a thread of its own.
        cluster = self._cluster
        await self._store_single(
            base,
            uhash,
            fields,
            ttl_ms,
            now_ms,
            expiry_ms,
            names,
            values,
            found_names,
            () if cluster else entry.tags,
            None if cluster else host,
            None if cluster else path,
            fill,
            gen,
        )
        if cluster and (entry.tags or (host is not None and path is not None)):
            entry_key = (
                keys.variant_key(base, keys.variant_hash(names, values or [None] * len(names)))
                if names
                else base
            )
            async with self._client.pipeline(transaction=False) as index_pipe:
                await self._index(
                    index_pipe,
                    gen,
                    entry_key,
                    entry.tags,
                    host,
                    path,
                    uhash,
                    now_ms,
                    expiry_ms,
                    ttl_ms,
                )
                await index_pipe.execute()
        self._remember_vary(uhash, names or None)
        if not names:
            self._remember_stored(uhash, ttl)

    async def _store_single(
        self,
        base: str,
        uhash: str,
        fields: dict[bytes, bytes],
        ttl_ms: int,
        now_ms: int,
        expiry_ms: int,
        names: tuple[str, ...],
        values: list[bytes | None] | None,
        found_names: tuple[str, ...] | None,
        tags: Sequence[str],
        host: bytes | None,
        path: str | None,
        fill: FillLock | None,
        gen: int,
    ) -> None:
        """``store`` on a single Redis: one script writes the entry, its indexes and the
        lock release atomically, so a miss costs one command to send and one round trip."""
        variants = keys.variants_key(base)
        if not names:
            entry_key = base
            mode = STORE_PLAIN
            marker: list[bytes] = []
            vhash = ""
        else:
            vhash = keys.variant_hash(names, values or [None] * len(names))
            entry_key = keys.variant_key(base, vhash)
            if found_names == names:
                mode, marker = STORE_VARY_KEEP_MARKER, []
            else:
                mode = STORE_VARY_NEW_MARKER
                marker = _flat(entry_codec.encode_marker(VaryMarker(names)))
        lock = keys.lock_key(base, fill.variant) if fill is not None else base
        if host is not None and path is not None:
            lex, exp = keys.prefix_keys(self.namespace, gen, host)
            hosts = keys.hosts_key(self.namespace, gen)
            host_arg = host
            member = keys.path_member(path, uhash)
        else:
            lex = exp = hosts = base
            host_arg = member = b""
        flat = _flat(fields)
        await self._store_script(
            keys=[
                base,
                entry_key,
                variants,
                lock,
                lex,
                exp,
                hosts,
                *(keys.tag_key(self.namespace, gen, tag) for tag in tags),
            ],
            args=[
                ttl_ms,
                now_ms,
                expiry_ms,
                mode,
                vhash,
                "" if fill is None else fill.token,
                host_arg,
                member,
                PRUNE_BATCH,
                len(flat),
                *flat,
                *marker,
            ],
        )

    async def _index(
        self,
        pipe: Any,
        gen: int,
        entry_key: str,
        tags: Sequence[str],
        host: bytes | None,
        path: str | None,
        uhash: str,
        now_ms: int,
        expiry_ms: int,
        ttl_ms: int,
    ) -> None:
        """Queue the index updates for a stored entry (on a cluster, where they cannot join
        the entry's script): one script per index key's slot, for each tag set, the host's
        path index (both its keys share a slot) and the set of hosts."""
        indexed = _text(entry_key)
        for tag in tags:
            tkey = keys.tag_key(self.namespace, gen, tag)
            await self._queue_script(
                pipe, self._index_script, [tkey], ["t", ttl_ms, now_ms, expiry_ms, indexed, 0]
            )
        if host is None or path is None:
            return
        lex, exp = keys.prefix_keys(self.namespace, gen, host)
        member = keys.path_member(path, uhash)
        await self._queue_script(
            pipe,
            self._index_script,
            [lex, exp],
            ["p", ttl_ms, now_ms, expiry_ms, member, PRUNE_BATCH],
        )
        hkey = keys.hosts_key(self.namespace, gen)
        await self._queue_script(
            pipe, self._index_script, [hkey], ["h", ttl_ms, now_ms, expiry_ms, host, 0]
        )

    async def _queue_script(
        self, pipe: Any, script: Any, script_keys: list[str], args: list[Any]
    ) -> None:
        """Queue a script in a pipeline: EVALSHA on one Redis; EVAL (with the script's text)
        on a cluster, whose pipelines refuse EVALSHA and whose nodes (a replica promoted
        after a failover among them) may not have the script loaded."""
        if self._cluster:
            pipe.eval(script.script, len(script_keys), *script_keys, *args)
        else:
            await script(keys=script_keys, args=args, client=pipe)

    # -- fill locks ---------------------------------------------------------------------

    async def acquire_fill(self, uhash: str, fill: FillLock, ttl: float, generation: int) -> int:
        """Try to take the fill lock of a URL (variant) for ``ttl`` seconds: ``ACQUIRED``,
        ``HELD`` or ``PASS``. The owner keeps it with ``renew_fill`` while it fills.

        ``PASS`` means the URL's last response was not storable (hit-for-pass): callers go
        to the app at once instead of queueing behind a lock.
        """
        base = keys.url_key(self.namespace, generation, uhash)
        result = await self._acquire_script(
            keys=[keys.lock_key(base, fill.variant), keys.pass_key(base)],
            args=[fill.token, max(1, int(ttl * 1000))],
        )
        return int(result)

    async def renew_fill(self, uhash: str, fill: FillLock, ttl: float, generation: int) -> bool:
        """Make a fill lock this request holds live ``ttl`` seconds from now; return False
        when it is no longer ours (it expired, and maybe someone else took it)."""
        base = keys.url_key(self.namespace, generation, uhash)
        result = await self._renew_script(
            keys=[keys.lock_key(base, fill.variant)],
            args=[fill.token, max(1, int(ttl * 1000))],
        )
        return int(result) == 1

    async def take_over_fill(
        self, uhash: str, fill: FillLock, ttl: float, window: float, generation: int
    ) -> int:
        """Take a fill lock over for ``ttl`` seconds, whoever holds it, unless another waiter
        did in the last ``window`` seconds (``coalesce_timeout``): ``ACQUIRED``, ``HELD`` or
        ``PASS`` (hit-for-pass), as ``acquire_fill`` answers.

        For a waiter whose wait for a slow fill ran out: one of them, across all processes,
        fills in its place per ``window``; the slow owner's renewals and store leave the lock,
        now this one's, alone.
        """
        base = keys.url_key(self.namespace, generation, uhash)
        result = await self._takeover_script(
            keys=[
                keys.lock_key(base, fill.variant),
                keys.takeover_key(base, fill.variant),
                keys.pass_key(base),
            ],
            args=[fill.token, max(1, int(ttl * 1000)), max(1, int(window * 1000))],
        )
        return int(result)

    async def release_fill(
        self, uhash: str, fill: FillLock, generation: int, *, pass_for: float = 0.0
    ) -> None:
        """Release a fill lock if this request still owns it; with ``pass_for``, remember
        for that many seconds that the URL's response is not storable."""
        base = keys.url_key(self.namespace, generation, uhash)
        await self._release_script(
            keys=[keys.lock_key(base, fill.variant), keys.pass_key(base)],
            args=[fill.token, int(pass_for * 1000)],
        )

    async def drop_entry(self, uhash: str, key: str, stored_at: float) -> bool:
        """Delete the entry at ``key`` (a URL's key, or one of its variants' keys) if it is
        still the one stored at ``stored_at``; return whether it went.

        For an entry the app's newer answer has superseded: an entry stored since by another
        request is kept. Tag and path index members of the entry are left to expire; a purge
        that reaches them finds nothing to remove.
        """
        result = await self._drop_script(
            keys=[key], args=[entry_codec.F_STORED_AT, entry_codec.encode_number(stored_at)]
        )
        dropped = int(result) == 1
        if dropped:
            self._stored_until.pop(uhash, None)  # a hint only: the next lookup may try the lock
        return dropped

    # -- purges ---------------------------------------------------------------------------

    async def _current_generation(self) -> int:
        self._generation = _parse_generation(await self._client.get(self._generation_key))
        self._generation_checked_at = time.monotonic()
        return self._generation

    @_admin
    async def purge_url(self, url: str, *, method: str = "GET") -> int:
        """Remove every stored variant of an absolute URL; return how many entries went."""
        removed = await self.purge_hashes([self.hash_for_url(url, method)])
        await self._purged(PurgeEvent("url", (url,), removed))
        return removed

    @_admin
    async def purge_hash(self, uhash: str) -> int:
        """Remove every stored variant of the URL with this hash; return how many went."""
        return await self.purge_hashes([uhash])

    @_admin
    async def purge_hashes(self, uhashes: Sequence[str]) -> int:
        """Remove every stored variant of the URLs with these hashes; return how many went."""
        if not uhashes:
            return 0
        gen = await self._current_generation()
        bases = [keys.url_key(self.namespace, gen, h) for h in uhashes]
        async with self._client.pipeline(transaction=False) as pipe:
            for base in bases:
                pipe.hexists(base, entry_codec.F_STATUS)
                pipe.smembers(keys.variants_key(base))
            replies = await pipe.execute(raise_on_error=False)
        # The keys of one URL share a slot (its hash tag): two UNLINKs per URL, one for the
        # entries (counted) and one for the marker and variant set (not counted).
        groups: list[list[str]] = []
        for i, base in enumerate(bases):
            is_entry, members = replies[2 * i], replies[2 * i + 1]
            entry = is_entry is True or is_entry == 1
            entries = [base] if entry else []
            if isinstance(members, (set, list)):
                # A member that is no variant hash (not ASCII) is none of ours: left out.
                entries += [
                    keys.variant_key(base, m.decode("ascii"))
                    for m in members
                    if isinstance(m, bytes) and m.isascii()
                ]
            groups.append(entries)
            groups.append([keys.variants_key(base)] + ([] if entry else [base]))
        removed = await self._unlink(groups)
        for h in uhashes:
            self._remember_vary(h, None)
            self._stored_until.pop(h, None)
        total = sum(removed[0::2])
        self.stats.purged += total
        return total

    async def _unlink(self, groups: Sequence[Sequence[str]]) -> list[int]:
        """UNLINK groups of keys, each group in one slot; return how many went per group.

        Each group is one multi-key UNLINK (at most ``UNLINK_BATCH`` keys a command), all in
        one non-transactional pipeline, which a cluster client splits by node.
        """
        counts = [0] * len(groups)
        if not any(groups):
            return counts
        owners: list[int] = []
        async with self._client.pipeline(transaction=False) as pipe:
            for i, group in enumerate(groups):
                for start in range(0, len(group), UNLINK_BATCH):
                    # execute_command: the cluster pipeline's ``unlink`` refuses several keys.
                    pipe.execute_command("UNLINK", *group[start : start + UNLINK_BATCH])
                    owners.append(i)
            for i, reply in zip(owners, await pipe.execute(), strict=True):
                counts[i] += int(reply)
        return counts

    @_admin
    async def purge_tag(self, *tags: str) -> int:
        """Remove every entry that carries any of the tags; return how many went."""
        gen = await self._current_generation()
        now_ms = int(time.time() * 1000)
        tkeys = [keys.tag_key(self.namespace, gen, t) for t in tags]
        marked = await self._mark([([tkey], [now_ms]) for tkey in tkeys])
        members = sorted(self._own_keys(m for pairs in marked for m, _ in pairs))
        removed = await self._unlink(_by_slot(members))
        # Remove only what was read, and only where nothing was stored since: an entry
        # tagged meanwhile, or the same URL stored again, stays findable.
        await self._sweep([([tkey], pairs) for tkey, pairs in zip(tkeys, marked, strict=True)])
        total = sum(removed)
        self.stats.purged += total
        await self._purged(PurgeEvent("tag", tuple(tags), total))
        return total

    def _own_keys(self, members: Iterable[Any]) -> set[str]:
        """Return the index members that name keys of this namespace: a member that is not
        text, or names a key elsewhere (written by whoever else can write our keys), is
        never deleted; it is swept out of the index like the others."""
        prefix = f"{self.namespace}:"
        own: set[str] = set()
        for member in members:
            try:
                key = _text(member)
            except UnicodeDecodeError:
                continue
            if key.startswith(prefix):
                own.add(key)
        return own

    @_admin
    async def purge_prefix(self, path_prefix: str, *, host: str | None = None) -> int:
        """Remove every entry whose path is under a path-segment prefix; return how many.

        ``/users`` removes ``/users`` (any query) and ``/users/...``, not ``/users2``. With
        ``host`` (``example.com`` or ``example.com:8080``) only that host's entries go;
        without, every host's. Reads the index kept at store time, never the keyspace.
        """
        if not isinstance(path_prefix, str) or not path_prefix.startswith("/"):
            raise ValueError(f"path_prefix must start with '/', got {path_prefix!r}")
        gen = await self._current_generation()
        now_ms = int(time.time() * 1000)
        if host is not None:
            hosts = [
                keys.normalise_host(host.encode("latin-1", "replace"), "http"),
                keys.normalise_host(host.encode("latin-1", "replace"), "https"),
            ]
            hosts = list(dict.fromkeys(hosts))
        else:
            hosts = [
                h if isinstance(h, bytes) else str(h).encode()
                for h in await self._client.zrangebyscore(
                    keys.hosts_key(self.namespace, gen), now_ms, "+inf"
                )
            ]
        bounds = [bound for pair in keys.prefix_ranges(path_prefix) for bound in pair]
        index_keys = [list(keys.prefix_keys(self.namespace, gen, h)) for h in hosts]
        marked = await self._mark([(pair, bounds) for pair in index_keys])
        uhashes = sorted({m.rsplit(b"\x00", 1)[-1].decode() for pairs in marked for m, _ in pairs})
        total = await self.purge_hashes(uhashes)
        # As in purge_tag: a URL stored again meanwhile keeps its place in the index.
        await self._sweep(list(zip(index_keys, marked, strict=True)))
        await self._purged(
            PurgeEvent("prefix", (path_prefix if host is None else f"{host}{path_prefix}",), total)
        )
        return total

    async def _mark(
        self, indexes: Sequence[tuple[list[str], list[Any]]]
    ) -> list[list[tuple[bytes, bytes]]]:
        """Read the members a purge removes from each index (its keys, ``PURGE_MARK_SCRIPT``'s
        arguments), marking each one; return ``(member, mark)`` pairs per index."""
        if not indexes:
            return []
        async with self._client.pipeline(transaction=False) as pipe:
            for index_keys, args in indexes:
                await self._queue_script(pipe, self._mark_script, index_keys, args)
            replies = await pipe.execute()
        return [
            [(bytes(m), bytes(k)) for m, k in zip(r[0::2], r[1::2], strict=True)] for r in replies
        ]

    async def _sweep(self, indexes: Sequence[tuple[list[str], list[tuple[bytes, bytes]]]]) -> None:
        """Remove from each index (its keys) the members ``_mark`` read, those still marked:
        a member stored again since carries a new score, and stays."""
        if not any(pairs for _, pairs in indexes):
            return
        async with self._client.pipeline(transaction=False) as pipe:
            for index_keys, pairs in indexes:
                for start in range(0, len(pairs), SWEEP_BATCH):
                    args = [item for pair in pairs[start : start + SWEEP_BATCH] for item in pair]
                    await self._queue_script(pipe, self._sweep_script, index_keys, args)
            await pipe.execute()

    @_admin
    async def clear(self) -> None:
        """Forget everything in the namespace at once (O(1)): old keys are never read again,
        and Redis expires them by their TTLs.

        This process sees it at once; other processes at their next generation check, within
        ``generation_check_interval`` seconds (0 makes every lookup check, at the price of a
        second command per hit).
        """
        self._generation = int(await self._client.incr(self._generation_key))
        self._generation_checked_at = time.monotonic()
        self._vary_names.clear()
        self._stored_until.clear()
        await self._purged(PurgeEvent("clear", (), None))

    @property
    def has_purge_hook(self) -> bool:
        """Return whether an ``on_purge`` hook was given."""
        return self._on_purge is not None

    def notify_soon(self, event: PurgeEvent) -> None:
        """Call the ``on_purge`` hook with ``event`` in a task of its own, without waiting for
        it: the middleware's invalidations answer the client while the hook runs. A failing
        hook is logged; ``aclose()`` waits for the calls still running."""
        if self._on_purge is None:
            return
        if not self._hook_calls.spawn(self._notify(event), name="on_purge"):
            _hook_warn(
                "on_purge",
                f"redis-cache dropped an on_purge event ({event.kind} {event.values}): "
                f"{MAX_PENDING_HOOKS} hook calls are still running",
            )

    async def _purged(self, event: PurgeEvent) -> None:
        """Log an explicit purge (at debug) and tell the ``on_purge`` hook."""
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "purged (%s): %s",
                " ".join([event.kind, *(repr(v) for v in event.values)]),
                "the namespace" if event.removed is None else f"{event.removed} removed",
            )
        await self._notify(event)

    async def _notify(self, event: PurgeEvent) -> None:
        hook = self._on_purge
        if hook is None:
            return
        try:
            result = hook(event)
            if inspect.isawaitable(result):
                await result
        except Exception:
            logger.exception("on_purge hook failed for %s", event)

    # -- inspection -----------------------------------------------------------------------

    @_admin
    async def inspect_url(self, url: str, *, method: str = "GET") -> list[EntryInfo]:
        """Return what is stored for an absolute URL: one ``EntryInfo`` per variant.

        What is not ours is left out, as a lookup reads it as a miss: a key that does not
        decode (another type, a forged or damaged entry) or that has no TTL.
        """
        uhash = self.hash_for_url(url, method)
        gen = await self._current_generation()
        base = keys.url_key(self.namespace, gen, uhash)
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.hgetall(base)
            pipe.pttl(base)
            pipe.smembers(keys.variants_key(base))
            found, base_ttl, members = await pipe.execute(raise_on_error=False)
        decoded = _decode_reply(found) if base_ttl != -1 else None
        now = time.time()
        if isinstance(decoded, CachedEntry):
            return [_info(base, decoded, base_ttl, (), now)]
        if not isinstance(decoded, VaryMarker) or not isinstance(members, (set, list)):
            return []
        vkeys = [
            keys.variant_key(base, m.decode("ascii"))
            for m in sorted(members)
            if isinstance(m, bytes) and m.isascii()
        ]
        async with self._client.pipeline(transaction=False) as pipe:
            for vkey in vkeys:
                pipe.hgetall(vkey)
                pipe.pttl(vkey)
            replies = await pipe.execute(raise_on_error=False)
        infos = []
        for i, vkey in enumerate(vkeys):
            variant = _decode_reply(replies[2 * i]) if replies[2 * i + 1] != -1 else None
            if isinstance(variant, CachedEntry):
                infos.append(_info(vkey, variant, replies[2 * i + 1], decoded.names, now))
        return infos

    @_admin
    async def scan_stats(self, *, sample: int = 1000) -> NamespaceStats:
        """Return how many entries the namespace holds and about how many bytes (SCAN).

        Entries are counted over the whole namespace; bytes are ``MEMORY USAGE`` of up to
        ``sample`` entry keys, scaled to the count (``sampled`` says when that was needed).
        On a cluster, SCAN runs on every primary.
        """
        gen = await self._current_generation()
        prefix = f"{self.namespace}:{gen}:"
        bases: list[bytes] = []
        variants: list[bytes] = []
        scanned = 0
        async for raw in self._client.scan_iter(match=prefix + "*", count=1000):
            scanned += 1
            key = bytes(raw) if not isinstance(raw, str) else raw.encode()
            tail = key[len(prefix) :]
            if tail.startswith(b"{") and tail.endswith(b"}"):
                bases.append(key)
            elif b"}:v:" in tail:
                variants.append(key)
        entry_bases: list[bytes] = []
        for i in range(0, len(bases), 500):
            chunk = bases[i : i + 500]
            async with self._client.pipeline(transaction=False) as pipe:
                for key in chunk:
                    pipe.hexists(key, entry_codec.F_STATUS)
                flags = await pipe.execute(raise_on_error=False)
            entry_bases += [k for k, f in zip(chunk, flags, strict=True) if f is True or f == 1]
        entry_keys = entry_bases + variants
        measured = entry_keys[:sample]
        size = 0
        if measured:
            async with self._client.pipeline(transaction=False) as pipe:
                for key in measured:
                    pipe.memory_usage(key)
                usages = await pipe.execute(raise_on_error=False)
            size = sum(int(u) for u in usages if isinstance(u, int))
            if len(entry_keys) > len(measured):
                size = int(size * len(entry_keys) / len(measured))
        return NamespaceStats(
            entries=len(entry_keys),
            bytes=size,
            keys_scanned=scanned,
            sampled=len(entry_keys) > len(measured),
        )


PRUNE_BATCH = 100

ACQUIRED, HELD, PASS = 1, 0, -1

STORE_PLAIN, STORE_VARY_KEEP_MARKER, STORE_VARY_NEW_MARKER = 0, 1, 2


_TOKEN_PREFIX = secrets.token_hex(6)
_TOKEN_COUNTER = itertools.count()


def new_token() -> str:
    """Return a fill lock token no other request, process or host uses: a random prefix
    drawn at import, the process id (forked workers share the prefix) and a counter."""
    return f"{_TOKEN_PREFIX}.{os.getpid():x}.{next(_TOKEN_COUNTER):x}"


@dataclass(frozen=True, slots=True)
class FillLock:
    """A fill lock: which variant of the URL (``""`` for the URL) and the owner's token."""

    variant: str
    token: str


@dataclass(frozen=True, slots=True)
class PurgeEvent:
    """What a purge did, for the ``on_purge`` hook (e.g. to forward it to a CDN).

    ``kind`` is ``url``, ``tag``, ``prefix``, ``clear``, or ``invalidate`` for the
    middleware's automatic invalidation after an unsafe request (``values``: the absolute
    URLs purged, as ``purge_url`` takes them). ``removed`` is how many entries went; None for
    ``clear``, and for an invalidation whose purge did not reach Redis (the URLs changed all
    the same).
    """

    kind: str
    values: tuple[str, ...]
    removed: int | None


@dataclass(frozen=True, slots=True)
class EntryInfo:
    """One stored variant, as ``inspect_url`` sees it."""

    key: str
    status: int
    stored_at: float
    age: float
    ttl_left: float | None
    fresh_for: float
    stale_for: float
    tags: tuple[str, ...]
    size: int
    vary: tuple[str, ...]
    vary_values: dict[str, str | None]


@dataclass(frozen=True, slots=True)
class NamespaceStats:
    """What ``scan_stats`` found in the namespace."""

    entries: int
    bytes: int
    keys_scanned: int
    sampled: bool


def _info(key: str, entry: CachedEntry, pttl: Any, names: tuple[str, ...], now: float) -> EntryInfo:
    ttl_left = int(pttl) / 1000 if isinstance(pttl, int) and pttl >= 0 else None
    return EntryInfo(
        key=key,
        status=entry.status,
        stored_at=entry.stored_at,
        age=entry.age(now),
        ttl_left=ttl_left,
        fresh_for=entry.fresh_for,
        stale_for=entry.stale_for,
        tags=entry.tags,
        size=len(entry.body),
        vary=names,
        vary_values={n: None if v is None else v.decode("latin-1") for n, v in entry.request_vary},
    )


def _flat(mapping: dict[bytes, bytes]) -> list[bytes]:
    """A mapping as the flat field, value, field, value list HSET takes."""
    return [item for pair in mapping.items() for item in pair]


def _garbage_or_raise(error: ResponseError) -> ResponseError:
    """Return a WRONGTYPE error (garbage at our key: a miss); raise any other (NOPERM, OOM,
    LOADING...): Redis refused the read, which is not the same as finding nothing."""
    if "WRONGTYPE" in str(error):
        return error
    raise error


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _parse_generation(reply: Any) -> int:
    if reply is None or isinstance(reply, Exception):
        return 0
    try:
        return int(reply)
    except (TypeError, ValueError):
        return 0


def _is_empty(reply: Any) -> bool:
    return isinstance(reply, (dict, list)) and not reply


class _NotOurs:
    """What ``_read`` gives for a key we did not write: it holds another type than a hash,
    or it is a hash without a TTL (our stores always set one). Decodes as nothing, and is
    not empty: a lookup reads it as "corrupt", and the next store overwrites it."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NOT_OURS"


NOT_OURS = _NotOurs()


def _first_pttl(reply: Any) -> Any:
    """Return the PTTL a READ_SCRIPT or LOOKUP_SCRIPT reply gives for its first key."""
    return reply[0] if isinstance(reply, list) and reply else None


def _hash_replies(reply: Any, count: int) -> list[Any]:
    """READ_SCRIPT's reply (PTTL, fields, per key) as one HGETALL reply per key, with
    ``NOT_OURS`` for a key holding another type or a hash without a TTL.

    Also takes LOOKUP_SCRIPT's reply for a found key, and the WRONGTYPE error it raises for
    a key holding another type (``_garbage_or_raise``)."""
    if not isinstance(reply, list) or len(reply) != 2 * count:
        return [NOT_OURS] * count
    out: list[Any] = []
    for pttl, found in zip(reply[0::2], reply[1::2], strict=True):
        if isinstance(found, list) and (not found or pttl != -1):
            out.append(found)
        else:
            out.append(NOT_OURS)
    return out


def _decode_reply(reply: Any) -> CachedEntry | VaryMarker | None:
    if isinstance(reply, dict) and reply:
        return entry_codec.decode(reply)
    if isinstance(reply, list) and reply:  # RESP2 parsers without the callback: flat pairs
        return entry_codec.decode(dict(zip(reply[::2], reply[1::2], strict=False)))
    return None


#: Most keys one UNLINK command names.
UNLINK_BATCH = 256

#: Most members one PURGE_SWEEP_SCRIPT call checks.
SWEEP_BATCH = 500


def _by_slot(names: Sequence[str]) -> list[list[str]]:
    """Group key names by Redis Cluster hash slot (so a multi-key command stays in one)."""
    groups: dict[int, list[str]] = {}
    for name in names:
        groups.setdefault(key_slot(name.encode()), []).append(name)
    return list(groups.values())


#: URL schemes of ``from_url`` that make a cluster client, and a Sentinel-made one.
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")


def _split_hosts(url: str) -> tuple[list[tuple[str, int]], str | None, str | None, str, bool]:
    """Parse ``scheme://[user:password@]host:port[,host:port...][/path]``.

    Returns the hosts, user, password, path and whether TLS was asked for; raises
    ``ValueError`` saying what is wrong.
    """
    from urllib.parse import unquote

    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"expected scheme://host:port, got {url!r}")
    if "?" in rest or "#" in rest:
        raise ValueError(
            f"{scheme}:// URLs take no query string or fragment; pass options as keywords"
        )
    netloc, slash, path = rest.partition("/")
    userinfo, at, hostlist = netloc.rpartition("@")
    user: str | None = None
    password: str | None = None
    if at:
        name, colon, secret = userinfo.partition(":")
        user = unquote(name) or None
        password = unquote(secret) if colon else None
    hosts: list[tuple[str, int]] = []
    for item in hostlist.split(","):
        item = item.strip()
        if item.startswith("["):  # [IPv6]:port
            host, close, tail = item[1:].partition("]")
            if not close:
                raise ValueError(f"unclosed '[' in host {item!r}")
            port_text = tail[1:] if tail.startswith(":") else tail
        else:
            host, _, port_text = item.partition(":")
        if not host:
            raise ValueError(f"empty host in {url!r}")
        try:
            port = int(port_text) if port_text else 6379
        except ValueError:
            raise ValueError(f"bad port {port_text!r} for host {host!r}") from None
        if not 0 < port < 65536:
            raise ValueError(f"port {port} of host {host!r} is out of range")
        hosts.append((host, port))
    return hosts, user, password, path if slash else "", scheme.lower().startswith("rediss")


def _cluster_client(url: str, options: dict[str, Any]) -> AnyRedis:
    """Build a ``RedisCluster`` from a ``redis+cluster://`` URL (see ``from_url``)."""
    from redis.asyncio.cluster import ClusterNode, RedisCluster

    hosts, user, password, path, tls = _split_hosts(url)
    if path.strip("/") not in ("", "0"):
        raise ValueError(f"a cluster has only database 0, got path /{path}")
    kwargs = dict(options)
    if user is not None:
        kwargs.setdefault("username", user)
    if password is not None:
        kwargs.setdefault("password", password)
    if tls:
        kwargs.setdefault("ssl", True)
    return RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in hosts], **kwargs)


def _sentinel_client(url: str, options: dict[str, Any]) -> tuple[AnyRedis, list[Any]]:
    """Build a master client from a ``redis+sentinel://`` URL (see ``from_url``); also
    return the sentinel clients, which the cache closes with it."""
    from redis.asyncio.sentinel import Sentinel

    hosts, user, password, path, tls = _split_hosts(url)
    parts = [p for p in path.split("/") if p]
    if not parts or len(parts) > 2:
        raise ValueError(f"expected /service_name[/db] after the sentinels, got /{path}")
    service = parts[0]
    db = 0
    if len(parts) == 2:
        try:
            db = int(parts[1])
        except ValueError:
            raise ValueError(f"bad database number {parts[1]!r}") from None
    kwargs = dict(options)
    sentinel_kwargs = kwargs.pop("sentinel_kwargs", None) or {
        key: kwargs[key]
        for key in ("socket_timeout", "socket_connect_timeout", "retry")
        if key in kwargs
    }
    kwargs["db"] = db
    if user is not None:
        kwargs.setdefault("username", user)
    if password is not None:
        kwargs.setdefault("password", password)
    if tls:
        kwargs.setdefault("ssl", True)
    sentinel = Sentinel(hosts, sentinel_kwargs=sentinel_kwargs, **kwargs)  # type: ignore[no-untyped-call]
    return sentinel.master_for(service, redis_class=Redis), list(sentinel.sentinels)


def _is_cluster(client: Any) -> bool:
    try:
        from redis.asyncio.cluster import RedisCluster
    except ImportError:  # pragma: no cover - every supported redis-py has it
        return False
    return isinstance(client, RedisCluster)


def _decodes_responses(client: Any) -> bool:
    getter = getattr(client, "get_connection_kwargs", None)
    if callable(getter):
        try:
            return bool(getter().get("decode_responses", False))
        except Exception:  # pragma: no cover - unusual clients
            return False
    pool = getattr(client, "connection_pool", None)
    kwargs = getattr(pool, "connection_kwargs", {})
    return bool(kwargs.get("decode_responses", False))
