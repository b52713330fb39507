"""``RedisCache``: the one object that owns the Redis client, the namespace and the key scheme.

The middleware, the app's own code (``await cache.purge_url(...)``) and the admin tools all go
through it, so every way of reading, writing or purging uses the same keys. It is the only
module that talks to Redis. Methods raise the client's ``redis.exceptions.RedisError`` on
trouble; the middleware catches them (it fails open), explicit admin calls let them surface.

Ownership follows redis-py: a cache built with ``from_url`` owns its client and closes it in
``aclose()``; a client handed in is the caller's and is never closed by us.
"""

from __future__ import annotations

import inspect
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ResponseError

from . import entry as entry_codec
from . import keys
from .breaker import CircuitBreaker
from .entry import CachedEntry, VaryMarker
from .exceptions import ConfigError
from .stats import CacheStats

if TYPE_CHECKING:
    from .background import BackgroundTasks

if TYPE_CHECKING:
    from redis.asyncio.cluster import RedisCluster

    AnyRedis = Redis | RedisCluster
else:
    AnyRedis = Any

logger = logging.getLogger("redis_cache_middleware")

#: How many URLs' Vary names a process remembers, to fetch a variant in the first round trip.
VARY_MEMORY = 4096

METHOD_CLASS_GET = "GET"


@dataclass(frozen=True, slots=True)
class Lookup:
    """What a lookup found for a request.

    ``state`` is ``"hit"`` (``entry`` set), ``"uri-miss"`` (nothing stored for the URL),
    ``"vary-miss"`` (the URL varies and this request's variant is not stored) or ``"corrupt"``
    (something unreadable is at the key; the next store overwrites it).
    """

    state: str
    generation: int
    entry: CachedEntry | None = None
    #: The Vary names found at the URL's key, when it holds a marker.
    names: tuple[str, ...] | None = None
    #: The key the entry was read from (the URL's key or a variant's).
    key: str | None = None


