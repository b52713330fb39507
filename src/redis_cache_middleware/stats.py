"""In-process counters of what the cache did, and a rate-limited warning for Redis trouble."""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field

logger = logging.getLogger("redis_cache_middleware")

#: Seconds between two warnings of the same kind; the ones in between are counted.
WARN_INTERVAL = 10.0


@dataclass
class CacheStats:
    """Counters of one process; ``snapshot()`` returns them as a plain dict.

    No request counts twice among ``hit``, ``miss``, ``stale`` and ``bypass``.
    """

    #: Answered from the cache: fresh, or stale within stale-while-revalidate (refreshed
    #: in the background).
    hit: int = 0
    #: Nothing usable stored: sent to the app, or answered by another request's fill
    #: (also counted in ``collapsed``).
    miss: int = 0
    #: The stored entry was too old to answer: sent to the app, to be revalidated or
    #: replaced, or to stand in for the app's error (stale-if-error).
    stale: int = 0
    #: The lookup was skipped (bypass header, request no-cache / no-store).
    bypass: int = 0
    stored: int = 0
    not_stored: Counter[str] = field(default_factory=Counter)
    redis_error: int = 0
    #: Redis calls that timed out while the event loop lagged (CPU overload of this process,
    #: not a Redis fault): the request went on without the cache, as for any Redis error
    #: (also counted in ``redis_error``), but the circuit breaker does not count them.
    loop_lag: int = 0
    #: Redis calls the circuit breaker skipped while open.
    breaker_skipped: int = 0
    #: Circuit breaker state changes, by ``"old->new"`` (e.g. ``"closed->open"``).
    breaker_transitions: Counter[str] = field(default_factory=Counter)
    purged: int = 0
    #: Misses answered by another request's fill (request coalescing).
    collapsed: int = 0
    #: Entries removed by a successful unsafe request (POST, PUT …) to their URL, or
    #: superseded by an answer that may not be stored (also counted in ``purged``).
    invalidated: int = 0
    #: Seconds spent answering the ``hit`` requests (lookup to last byte handed to the
    #: server): ``hit`` is their count.
    hit_seconds: float = 0.0
    #: The near cache (``near_cache_bytes``): hits it answered (also counted in ``hit``),
    #: lookups it could not answer while in use, keys Redis said changed, bytes it holds,
    #: and times it was emptied because its tracking connection was lost.
    near_hit: int = 0
    near_miss: int = 0
    near_invalidations: int = 0
    near_bytes: int = 0
    near_emptied: int = 0
    #: Likely misses' lookups that waited for their reply in place, the event loop blocked
    #: (``wait_in_place``), and those whose reply came within it.
    in_place_waits: int = 0
    in_place_answered: int = 0

    def snapshot(self) -> dict[str, object]:
        """Return a copy of the counters."""
        return {
            "hit": self.hit,
            "miss": self.miss,
            "stale": self.stale,
            "bypass": self.bypass,
            "stored": self.stored,
            "not_stored": dict(self.not_stored),
            "redis_error": self.redis_error,
            "loop_lag": self.loop_lag,
            "breaker_skipped": self.breaker_skipped,
            "breaker_transitions": dict(self.breaker_transitions),
            "purged": self.purged,
            "collapsed": self.collapsed,
            "invalidated": self.invalidated,
            "hit_seconds": self.hit_seconds,
            "near_hit": self.near_hit,
            "near_miss": self.near_miss,
            "near_invalidations": self.near_invalidations,
            "near_bytes": self.near_bytes,
            "near_emptied": self.near_emptied,
            "in_place_waits": self.in_place_waits,
            "in_place_answered": self.in_place_answered,
        }


class RateLimitedWarning:
    """Log a warning at most once per ``interval`` seconds per kind, saying how many were held."""

    def __init__(self, interval: float = WARN_INTERVAL) -> None:
        self.interval = interval
        self._last: dict[str, float] = {}
        self._held: Counter[str] = Counter()

    def reset(self) -> None:
        """Forget when each kind was last logged (the next warning of each kind goes out)."""
        self._last.clear()
        self._held.clear()

    def __call__(self, kind: str, message: str, exc: BaseException | None = None) -> None:
        now = time.monotonic()
        last = self._last.get(kind)
        if last is not None and now - last < self.interval:
            self._held[kind] += 1
            return
        held = self._held.pop(kind, 0)
        self._last[kind] = now
        suffix = f" ({held} more since the last warning)" if held else ""
        detail = f": {type(exc).__name__}: {exc}" if exc is not None else ""
        logger.warning("%s%s%s", message, detail, suffix)
