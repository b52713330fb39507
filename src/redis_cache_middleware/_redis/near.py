"""The near cache: entries this process read from Redis, kept decoded in its own memory and
served without a round trip for as long as Redis says they have not changed.

What keeps it coherent is Redis itself (server-assisted client-side caching): the
``tracking`` module holds a connection on which Redis pushes the name of every key of the
namespace that changes (a store, a purge, a clear's generation bump, an expiry or an
eviction, in any process or host), and this module drops what it holds at those keys. It
holds nothing, and answers nothing, unless tracking is confirmed and was heard from within
the last ``LEASE`` seconds; a lost tracking connection empties it.

The race between a read and an invalidation: a read's reply and the invalidation of the
key it read travel on two connections, so the invalidation of a change made just after the
read can arrive first. Every invalidation bumps a serial and records it for its keys
(``touched``); a lookup notes the serial before it sends its read (``begin``) and ``keep``
refuses the reply if its key (or URL) was touched since, or if the near cache was emptied
since (``floor``). Writes of this process (a store, a purge, a drop) touch their keys at
once, before the push arrives.

Each entry leaves at the deadline Redis gave its key (the PTTL read with it, counted from
before the read was sent, less ``SAFETY``), so a near hit never serves what Redis would not.
Of the cache's modules it imports none: ``state`` makes one, ``lookup`` reads it.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

from ..entry import CachedEntry, VaryMarker
from ..exceptions import ConfigError
from ..stats import CacheStats

#: Bytes counted for an item beyond its body, headers and key: the objects around them (with
#: the 120 per header and 60 per tag of ``size_of``, within 2 % of what tracemalloc measured
#: for a decoded entry with five headers and two tags).
OVERHEAD = 550
#: Seconds before the deadline Redis gave a key at which its near copy goes (clock skew).
SAFETY = 0.05
#: Seconds a confirmation from the tracking connection lets the near cache answer: the
#: longest a change can go unseen when that connection fails silently (see ``tracking``).
LEASE = 1.5
#: How many recently invalidated keys are remembered for reads in flight; past that they
#: are forgotten and every read then in flight is refused (``floor``).
TOUCHED_MEMORY = 8192

NearValue = CachedEntry | VaryMarker


def check_near_cache_bytes(value: object) -> int:
    """Return ``near_cache_bytes`` if it is valid, else raise ``ConfigError``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(
            "near_cache_bytes must be a whole number of bytes >= 0 (0 turns the near cache "
            f"off; e.g. 64 * 2**20); got {value!r}"
        )
    return value


def size_of(key: str, value: NearValue) -> int:
    """Return about how many bytes of memory an item holds."""
    if isinstance(value, VaryMarker):
        return OVERHEAD + 2 * len(key) + sum(len(n) for n in value.names)
    headers = sum(len(n) + len(v) + 120 for n, v in value.headers)
    tags = sum(len(t) + 60 for t in value.tags)
    return OVERHEAD + 2 * len(key) + len(value.body) + headers + tags


class _Item:
    __slots__ = ("deadline", "size", "uhash", "value")

    def __init__(self, value: NearValue, deadline: float, size: int, uhash: str) -> None:
        self.value = value
        self.deadline = deadline
        self.size = size
        self.uhash = uhash