class RedisCache:
    """A namespaced HTTP response cache kept in Redis.

    ``client`` is a ``redis.asyncio.Redis`` (or ``RedisCluster``, or
    ``fakeredis.FakeAsyncRedis``) made with ``decode_responses=False``; it is not closed by
    ``aclose()``. ``namespace`` prefixes every key (letters, digits, ``_ . -``; at most 64).
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
        self._ignored_query: list[str] = []
        self._query_filter: Callable[[str], bool] | None = None
        #: What the middlewares using this cache did, in this process.
        self.stats = CacheStats()
        #: Skips Redis for a cool-down after repeated failures (shared by the middlewares).
        self.breaker = CircuitBreaker(breaker_threshold, breaker_cooldown)
        if on_purge is not None and not callable(on_purge):
            raise ConfigError("on_purge must be a callable taking a PurgeEvent")
        self._on_purge = on_purge
        self._cluster = _is_cluster(client)
        self._background: list[tuple[BackgroundTasks, float]] = []
        self._prune_script = client.register_script(PRUNE_SCRIPT)
        self._acquire_script = client.register_script(ACQUIRE_SCRIPT)
        self._release_script = client.register_script(RELEASE_SCRIPT)

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
        socket_timeout: float = 0.5,
        connect_timeout: float = 0.5,
        max_connections: int | None = None,
        **client_options: Any,
    ) -> RedisCache:
        """Return a cache with its own client for ``url``, closed by ``aclose()``.

        The client has short socket timeouts and at most one retry, so that an outage costs
        a request little (redis-py's own defaults retry for seconds). ``client_options`` go to
        ``redis.asyncio.Redis.from_url`` unchanged.
        """
        for name, value in (
            ("socket_timeout", socket_timeout),
            ("connect_timeout", connect_timeout),
        ):
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
            "health_check_interval": 30,
        }
        if max_connections is not None:
            options["max_connections"] = max_connections
        options.update(client_options)
        options["decode_responses"] = False
        try:
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
        )
        cache._owns_client = True
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

    async def aclose(self) -> None:
        """Drain the background refreshes of the middlewares using this cache, then close
        the client if this cache made it (``from_url``); a client handed in stays open."""
        for tasks, timeout in self._background:
            await tasks.drain(timeout)
        if self._owns_client:
            await self._client.aclose()

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
        """Drop query parameters matching these glob patterns from every key (and purge)."""
        for pattern in patterns:
            if pattern not in self._ignored_query:
                self._ignored_query.append(pattern)
        self._query_filter = keys.make_query_filter(self._ignored_query)

    def url_hash(
        self,
        scheme: str,
        host: bytes,
        path: str,
        query_string: bytes,
        method: str = "GET",
    ) -> str:
        """Return the hash naming the keys of a URL, as requested with ``method``."""
        method_class = METHOD_CLASS_GET if method in ("GET", "HEAD") else method
        return keys.url_hash(
            method_class,
            scheme,
            keys.normalise_host(host, scheme),
            path,
            keys.normalise_query(query_string, self._query_filter),
        )

    def hash_for_url(self, url: str, method: str = "GET") -> str:
        """Return the hash naming the keys of an absolute URL (``http://host/path?query``)."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"url must be absolute http(s), got {url!r}")
        from urllib.parse import unquote

        host = parts.netloc.rpartition("@")[2]  # user info is not part of the key
        return self.url_hash(
            parts.scheme,
            host.encode("latin-1", "replace"),
            unquote(parts.path or "/"),
            parts.query.encode("latin-1", "replace"),
            method.upper(),
        )

    def remembered_vary(self, uhash: str) -> tuple[str, ...] | None:
        """Return the Vary names last seen for a URL in this process, if any."""
        return self._vary_names.get(uhash)

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
    ) -> Lookup:
        """Return what is stored for a URL and, when it varies, for this request's variant.

        ``values_for(names)`` returns the request's values of those headers (None if absent).
        ``guess`` names the Vary headers expected, so that the variant can be fetched in the
        same round trip as the URL's key; a wrong guess costs a second round trip.
        """
        if guess is None:
            guess = self._vary_names.get(uhash)
        generation = self._generation
        base = keys.url_key(self.namespace, generation, uhash)
        guessed_key: str | None = None
        check = time.monotonic() - self._generation_checked_at >= self._generation_interval
        if not guess and not check:
            # The common hit: one command, one round trip.
            replies = [None, await self._hgetall(base)]
        else:
            while True:
                async with self._client.pipeline(transaction=False) as pipe:
                    if check:
                        pipe.get(self._generation_key)
                    pipe.hgetall(base)
                    if guess:
                        guessed_key = keys.variant_key(
                            base, keys.variant_hash(guess, values_for(guess))
                        )
                        pipe.hgetall(guessed_key)
                    replies = await pipe.execute(raise_on_error=False)
                if not check:
                    replies.insert(0, None)
                    break
                self._generation_checked_at = time.monotonic()
                current = _parse_generation(replies[0])
                if current == generation:
                    break
                # The namespace was cleared: look again under the new generation.
                self._generation = generation = current
                base = keys.url_key(self.namespace, generation, uhash)
                check = False
        found = _decode_reply(replies[1])
        if found is None:
            state = "uri-miss" if _is_empty(replies[1]) else "corrupt"
            if state == "uri-miss":
                self._remember_vary(uhash, None)
            return Lookup(state=state, generation=generation)
        if isinstance(found, CachedEntry):
            self._remember_vary(uhash, None)
            return Lookup(state="hit", generation=generation, entry=found, key=base)
        names = found.names
        self._remember_vary(uhash, names)
        vkey = keys.variant_key(base, keys.variant_hash(names, values_for(names)))
        if guessed_key is not None and guess == names:
            variant_reply = replies[2]
        else:
            variant_reply = await self._hgetall(vkey)
        variant = _decode_reply(variant_reply)
        if isinstance(variant, CachedEntry):
            return Lookup(state="hit", generation=generation, entry=variant, names=names, key=vkey)
        state = "vary-miss" if _is_empty(variant_reply) else "corrupt"
        return Lookup(state=state, generation=generation, names=names)

    async def _hgetall(self, key: str) -> Any:
        """Return HGETALL of a key, or the error when the key holds another type."""
        try:
            return await self._client.hgetall(key)
        except ResponseError as exc:  # WRONGTYPE: garbage at our key, a miss
            return exc

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

        The URL's keys (one cluster slot) are written in one MULTI/EXEC; on a single Redis
        the indexes join the same transaction, on a cluster they follow in a pipeline.
        """
        ttl_ms = max(1, int(ttl * 1000))
        now_ms = int(time.time() * 1000)
        expiry_ms = now_ms + ttl_ms
        gen = self._generation if generation is None else generation
        base = keys.url_key(self.namespace, gen, uhash)
        fields = entry_codec.encode(entry)
        async with self._client.pipeline(transaction=True) as pipe:
            if not names:
                entry_key = base
                pipe.delete(base)
                pipe.hset(base, mapping=fields)  # type: ignore[arg-type]
                pipe.pexpire(base, ttl_ms)
            else:
                vhash = keys.variant_hash(names, values or [None] * len(names))
                entry_key = keys.variant_key(base, vhash)
                if found_names == names:
                    pipe.pexpire(base, ttl_ms, gt=True)
                else:
                    pipe.delete(base)
                    marker = entry_codec.encode_marker(VaryMarker(names))
                    pipe.hset(base, mapping=marker)  # type: ignore[arg-type]
                    pipe.pexpire(base, ttl_ms)
                pipe.delete(entry_key)
                pipe.hset(entry_key, mapping=fields)  # type: ignore[arg-type]
                pipe.pexpire(entry_key, ttl_ms)
                _grow(pipe, keys.variants_key(base), ttl_ms, sadd=vhash)
            if fill is not None:
                await self._release_script(
                    keys=[keys.lock_key(base, fill.variant), keys.pass_key(base)],
                    args=[fill.token, 0],
                    client=pipe,  # type: ignore[arg-type]
                )
            if self._cluster:
                await pipe.execute()
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
            else:
                await self._index(
                    pipe, gen, entry_key, entry.tags, host, path, uhash, now_ms, expiry_ms, ttl_ms
                )
                await pipe.execute()
        self._remember_vary(uhash, names or None)

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
        """Queue the index updates for a stored entry: tag sets, the host's path index."""
        for tag in tags:
            tkey = keys.tag_key(self.namespace, gen, tag)
            pipe.zadd(tkey, {entry_key: expiry_ms})
            pipe.zremrangebyscore(tkey, "-inf", now_ms)  # prune members that expired
            _grow(pipe, tkey, ttl_ms)
        if host is None or path is None:
            return
        lex, exp = keys.prefix_keys(self.namespace, gen, host)
        member = keys.path_member(path, uhash)
        pipe.zadd(lex, {member: 0})
        pipe.zadd(exp, {member: expiry_ms})
        await self._prune_script(keys=[lex, exp], args=[now_ms, PRUNE_BATCH], client=pipe)
        _grow(pipe, lex, ttl_ms)
        _grow(pipe, exp, ttl_ms)
        hkey = keys.hosts_key(self.namespace, gen)
        pipe.zadd(hkey, {host: expiry_ms}, gt=True)
        pipe.zadd(hkey, {host: expiry_ms}, nx=True)
        pipe.zremrangebyscore(hkey, "-inf", now_ms)
        _grow(pipe, hkey, ttl_ms)

    # -- fill locks ---------------------------------------------------------------------

    async def acquire_fill(self, uhash: str, fill: FillLock, ttl: float, generation: int) -> int:
        """Try to take the fill lock of a URL (variant): ``ACQUIRED``, ``HELD`` or ``PASS``.

        ``PASS`` means the URL's last response was not storable (hit-for-pass): callers go
        to the app at once instead of queueing behind a lock.
        """
        base = keys.url_key(self.namespace, generation, uhash)
        result = await self._acquire_script(
            keys=[keys.lock_key(base, fill.variant), keys.pass_key(base)],
            args=[fill.token, max(1, int(ttl * 1000))],
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

    async def refresh(self, key: str, entry: CachedEntry, *, ttl: float) -> None:
        """Update a stored entry's headers and freshness after a 304, leaving its body.

        Should the entry have gone meanwhile, what is written lacks a body and reads as a
        miss, never as a wrong response.
        """
        fields = entry_codec.encode(entry)
        del fields[entry_codec.F_BODY]
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=fields)  # type: ignore[arg-type]
            pipe.pexpire(key, max(1, int(ttl * 1000)))
            await pipe.execute()

    # -- purges ---------------------------------------------------------------------------

    async def _current_generation(self) -> int:
        self._generation = _parse_generation(await self._client.get(self._generation_key))
        self._generation_checked_at = time.monotonic()
        return self._generation

    async def purge_url(self, url: str, *, method: str = "GET") -> int:
        """Remove every stored variant of an absolute URL; return how many entries went."""
        removed = await self.purge_hashes([self.hash_for_url(url, method)])
        await self._notify(PurgeEvent("url", (url,), removed))
        return removed

    async def purge_hash(self, uhash: str) -> int:
        """Remove every stored variant of the URL with this hash; return how many went."""
        return await self.purge_hashes([uhash])

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
        doomed: list[str] = []
        counted: list[bool] = []
        for i, base in enumerate(bases):
            is_entry, members = replies[2 * i], replies[2 * i + 1]
            doomed += [base, keys.variants_key(base)]
            counted += [is_entry is True or is_entry == 1, False]
            if isinstance(members, (set, list)):
                for m in members:
                    doomed.append(keys.variant_key(base, _text(m)))
                    counted.append(True)
        removed = await self._unlink(doomed)
        for h in uhashes:
            self._remember_vary(h, None)
        total = sum(int(r) for r, c in zip(removed, counted, strict=True) if c)
        self.stats.purged += total
        return total

    async def _unlink(self, doomed: Sequence[str]) -> list[int]:
        if not doomed:
            return []
        async with self._client.pipeline(transaction=False) as pipe:
            for key in doomed:
                pipe.unlink(key)
            return [int(r) for r in await pipe.execute()]

    async def purge_tag(self, *tags: str) -> int:
        """Remove every entry that carries any of the tags; return how many went."""
        gen = await self._current_generation()
        now_ms = int(time.time() * 1000)
        tkeys = [keys.tag_key(self.namespace, gen, t) for t in tags]
        async with self._client.pipeline(transaction=False) as pipe:
            for tkey in tkeys:
                pipe.zrangebyscore(tkey, now_ms, "+inf")
            replies = await pipe.execute()
        members = sorted({_text(m) for reply in replies for m in reply})
        removed = await self._unlink(members)
        # Remove only what was read: an entry tagged meanwhile stays findable.
        async with self._client.pipeline(transaction=False) as pipe:
            for tkey, reply in zip(tkeys, replies, strict=True):
                if reply:
                    pipe.zrem(tkey, *reply)
            await pipe.execute()
        total = sum(removed)
        self.stats.purged += total
        await self._notify(PurgeEvent("tag", tuple(tags), total))
        return total

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
        ranges = keys.prefix_ranges(path_prefix)
        found: list[tuple[str, str, bytes]] = []
        async with self._client.pipeline(transaction=False) as pipe:
            index_keys = [keys.prefix_keys(self.namespace, gen, h) for h in hosts]
            for lex, _ in index_keys:
                for low, high in ranges:
                    pipe.zrangebylex(lex, low, high)
            replies = await pipe.execute()
        for i, (lex, exp) in enumerate(index_keys):
            for reply in replies[i * len(ranges) : (i + 1) * len(ranges)]:
                found += [(lex, exp, bytes(m)) for m in reply]
        uhashes = sorted({m.rsplit(b"\x00", 1)[-1].decode() for _, _, m in found})
        total = await self.purge_hashes(uhashes)
        if found:
            async with self._client.pipeline(transaction=False) as pipe:
                for lex, exp, member in found:
                    pipe.zrem(lex, member)
                    pipe.zrem(exp, member)
                await pipe.execute()
        await self._notify(
            PurgeEvent("prefix", (path_prefix if host is None else f"{host}{path_prefix}",), total)
        )
        return total

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
        await self._notify(PurgeEvent("clear", (), None))

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

    async def inspect_url(self, url: str, *, method: str = "GET") -> list[EntryInfo]:
        """Return what is stored for an absolute URL: one ``EntryInfo`` per variant."""
        uhash = self.hash_for_url(url, method)
        gen = await self._current_generation()
        base = keys.url_key(self.namespace, gen, uhash)
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.hgetall(base)
            pipe.pttl(base)
            pipe.smembers(keys.variants_key(base))
            found, base_ttl, members = await pipe.execute(raise_on_error=False)
        decoded = _decode_reply(found)
        now = time.time()
        if isinstance(decoded, CachedEntry):
            return [_info(base, decoded, base_ttl, (), now)]
        if not isinstance(decoded, VaryMarker) or not isinstance(members, (set, list)):
            return []
        vkeys = [keys.variant_key(base, _text(m)) for m in sorted(members)]
        async with self._client.pipeline(transaction=False) as pipe:
            for vkey in vkeys:
                pipe.hgetall(vkey)
                pipe.pttl(vkey)
            replies = await pipe.execute(raise_on_error=False)
        infos = []
        for i, vkey in enumerate(vkeys):
            variant = _decode_reply(replies[2 * i])
            if isinstance(variant, CachedEntry):
                infos.append(_info(vkey, variant, replies[2 * i + 1], decoded.names, now))
        return infos

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


#: Lua: drop up to ARGV[2] members of a host's path index whose expiry (KEYS[2]) has passed.
PRUNE_SCRIPT = """
local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
if #gone > 0 then
  redis.call('ZREM', KEYS[1], unpack(gone))
  redis.call('ZREM', KEYS[2], unpack(gone))
end
return #gone
"""
PRUNE_BATCH = 100

#: Lua: hit-for-pass wins (-1); else take the lock with NX PX (1); else it is held (0).
ACQUIRE_SCRIPT = """
if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
"""
#: Lua: delete the lock only if it holds our token; optionally set hit-for-pass for ARGV[2] ms.
RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
if tonumber(ARGV[2]) > 0 then redis.call('SET', KEYS[2], '1', 'PX', ARGV[2]) end
return 1
"""
ACQUIRED, HELD, PASS = 1, 0, -1


@dataclass(frozen=True, slots=True)
class FillLock:
    """A fill lock: which variant of the URL (``""`` for the URL) and the owner's token."""

    variant: str
    token: str


@dataclass(frozen=True, slots=True)
class PurgeEvent:
    """What a purge did, for the ``on_purge`` hook (e.g. to forward it to a CDN).

    ``kind`` is ``url``, ``tag``, ``prefix`` or ``clear``; ``removed`` is None for ``clear``.
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


def _grow(pipe: Any, key: str, ttl_ms: int, *, sadd: str | None = None) -> None:
    """Queue commands that give ``key`` at least ``ttl_ms`` to live, never less than it has."""
    if sadd is not None:
        pipe.sadd(key, sadd)
    pipe.pexpire(key, ttl_ms, nx=True)
    pipe.pexpire(key, ttl_ms, gt=True)


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


def _decode_reply(reply: Any) -> CachedEntry | VaryMarker | None:
    if isinstance(reply, dict) and reply:
        return entry_codec.decode(reply)
    if isinstance(reply, list) and reply:  # RESP2 parsers without the callback: flat pairs
        return entry_codec.decode(dict(zip(reply[::2], reply[1::2], strict=False)))
    return None


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
