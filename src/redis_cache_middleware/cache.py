"""``RedisCache``: the one object that owns the Redis client, the namespace and the key scheme.

The middleware, the app's own code (``await cache.purge_url(...)``) and the admin tools all go
through it, so every way of reading, writing or purging uses the same keys. It is the only
module that talks to Redis. Methods raise the client's ``redis.exceptions.RedisError`` on
trouble; the middleware catches them (it fails open), explicit admin calls let them surface.

Ownership follows redis-py: a cache built with ``from_url`` owns its client and closes it in
``aclose()``; a client handed in is the caller's and is never closed by us.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from . import entry as entry_codec
from . import keys
from .entry import CachedEntry, VaryMarker
from .exceptions import ConfigError
from .stats import CacheStats

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


class RedisCache:
    """A namespaced HTTP response cache kept in Redis.

    ``client`` is a ``redis.asyncio.Redis`` (or ``RedisCluster``, or
    ``fakeredis.FakeAsyncRedis``) made with ``decode_responses=False``; it is not closed by
    ``aclose()``. ``namespace`` prefixes every key (letters, digits, ``_ . -``; at most 64).
    """

    def __init__(self, client: AnyRedis, *, namespace: str = "cache") -> None:
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
        self._vary_names: OrderedDict[str, tuple[str, ...]] = OrderedDict()
        self._ignored_query: list[str] = []
        self._query_filter: Callable[[str], bool] | None = None
        #: What the middlewares using this cache did, in this process.
        self.stats = CacheStats()

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        namespace: str = "cache",
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
            if not isinstance(value, (int, float)) or value <= 0:
                raise ConfigError(
                    f"{name} must be a positive number of seconds; got {value!r}"
                )
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
        cache = cls(client, namespace=namespace)
        cache._owns_client = True
        return cache

    @property
    def client(self) -> AnyRedis:
        """Return the Redis client this cache uses."""
        return self._client

    async def aclose(self) -> None:
        """Close the client if this cache made it (``from_url``); a client handed in stays open."""
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

        return self.url_hash(
            parts.scheme,
            parts.netloc.encode("latin-1", "replace"),
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
        for _ in range(2):
            generation = self._generation
            base = keys.url_key(self.namespace, generation, uhash)
            guessed_key: str | None = None
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.get(self._generation_key)
                pipe.hgetall(base)
                if guess:
                    guessed_key = keys.variant_key(
                        base, keys.variant_hash(guess, values_for(guess))
                    )
                    pipe.hgetall(guessed_key)
                replies = await pipe.execute(raise_on_error=False)
            current = _parse_generation(replies[0])
            if current != generation:
                self._generation = current
                continue
            break
        else:  # pragma: no cover - the generation moved twice during one lookup
            return Lookup(state="uri-miss", generation=self._generation)
        found = _decode_reply(replies[1])
        if found is None:
            state = "uri-miss" if _is_empty(replies[1]) else "corrupt"
            if state == "uri-miss":
                self._remember_vary(uhash, None)
            return Lookup(state=state, generation=generation)
        if isinstance(found, CachedEntry):
            self._remember_vary(uhash, None)
            return Lookup(state="hit", generation=generation, entry=found)
        names = found.names
        self._remember_vary(uhash, names)
        if guessed_key is not None and guess == names:
            variant_reply = replies[2]
        else:
            vkey = keys.variant_key(base, keys.variant_hash(names, values_for(names)))
            variant_reply = await self._client.hgetall(vkey)
        variant = _decode_reply(variant_reply)
        if isinstance(variant, CachedEntry):
            return Lookup(
                state="hit", generation=generation, entry=variant, names=names
            )
        state = "vary-miss" if _is_empty(variant_reply) else "corrupt"
        return Lookup(state=state, generation=generation, names=names)

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
    ) -> None:
        """Store an entry for a URL (or for one variant of it) in one MULTI/EXEC.

        ``names`` and ``values`` are the varying request headers and this request's values of
        them; with no names the entry sits at the URL's key. ``found_names`` are the Vary names
        the lookup found at the URL's key, so that an unchanged marker is only extended.
        ``ttl`` is in seconds, freshness plus the stale window.
        """
        ttl_ms = max(1, int(ttl * 1000))
        gen = self._generation if generation is None else generation
        base = keys.url_key(self.namespace, gen, uhash)
        fields = entry_codec.encode(entry)
        async with self._client.pipeline(transaction=True) as pipe:
            if not names:
                pipe.delete(base)
                pipe.hset(base, mapping=fields)  # type: ignore[arg-type]
                pipe.pexpire(base, ttl_ms)
            else:
                vhash = keys.variant_hash(names, values or [None] * len(names))
                vkey = keys.variant_key(base, vhash)
                if found_names == names:
                    pipe.pexpire(base, ttl_ms, gt=True)
                else:
                    pipe.delete(base)
                    pipe.hset(
                        base,
                        mapping=entry_codec.encode_marker(VaryMarker(names)),  # type: ignore[arg-type]
                    )
                    pipe.pexpire(base, ttl_ms)
                pipe.delete(vkey)
                pipe.hset(vkey, mapping=fields)  # type: ignore[arg-type]
                pipe.pexpire(vkey, ttl_ms)
                vset = keys.variants_key(base)
                pipe.sadd(vset, vhash)
                pipe.pexpire(vset, ttl_ms, nx=True)
                pipe.pexpire(vset, ttl_ms, gt=True)
            await pipe.execute()
        self._remember_vary(uhash, names or None)

    # -- purges ---------------------------------------------------------------------------

    async def purge_url(self, url: str, *, method: str = "GET") -> int:
        """Remove every stored variant of an absolute URL; return how many entries went."""
        return await self.purge_hash(self.hash_for_url(url, method))

    async def purge_hash(self, uhash: str) -> int:
        """Remove every stored variant of the URL with this hash; return how many went."""
        generation = _parse_generation(await self._client.get(self._generation_key))
        self._generation = generation
        base = keys.url_key(self.namespace, generation, uhash)
        vset = keys.variants_key(base)
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.hget(base, entry_codec.F_STATUS)
            pipe.smembers(vset)
            found_status, members = await pipe.execute(raise_on_error=False)
        doomed = [base, vset]
        if isinstance(members, (set, list)):
            doomed += [keys.variant_key(base, _text(m)) for m in members]
        async with self._client.pipeline(transaction=True) as pipe:
            for key in doomed:
                pipe.unlink(key)
            removed = await pipe.execute()
        self._remember_vary(uhash, None)
        # Count entries, not keys: the marker and the variant set are bookkeeping.
        entries = sum(int(r) for r in removed[2:])
        if isinstance(found_status, bytes):
            entries += int(removed[0])
        return entries

    async def clear(self) -> None:
        """Forget everything in the namespace at once: old keys are never read again, and
        Redis expires them by their TTLs."""
        self._generation = int(await self._client.incr(self._generation_key))


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
    if (
        isinstance(reply, list) and reply
    ):  # RESP2 parsers without the callback: flat pairs
        return entry_codec.decode(dict(zip(reply[::2], reply[1::2], strict=False)))
    return None


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
