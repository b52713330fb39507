"""What the parts of a ``RedisCache`` share: the client, the namespace and its generation,
what this process remembers of URLs (their Vary names, and until when their key has a TTL),
and the small helpers more than one part uses.

``RedisCache`` makes one ``CacheState`` and hands it to its parts (``lookup``, ``store``,
``purging``, ``inspection``). The commands it sends itself connect (``warm_up``) and read and
bump the generation; it queues the parts' scripts in their pipelines. Of the cache's modules
it imports only ``connect``.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

from .. import keys
from .connect import AnyRedis, is_cluster
from .lane import Lane, LaneUnavailable, suits

#: How many URLs' Vary names a process remembers, to fetch a variant in the first round trip.
VARY_MEMORY = 4096


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
        "stored_until",
        "vary_names",
    )

    def __init__(
        self, client: AnyRedis, namespace: str, generation_interval: float, multiplex: bool = True
    ) -> None:
        self.client = client
        self.cluster = is_cluster(client)
        #: The pipelined connection of a request's commands (``lane``), where the client
        #: suits it and ``multiplex`` is on; None: they go through the client.
        self.lane = Lane(client) if multiplex and not self.cluster and suits(client) else None
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
        """Give the lane's connection back (before the client closes, if it does)."""
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
