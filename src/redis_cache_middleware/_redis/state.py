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
        "namespace",
        "stored_until",
        "vary_names",
    )

    def __init__(self, client: AnyRedis, namespace: str, generation_interval: float) -> None:
        self.client = client
        self.cluster = is_cluster(client)
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
        self.stored_until: dict[str, float] = {}

    async def connect(self) -> None:
        """Open a connection (on a cluster, read the slot map) and read the generation."""
        if self.cluster:
            await self.client.initialize()
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
        if len(self.stored_until) >= VARY_MEMORY and uhash not in self.stored_until:
            del self.stored_until[next(iter(self.stored_until))]  # the oldest remembered
        self.stored_until[uhash] = time.monotonic() + seconds

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
