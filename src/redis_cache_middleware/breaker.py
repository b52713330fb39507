"""A circuit breaker for Redis: after repeated failures, stop asking for a while.

When Redis is down, every request would otherwise pay the full ``timeout`` before going to
the app. After ``threshold`` consecutive failures the breaker *opens*: Redis is skipped
(the cache is bypassed at no cost) for ``cooldown`` seconds. Then it is *half-open*: one
request probes Redis; success closes the breaker, failure opens it for another cool-down.
Pure state: the clock is injected, and transitions are logged and counted.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

from .exceptions import ConfigError
from .stats import logger

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"


class CircuitBreaker:
    """Count consecutive Redis failures and decide whether the next call may go to Redis."""

    def __init__(
        self,
        threshold: int = 5,
        cooldown: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        transitions: Counter[str] | None = None,
    ) -> None:
        if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1:
            raise ConfigError(f"breaker_threshold must be an int >= 1; got {threshold!r}")
        if (
            isinstance(cooldown, bool)
            or not isinstance(cooldown, (int, float))
            or not cooldown > 0
            or cooldown == float("inf")
        ):
            raise ConfigError(f"breaker_cooldown must be a number of seconds > 0; got {cooldown!r}")
        self.threshold = threshold
        self.cooldown = float(cooldown)
        self._clock = clock
        self.state = CLOSED
        self.failures = 0
        self._changed_at = 0.0
        #: How many times the breaker opened, and how many calls it skipped.
        self.opened = 0
        self.skipped = 0
        #: State changes by ``"old->new"``; ``RedisCache`` passes ``stats.breaker_transitions``.
        self.transitions: Counter[str] = transitions if transitions is not None else Counter()

    def allow(self) -> bool:
        """Return whether a call may go to Redis now (a half-open breaker lets one probe by)."""
        if self.state == CLOSED:
            return True
        now = self._clock()
        if now - self._changed_at < self.cooldown:
            self.skipped += 1
            return False
        # Cool-down over (or a probe that never reported back): let one probe through.
        self._move(HALF_OPEN, now)
        return True

    def success(self) -> None:
        """Record a call that Redis answered."""
        self.failures = 0
        if self.state != CLOSED:
            self._move(CLOSED, self._clock())

    def failure(self) -> None:
        """Record a call that failed or timed out."""
        self.failures += 1
        if self.state == HALF_OPEN or (self.state == CLOSED and self.failures >= self.threshold):
            self.opened += 1
            self._move(OPEN, self._clock())

    def _move(self, state: str, now: float) -> None:
        if state != self.state:
            logger.warning("redis-cache circuit breaker %s -> %s", self.state, state)
            self.transitions[f"{self.state}->{state}"] += 1
        self.state = state
        self._changed_at = now