class NearCache:
    """Decoded entries and Vary markers by their Redis key, least recently used first,
    within ``max_bytes``; see the module."""

    __slots__ = (
        "by_url",
        "bytes",
        "covers",
        "floor",
        "generation_key",
        "items",
        "lease_until",
        "max_bytes",
        "on_generation",
        "ready",
        "serial",
        "stats",
        "touched",
    )

    def __init__(
        self,
        max_bytes: int,
        stats: CacheStats,
        generation_key: str,
        on_generation: Callable[[], None],
    ) -> None:
        self.max_bytes = max_bytes
        self.stats = stats
        self.items: OrderedDict[str, _Item] = OrderedDict()
        #: The keys held for each URL hash, to drop a URL's at once.
        self.by_url: dict[str, set[str]] = {}
        self.bytes = 0
        #: Whether tracking is confirmed on every connection it needs.
        self.ready = False
        #: Until when (monotonic) the last confirmation lets it answer.
        self.lease_until = float("-inf")
        #: Bumped by every invalidation; ``touched`` holds the last one of each key and URL.
        self.serial = 0
        self.touched: dict[str, int] = {}
        #: Reads begun before this serial are refused (the cache was emptied since).
        self.floor = 0
        self.generation_key = generation_key
        #: Called when the namespace generation changed (a ``clear`` anywhere).
        self.on_generation = on_generation
        #: Whether a key may be kept (on a cluster: its node is tracked); None: any.
        self.covers: Callable[[str], bool] | None = None

    # -- the hit path -------------------------------------------------------------------

    def usable(self, now: float) -> bool:
        """Return whether the near cache may answer now."""
        return self.ready and now < self.lease_until

    def get(self, key: str, now: float) -> NearValue | None:
        """Return what is held at a Redis key, if it is still within Redis's deadline."""
        item = self.items.get(key)
        if item is None:
            return None
        if item.deadline <= now:
            self._remove(key)
            return None
        self.items.move_to_end(key)
        return item.value

    def keep(self, key: str, uhash: str, value: NearValue, deadline: float, since: int) -> None:
        """Hold what a read begun at serial ``since`` found at ``key``, until ``deadline``
        (monotonic); unless the key or its URL was invalidated since, or the near cache was
        emptied or lost tracking since."""
        if not self.ready:
            return
        touched = self.touched
        floor = self.floor
        if touched.get(key, floor) > since or touched.get(uhash, floor) > since:
            return
        if deadline - time.monotonic() <= SAFETY:
            return
        if self.covers is not None and not self.covers(key):
            return
        size = size_of(key, value)
        if size > self.max_bytes:
            return
        if key in self.items:
            self._remove(key)
        self.items[key] = _Item(value, deadline, size, uhash)
        self.by_url.setdefault(uhash, set()).add(key)
        self.bytes += size
        while self.bytes > self.max_bytes:
            self._remove(next(iter(self.items)))
        self.stats.near_bytes = self.bytes

    # -- invalidation -------------------------------------------------------------------

    def invalidate(self, names: Iterable[str]) -> None:
        """Drop what is held at these keys (Redis said they changed)."""
        self.serial += 1
        serial = self.serial
        touched = self.touched
        count = 0
        for key in names:
            count += 1
            touched[key] = serial
            if key in self.items:
                self._remove(key)
            elif key == self.generation_key:
                self.empty()
                self.on_generation()
        self.stats.near_invalidations += count
        if len(touched) > TOUCHED_MEMORY:
            self._forget_touched()

    def drop_url(self, uhash: str) -> None:
        """Drop what is held for a URL (this process wrote or purged it)."""
        self.serial += 1
        self.touched[uhash] = self.serial
        for key in list(self.by_url.get(uhash, ())):
            self._remove(key)
        if len(self.touched) > TOUCHED_MEMORY:
            self._forget_touched()

    def drop_keys(self, names: Iterable[str]) -> None:
        """Drop what is held at these keys (this process removed them)."""
        self.serial += 1
        serial = self.serial
        for key in names:
            self.touched[key] = serial
            if key in self.items:
                self._remove(key)
        if len(self.touched) > TOUCHED_MEMORY:
            self._forget_touched()

    def empty(self) -> None:
        """Drop everything held, and refuse every read begun before now."""
        self.items.clear()
        self.by_url.clear()
        self.touched.clear()
        self.bytes = 0
        self.stats.near_bytes = 0
        self.serial += 1
        self.floor = self.serial

    # -- tracking's state ---------------------------------------------------------------

    def confirm(self, lease_until: float) -> None:
        """Tracking is on (again): the near cache may keep and answer until ``lease_until``."""
        self.ready = True
        self.lease_until = max(self.lease_until, lease_until)

    def lost(self, counted: bool = True) -> None:
        """Tracking is down: empty, and neither keep nor answer until it is confirmed;
        ``counted`` in ``near_emptied`` unless it was closed on purpose."""
        if counted and (self.ready or self.items):
            self.stats.near_emptied += 1
        self.ready = False
        self.lease_until = float("-inf")
        self.empty()

    def _forget_touched(self) -> None:
        """Forget which keys were invalidated when; refuse every read in flight instead."""
        self.touched.clear()
        self.floor = self.serial

    def _remove(self, key: str) -> None:
        item = self.items.pop(key)
        self.bytes -= item.size
        self.stats.near_bytes = self.bytes
        keys_of_url = self.by_url.get(item.uhash)
        if keys_of_url is not None:
            keys_of_url.discard(key)
            if not keys_of_url:
                del self.by_url[item.uhash]
