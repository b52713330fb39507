"""A circuit breaker for Redis: after repeated failures, stop asking for a while.

When Redis is down, every request would otherwise pay the full ``timeout`` before going to
the app. After ``threshold`` consecutive failures the breaker *opens*: Redis is skipped
(the cache is bypassed at no cost) for ``cooldown`` seconds. Then it is *half-open*: one
request probes Redis; success closes the breaker, failure opens it for another cool-down.
Pure state (but for ``loop_lag``, which awaits one pass round the event loop): the clock
is injected, and transitions are logged and counted.

A timeout is a failure only if the process could have seen Redis's answer: when the event
loop itself lags (CPU work in its thread, a flood of requests), the answer may have waited
unread in the socket while the deadline passed. Opening the breaker then would turn the
cache off for everyone just when the process is overloaded, so ``loop_lag`` tells such
timeouts apart; they count neither as failures nor as successes. A Redis that refuses or
resets connections fails without a timeout, and always counts.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable

from redis.exceptions import TimeoutError as RedisTimeoutError

from ._timeouts import pass_time
from .exceptions import ConfigError
from .stats import logger

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"

#: The errors that mean a call ran out of time (ours, or redis-py's ``socket_timeout``):
#: measured on the event loop's clock, so the loop's own lag can cause them.
TIMEOUTS = (asyncio.TimeoutError, TimeoutError, RedisTimeoutError)

#: A timeout is put down to the event loop, not to Redis, when the loop is known to have been
#: busy, unable to read an answer, for more than this share of the timeout (``loop_lag``).
#: An answer needs about two passes round the loop to reach its caller, so with passes this
#: long not even an instant answer would come in time. An idle loop lags by microseconds, a
#: blocked one by the whole block; half the timeout leaves room for the stalls of a busy host
#: (a GC pass, a descheduled process) without excusing Redis.
LOOP_LAG_SHARE = 0.5


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
        #: The clock of the cool-down, and of the calls' deadlines (``loop_lag``).
        self.clock = clock
        self.state = CLOSED
        self.failures = 0
        self._changed_at = 0.0
        #: The latest stretch of ``clock`` time in which the event loop is known to have
        #: stalled (``loop_lag``): other calls' timeouts in it are the loop's too.
        self._stall = (0.0, 0.0)
        #: How many times the breaker opened, and how many calls it skipped.
        self.opened = 0
        self.skipped = 0
        #: State changes by ``"old->new"``; ``RedisCache`` passes ``stats.breaker_transitions``.
        self.transitions: Counter[str] = transitions if transitions is not None else Counter()

    def allow(self) -> bool:
        """Return whether a call may go to Redis now (a half-open breaker lets one probe by)."""
        if self.state == CLOSED:
            return True
        now = self.clock()
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
            self._move(CLOSED, self.clock())

    def failure(self) -> None:
        """Record a call that failed or timed out."""
        self.failures += 1
        if self.state == HALF_OPEN or (self.state == CLOSED and self.failures >= self.threshold):
            self.opened += 1
            self._move(OPEN, self.clock())

    async def loop_lag(self, exc: BaseException, started: float, timeout: float) -> float | None:
        """For a call started at ``started`` (a ``clock`` time) with ``timeout`` seconds that
        failed with ``exc``: if it timed out while the event loop lagged by more than
        ``LOOP_LAG_SHARE`` of the timeout, return the lag in seconds; else None (a Redis
        failure, for ``failure``).

        The lag is the longest of: how late the timeout is handled (the loop was busy from
        the deadline, or before, until now); how long one pass round the loop takes now
        (``pass_time``: the loop is saturated); how much of the call's window falls in the
        latest stall seen by an earlier call (a call whose deadline came just after a long
        block, its answer unread through most of its window). Only a lag over the share is
        remembered as a stall, so timeouts on an idle loop never add up to one.

        A lag is recorded neither as a failure nor as a success: a run of real failures goes
        on counting, and a half-open probe that lagged is retried after the cool-down, as
        one that never reported. Awaits one pass round the loop, only for a timeout.
        """
        if not isinstance(exc, TIMEOUTS):
            return None
        deadline = started + timeout
        now = self.clock()
        late = max(now - deadline, 0.0)
        one_pass = await pass_time(self.clock)
        least = timeout * LOOP_LAG_SHARE
        stall_from, stall_to = self._stall
        if max(late, one_pass) > least:
            # Busy from the deadline (at the latest) to now, and for a pass after.
            if now - late > stall_to:
                stall_from = now - late  # not part of the stall seen last: a new one
            stall_to = max(stall_to, now + one_pass)
            self._stall = stall_from, stall_to
        within = min(deadline, stall_to) - max(started, stall_from)
        lag = max(late, one_pass, within)
        return lag if lag > least else None

    def _move(self, state: str, now: float) -> None:
        if state != self.state:
            logger.warning("redis-cache circuit breaker %s -> %s", self.state, state)
            self.transitions[f"{self.state}->{state}"] += 1
        self.state = state
        self._changed_at = now
