"""What the parts of a ``RedisCache`` share: the client, the namespace and its generation,
what this process remembers of URLs (their Vary names, and until when their key has a TTL),
and the small helpers more than one part uses.

``RedisCache`` makes one ``CacheState`` and hands it to its parts (``lookup``, ``store``,
``purging``, ``inspection``). The commands it sends itself connect (``warm_up``) and read and
bump the generation; it queues the parts' scripts in their pipelines. It holds the near cache
and its tracker when ``near_cache_bytes`` turns them on. Of the cache's modules it imports
``connect``, ``lane``, ``near`` and ``tracking``.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

from .. import keys
from ..stats import CacheStats
from .connect import AnyRedis, is_cluster
from .lane import Lane, LaneUnavailable, suits
from .near import NearCache, check_near_cache_bytes
from .tracking import Tracker

#: How many URLs' Vary names a process remembers, to fetch a variant in the first round trip.
VARY_MEMORY = 4096
#: Seconds ``connect`` waits for the near cache's tracking to be confirmed.
NEAR_START = 1.0


class CacheState:
    """A cache's client and namespace, the namespace generation it saw last, and what it
    remembers of URLs."""

    __slots__ = (
        "client",
        "cluster",
        "generation",
        "generation_checked_at",
        "generation_interval",
        "generation_key",
        "lane",
        "namespace",
        "near",
        "stored_until",
        "tracker",
        "vary_names",
    )

    def __init__(
        self,
        client: AnyRedis,
        namespace: str,
        generation_interval: float,
        multiplex: bool = True,
        wait_in_place: float = 0.0,
    ) -> None:
        self.client = client
        self.cluster = is_cluster(client)
        #: The pipelined connection of a request's commands (``lane``), where the client
        #: suits it and ``multiplex`` is on; None: they go through the client.
        self.lane = (
            Lane(client, wait_in_place)
            if multiplex and not self.cluster and suits(client)
            else None
        )
        self.namespace = namespace
        self.generation_key = keys.generation_key(namespace)
        #: The namespace generation this process saw last.
        self.generation = 0
        #: How often lookups re-read the namespace generation (0: every lookup).
        self.generation_interval = generation_interval
        self.generation_checked_at = float("-inf")
        self.vary_names: OrderedDict[str, tuple[str, ...]] = OrderedDict()
        #: URLs (without Vary) this process saw stored, and until when (monotonic): their
        #: lookups are a plain HGETALL; others also try the fill lock in the same trip.
        #: Oldest first: an OrderedDict, whose oldest entry goes in O(1) (a dict's first key
        #: is found by scanning past the ones deleted before it).
        self.stored_until: OrderedDict[str, float] = OrderedDict()
        #: The near cache and what keeps it coherent (``enable``); None: off.
        self.near: NearCache | None = None
        self.tracker: Tracker | None = None

    def enable(self, stats: CacheStats, near_cache_bytes: object) -> None:
        """Count into the cache's ``stats``; check ``near_cache_bytes`` (``ConfigError``)
        and, unless 0, turn the near cache on."""
        if self.lane is not None:
            self.lane.count_into(stats)
        max_bytes = check_near_cache_bytes(near_cache_bytes)
        if max_bytes == 0:
            return
        self.near = NearCache(max_bytes, stats, self.generation_key, self._generation_changed)
        self.tracker = Tracker(self.client, self.namespace, self.near, self.cluster)

    def _generation_changed(self) -> None:
        """The namespace may have a new generation: the next lookup reads it."""
        self.generation_checked_at = float("-inf")

    def drop_near(self, uhash: str) -> None:
        """Drop what the near cache holds for a URL (this process wrote it)."""
        if self.near is not None:
            self.near.drop_url(uhash)

    async def connect(self) -> None:
        """Open a connection (on a cluster, read the slot map) and read the generation."""
        if self.cluster:
            await self.client.initialize()
        if self.lane is not None:
            try:
                await self.lane.open()
            except LaneUnavailable:
                self.lane = None
        await self.current_generation()
        if self.tracker is not None:
            await self.tracker.start(NEAR_START)

    async def current_generation(self) -> int:
        """Read the namespace generation from Redis, and return it."""
        self.generation = parse_generation(await self.client.get(self.generation_key))
        self.generation_checked_at = time.monotonic()
        return self.generation

    async def next_generation(self) -> None:
        """Start a new namespace generation (``clear``): old keys are never read again, and
        what this process remembered of URLs goes with them."""
        self.generation = int(await self.client.incr(self.generation_key))
        self.generation_checked_at = time.monotonic()
        self.vary_names.clear()
        self.stored_until.clear()
        if self.near is not None:
            self.near.empty()

    def remember_stored(self, uhash: str, seconds: float) -> None:
        if seconds <= 0:
            self.stored_until.pop(uhash, None)
            return
        stored_until = self.stored_until
        if len(stored_until) >= VARY_MEMORY and uhash not in stored_until:
            stored_until.popitem(last=False)  # the oldest remembered
        stored_until[uhash] = time.monotonic() + seconds

    def remember_vary(self, uhash: str, names: tuple[str, ...] | None) -> None:
        if names is None:
            self.vary_names.pop(uhash, None)
            return
        self.vary_names[uhash] = names
        self.vary_names.move_to_end(uhash)
        if len(self.vary_names) > VARY_MEMORY:
            self.vary_names.popitem(last=False)

    def forget(self, uhash: str) -> None:
        """Forget what this process remembered of a URL (it was purged)."""
        self.remember_vary(uhash, None)
        self.stored_until.pop(uhash, None)
        self.drop_near(uhash)

    async def run_script(
        self, script: Any, script_keys: list[str], args: list[Any], *, urgent: bool = False
    ) -> Any:
        """Run a registered script on the lane (written at once if ``urgent``: see
        ``Lane.execute``), or through the client without one."""
        lane = self.lane
        if lane is not None:
            try:
                return await lane.script(script, script_keys, args, urgent=urgent)
            except LaneUnavailable:
                self.lane = None  # the client's connections are not sockets: use the client
        return await script(keys=script_keys, args=args)

    async def hgetall(self, key: str) -> Any:
        """HGETALL on the lane (a flat list of fields and values), or through the client (a
        dict)."""
        lane = self.lane
        if lane is not None:
            try:
                return await lane.execute(b"HGETALL", key)
            except LaneUnavailable:
                self.lane = None
        return await self.client.hgetall(key)

    async def aclose(self) -> None:
        """Stop tracking, and give the lane's connection back (before the client closes, if
        it does)."""
        if self.tracker is not None:
            await self.tracker.aclose()
        if self.lane is not None:
            await self.lane.aclose()

    async def queue_script(
        self, pipe: Any, script: Any, script_keys: list[str], args: list[Any]
    ) -> None:
        """Queue a script in a pipeline: EVALSHA on one Redis; EVAL (with the script's text)
        on a cluster, whose pipelines refuse EVALSHA and whose nodes (a replica promoted
        after a failover among them) may not have the script loaded."""
        if self.cluster:
            pipe.eval(script.script, len(script_keys), *script_keys, *args)
        else:
            await script(keys=script_keys, args=args, client=pipe)


def parse_generation(reply: Any) -> int:
    if reply is None or isinstance(reply, Exception):
        return 0
    try:
        return int(reply)
    except (TypeError, ValueError):
        return 0


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
