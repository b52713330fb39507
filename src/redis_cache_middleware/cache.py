"""``RedisCache``: the one object that owns the Redis client, the namespace and the key scheme.

The middleware, the app's own code (``await cache.purge_url(...)``) and the admin tools all go
through it, so every way of reading, writing or purging uses the same keys. It and its
private parts are the only modules that talk to Redis. Methods raise the client's
``redis.exceptions.RedisError`` on trouble; the middleware catches them (it fails open),
explicit admin calls let them surface.

Ownership follows redis-py: a cache built with ``from_url`` owns its client and closes it in
``aclose()``; a client handed in is the caller's and is never closed by us.

``RedisCache`` keeps the options, the statistics and the breaker, and hands the work to
the parts in ``_redis/``, each owning one thing and never importing this module:
``connect`` (the client ``from_url`` builds), ``state`` (what the parts share: client,
namespace, generation, what this process remembers of URLs), ``url_keys`` (a URL's hash),
``lookup`` and ``store`` (reading and writing entries), ``fill_locks``, ``purging`` (purges
and the ``on_purge`` hook), ``inspection``, and ``near`` and ``tracking`` (the near cache,
``near_cache_bytes``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, Concatenate, ParamSpec, TypeVar

from ._redis.connect import (
    CLUSTER_SCHEMES,
    SENTINEL_SCHEMES,
    WAIT_IN_PLACE,
    AnyRedis,
    check_options,
    client_for_url,
)
from ._redis.fill_locks import ACQUIRED, HELD, PASS, FillLock, FillLocks, new_token
from ._redis.inspection import EntryInfo, NamespaceStats, inspect_url, scan_stats
from ._redis.lookup import NOT_OURS, Lookup, Reader
from ._redis.purging import (
    HOOK_DRAIN_TIMEOUT,
    MAX_PENDING_HOOKS,
    SWEEP_BATCH,
    UNLINK_BATCH,
    PurgeEvent,
    Purger,
)
from ._redis.state import VARY_MEMORY, CacheState
from ._redis.store import (
    PRUNE_BATCH,
    STORE_PLAIN,
    STORE_VARY_KEEP_MARKER,
    STORE_VARY_NEW_MARKER,
    Writer,
)
from ._redis.url_keys import HASH_MEMORY, METHOD_CLASS_GET, QUERY_AS_SENT, UrlKeys
from ._timeouts import WAIT_FOR_SWALLOWS_CANCELLATION, run_bounded, sends_under_wait_for
from .background import BackgroundTasks
from .breaker import CircuitBreaker
from .entry import CachedEntry
from .exceptions import ConfigError
from .stats import CacheStats

#: ``RedisCache`` and the names importable from here, which live in its parts.
__all__ = [
    "ACQUIRED",
    "CLUSTER_SCHEMES",
    "HASH_MEMORY",
    "HELD",
    "HOOK_DRAIN_TIMEOUT",
    "MAX_PENDING_HOOKS",
    "METHOD_CLASS_GET",
    "NOT_OURS",
    "PASS",
    "PRUNE_BATCH",
    "QUERY_AS_SENT",
    "SENTINEL_SCHEMES",
    "STORE_PLAIN",
    "STORE_VARY_KEEP_MARKER",
    "STORE_VARY_NEW_MARKER",
    "SWEEP_BATCH",
    "UNLINK_BATCH",
    "VARY_MEMORY",
    "AnyRedis",
    "EntryInfo",
    "FillLock",
    "Lookup",
    "NamespaceStats",
    "PurgeEvent",
    "RedisCache",
    "new_token",
]

logger = logging.getLogger("redis_cache_middleware")


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


class RedisCache:
    """A namespaced HTTP response cache kept in Redis.

    ``client`` is a ``redis.asyncio.Redis`` (or a ``redis.asyncio.cluster.RedisCluster``,
    a master client from ``redis.asyncio.sentinel.Sentinel(...).master_for(...)``, or
    ``fakeredis.FakeAsyncRedis``) made with ``decode_responses=False``; it is not closed by
    ``aclose()``. On a cluster every operation keeps to one slot per command (see
    ``docs/scaling.md``). ``namespace`` prefixes every key (letters, digits, ``_ . -``; at most 64).

    ``multiplex``: a request's commands pipelined on one pooled connection (``_redis/lane.py``).
    ``wait_in_place``: how long a likely miss may block the loop for its lookup (``in_place.py``).
    ``near_cache_bytes``: hits from process memory, kept coherent by Redis (``_redis/near.py``).
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
        multiplex: bool = True,
        near_cache_bytes: int = 0,
        wait_in_place: float = WAIT_IN_PLACE,
    ) -> None:
        check_options(
            client, namespace, admin_timeout, generation_check_interval, multiplex, wait_in_place
        )
        #: Bounds each purge, clear, inspect and scan call (the middleware bounds its own calls
        #: with its ``timeout``): a client without a socket timeout cannot hang them.
        self.admin_timeout = admin_timeout
        self._owns_client = False
        self.namespace = namespace
        #: The generation, and what this process remembers of URLs, shared by the parts.
        self._state = CacheState(
            client, namespace, float(generation_check_interval), multiplex, float(wait_in_place)
        )
        self._url_keys = UrlKeys()
        #: Whether any query parameter is ignored (``ignore_query_params``).
        self.has_ignored_query = False
        #: What the middlewares using this cache did, in this process.
        self.stats = CacheStats()
        self._state.enable(self.stats, near_cache_bytes)
        #: Skips Redis for a cool-down after repeated failures (shared by the middlewares).
        self.breaker = CircuitBreaker(
            breaker_threshold, breaker_cooldown, transitions=self.stats.breaker_transitions
        )
        if on_purge is not None and not callable(on_purge):
            raise ConfigError("on_purge must be a callable taking a PurgeEvent")
        #: Whether each call is bounded in a task of its own (``_timeouts.run_bounded``):
        #: on Python < 3.12, for a client that sends under ``asyncio.wait_for`` (one with a
        #: ``socket_timeout``), whose calls can outlive a timeout in the request's task.
        self.isolate_calls = WAIT_FOR_SWALLOWS_CANCELLATION and sends_under_wait_for(client)
        self._also_close: list[Any] = []
        self._background: list[tuple[BackgroundTasks, float]] = []
        self._reader = Reader(self._state)
        #: A hit from the near cache, or None: no await (``_redis.lookup.Reader.near_hit``).
        self.near_hit = self._reader.near_hit
        self._writer = Writer(self._state)
        self._locks = FillLocks(self._state)
        self._purger = Purger(self._state, self.stats, on_purge)

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
        multiplex: bool = True,
        near_cache_bytes: int = 0,
        wait_in_place: float = WAIT_IN_PLACE,
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

        Besides every redis-py URL (``redis://``, ``rediss://``, ``unix://``), it takes a
        cluster's ``redis+cluster://`` and a Sentinel's ``redis+sentinel://`` (as
        ``_redis.connect.client_for_url`` says). A malformed URL raises ``ConfigError``
        naming ``url``.
        """
        client, also_close = client_for_url(
            url, socket_timeout, connect_timeout, max_connections, client_options
        )
        cache = cls(
            client,
            namespace=namespace,
            on_purge=on_purge,
            breaker_threshold=breaker_threshold,
            breaker_cooldown=breaker_cooldown,
            generation_check_interval=generation_check_interval,
            admin_timeout=admin_timeout,
            multiplex=multiplex,
            near_cache_bytes=near_cache_bytes,
            wait_in_place=wait_in_place,
        )
        cache._owns_client = True
        cache._also_close = also_close
        return cache

    @property
    def generation(self) -> int:
        """Return the namespace generation this process saw last."""
        return self._state.generation

    @property
    def client(self) -> AnyRedis:
        """Return the Redis client this cache uses."""
        return self._state.client

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
        try:
            await run_bounded(self._state.connect, timeout, isolate=self.isolate_calls)
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
        await self._purger.drain()
        await self._state.aclose()
        if self._owns_client:
            await self._state.client.aclose()
            for other in self._also_close:  # a Sentinel's own clients
                await other.aclose()

    async def __aenter__(self) -> RedisCache:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- keys -----------------------------------------------------------------------------

    def ignore_query_params(self, patterns: Sequence[str]) -> None:
        """Drop query parameters matching these glob patterns from every key (and purge).

        The middleware also drops them from the query the app sees (``app_query``), so that
        an app can never answer differently for requests that share a key.
        """
        self.has_ignored_query = self._url_keys.ignore_query_params(patterns)

    def alias_hosts(self, aliases: Mapping[str, str]) -> None:
        """Key each host spelling as its canonical host (``{"localhost:8000": "127.0.0.1:8000"}``)
        everywhere: lookups, stores, purges, ``inspect_url``, invalidations. Adds to the
        aliases given before; ``ConfigError`` for a spelling naming two hosts, or a chain."""
        self._url_keys.alias_hosts(aliases)

    def key_host(self, host: bytes, scheme: str) -> bytes:
        """Return a request's host as keys hold it (``UrlKeys.key_host``): lowercase, without
        the scheme's default port, an alias replaced by its canonical host."""
        return self._url_keys.key_host(host, scheme)

    def app_query(self, query_string: bytes) -> bytes:
        """Return the raw query as keys see it: without the ignored parameters."""
        return self._url_keys.app_query(query_string)

    def url_hash(
        self, scheme: str, host: bytes, path: str, query_string: bytes, method: str = "GET"
    ) -> str:
        """Return the hash naming the keys of a URL (``_redis.url_keys.UrlKeys.url_hash``)."""
        return self._url_keys.url_hash(scheme, host, path, query_string, method)

    def hash_for_url(self, url: str, method: str = "GET") -> str:
        """Return the hash naming the keys of an absolute URL (``UrlKeys.hash_for_url``)."""
        return self._url_keys.hash_for_url(url, method)

    def remembered_vary(self, uhash: str) -> tuple[str, ...] | None:
        """Return the Vary names last seen for a URL in this process, if any."""
        return self._state.vary_names.get(uhash)

    # -- entries and fill locks: the middleware's calls (see _redis/: lookup, store, fill_locks)
    # ``lookup`` (once a request) and ``store`` (once a miss) hand back their part's
    # coroutine rather than await it in one of their own: a call costs one frame, not two.

    def lookup(
        self,
        uhash: str,
        values_for: Callable[[tuple[str, ...]], list[bytes | None]],
        guess: tuple[str, ...] | None = None,
        fill: FillLock | None = None,
        fill_ttl: float = 5.0,
    ) -> Coroutine[Any, Any, Lookup]:
        """Return what is stored for a URL, or its variant (``_redis.lookup.Reader.lookup``)."""
        return self._reader.lookup(uhash, values_for, guess, fill, fill_ttl)

    def store(
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
    ) -> Coroutine[Any, Any, None]:
        """Store an entry for a URL or for one variant of it (``_redis.store.Writer.store``)."""
        return self._writer.store(
            uhash,
            entry,
            ttl=ttl,
            names=names,
            values=values,
            generation=generation,
            found_names=found_names,
            host=host,
            path=path,
            fill=fill,
        )

    async def drop_entry(self, uhash: str, key: str, stored_at: float) -> bool:
        """Delete a superseded entry, unless stored again since (``_redis.store.Writer.drop``)."""
        return await self._writer.drop(uhash, key, stored_at)

    async def acquire_fill(self, uhash: str, fill: FillLock, ttl: float, generation: int) -> int:
        """Try to take a fill lock (``_redis.fill_locks.FillLocks.acquire``)."""
        return await self._locks.acquire(uhash, fill, ttl, generation)

    async def renew_fill(self, uhash: str, fill: FillLock, ttl: float, generation: int) -> bool:
        """Extend a fill lock this request holds (``_redis.fill_locks.FillLocks.renew``)."""
        return await self._locks.renew(uhash, fill, ttl, generation)

    async def take_over_fill(
        self, uhash: str, fill: FillLock, ttl: float, window: float, generation: int
    ) -> int:
        """Take a slow fill's lock over (``_redis.fill_locks.FillLocks.take_over``)."""
        return await self._locks.take_over(uhash, fill, ttl, window, generation)

    async def release_fill(
        self, uhash: str, fill: FillLock, generation: int, *, pass_for: float = 0.0
    ) -> None:
        """Release a fill lock this request owns (``_redis.fill_locks.FillLocks.release``)."""
        await self._locks.release(uhash, fill, generation, pass_for=pass_for)

    # -- purges (see _redis/purging) -------------------------------------------------------

    @_admin
    async def purge_url(self, url: str, *, method: str = "GET") -> int:
        """Remove every stored variant of an absolute URL; return how many entries went."""
        return await self._purger.purge_url(url, self.hash_for_url(url, method))

    @_admin
    async def purge_hash(self, uhash: str) -> int:
        """Remove every stored variant of the URL with this hash; return how many went."""
        return await self._purger.purge_hashes([uhash])

    @_admin
    async def purge_hashes(self, uhashes: Sequence[str]) -> int:
        """Remove every stored variant of the URLs with these hashes; return how many went."""
        return await self._purger.purge_hashes(uhashes)

    @_admin
    async def purge_tag(self, *tags: str) -> int:
        """Remove every entry that carries any of the tags; return how many went."""
        return await self._purger.purge_tag(tags)

    @_admin
    async def purge_prefix(self, path_prefix: str, *, host: str | None = None) -> int:
        """Remove every entry whose path is under a path-segment prefix; return how many.

        ``/users`` removes ``/users`` (any query) and ``/users/...``, not ``/users2``. With
        ``host`` only that host's entries go: ``example.com:8080`` that port,
        ``example.com`` its default ports, ``example.com:*`` every port; a host alias
        (``alias_hosts``) stands for its canonical host. Without, every host's. Reads the
        index kept at store time, never the keyspace.
        """
        hosts, any_port = self._url_keys.prefix_hosts(host) if host is not None else ([], None)
        return await self._purger.purge_prefix(path_prefix, host, hosts, any_port)

    @_admin
    async def clear(self) -> None:
        """Forget everything in the namespace at once (O(1)): old keys are never read again,
        and Redis expires them by their TTLs. This process sees it at once; others at their
        next generation check, within ``generation_check_interval`` seconds (0: every lookup
        checks, a second command per hit), or with a near cache when Redis tells them."""
        await self._purger.clear()

    @property
    def has_purge_hook(self) -> bool:
        """Return whether an ``on_purge`` hook was given."""
        return self._purger.on_purge is not None

    def notify_soon(self, event: PurgeEvent) -> None:
        """Call the ``on_purge`` hook soon, in a task (``_redis.purging.Purger.notify_soon``)."""
        self._purger.notify_soon(event)

    # -- inspection (see _redis/inspection) ---------------------------------------------------

    @_admin
    async def inspect_url(self, url: str, *, method: str = "GET") -> list[EntryInfo]:
        """Return what is stored for an absolute URL: one ``EntryInfo`` per variant.

        What is not ours is left out, as a lookup reads it as a miss: a key that does not
        decode (another type, a forged or damaged entry) or that has no TTL.
        """
        return await inspect_url(self._state, self.hash_for_url(url, method))

    @_admin
    async def scan_stats(self, *, sample: int = 1000) -> NamespaceStats:
        """Return how many entries the namespace holds and about how many bytes (SCAN).

        Entries are counted over the whole namespace; bytes are ``MEMORY USAGE`` of up to
        ``sample`` entry keys, scaled to the count (``sampled`` says when that was needed).
        On a cluster, SCAN runs on every primary.
        """
        return await scan_stats(self._state, sample)
