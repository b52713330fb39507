"""Waiting in place for a likely miss's lookup: when the event loop can spare the time.

A miss's app starts only once its lookup (the one that also takes the fill lock) has come
back. Awaited, that reply is read when the event loop comes round to the connection, after
everything else that is ready has run: on a busy worker 0.7-0.9 ms at the median
(``bench/miss_phases.py``) for a reply Redis sent ~0.1 ms after the command. The lane can
instead wait for it in place: ``select`` on the connection's socket, for at most
``wait_in_place`` seconds, the loop blocked meanwhile, and the reply read at once. The app
starts a loop turn sooner; every other request waits that long.

So it is done only while the loop has time to spare, which ``InPlace`` decides from two
measures, taken over windows of ``WINDOW`` seconds:

* **the loop's time**: the share of the window the loop's thread spent running (its CPU
  time) or waiting in place. Past ``BUSY`` there is no idle time left for a wait to use:
  waiting in place stops until ``CALM`` windows in a row below it (a saturated worker keeps
  its throughput, and a lull of one window does not start it again);
* **waits that found no reply**: time lost. When more than ``MISSED`` of a window's waits
  ended without their reply (Redis far away, or slow), waiting in place stops for
  ``BACKOFF`` seconds, twice as long each time it fails again, up to ``BACKOFF_MAX``.

Only for a plain TCP or Unix connection on a POSIX system whose descriptor ``select`` takes
(below ``FD_SETSIZE``): a TLS stream cannot be read beside its transport.
``RedisCache(wait_in_place=0)`` turns it off.
"""

from __future__ import annotations

import os
import select
import sys
import time
from collections.abc import Callable
from typing import Any

from ..stats import CacheStats

__all__ = [
    "BACKOFF",
    "BACKOFF_MAX",
    "BUSY",
    "CALM",
    "MISSED",
    "WINDOW",
    "InPlace",
    "read_until",
    "socket_fd",
]

#: Seconds over which the loop's time and the waits' outcomes are measured.
WINDOW = 0.1
#: Share of a window the loop may be running or waiting in place for waits to go on.
BUSY = 0.9
#: Windows in a row below ``BUSY`` after which waits start again.
CALM = 2
#: Share of a window's waits that may end without their reply before waiting stops.
MISSED = 0.25
#: Seconds waiting in place stops for after a window of missed waits, then doubling.
BACKOFF = 1.0
BACKOFF_MAX = 30.0
#: Waits a window needs before its share of missed ones counts.
_FEWEST = 4
#: ``select`` takes descriptors below this (glibc's FD_SETSIZE).
_FD_SETSIZE = 1024


def socket_fd(transport: Any, connection: Any) -> int | None:
    """Return the descriptor of the transport's socket when the lane may read it beside the
    transport (plain TCP or Unix, POSIX, below ``FD_SETSIZE``), else None."""
    if sys.platform == "win32":  # pragma: no cover - os.read does not read sockets there
        return None
    try:
        from redis.asyncio.connection import SSLConnection

        if isinstance(connection, SSLConnection):
            return None
    except ImportError:  # pragma: no cover
        pass
    if transport.get_extra_info("sslcontext") is not None:
        return None
    if transport.get_extra_info("ssl_object") is not None:
        return None
    sock = transport.get_extra_info("socket")
    if sock is None:
        return None
    try:
        fd = int(sock.fileno())
    except (AttributeError, OSError, ValueError, TypeError):
        return None
    return fd if 0 <= fd < _FD_SETSIZE else None


class InPlace:
    """When the lane may wait in place for an urgent command's reply, and for how long.

    ``allow()`` before each wait; ``record(seconds, answered)`` after it. ``clock`` and
    ``cpu`` (the loop thread's CPU time) are the ones the decisions are made with.
    """

    __slots__ = (
        "_at",
        "_backoff",
        "_calm",
        "_clock",
        "_cpu",
        "_cpu_at",
        "_missed",
        "_off_until",
        "_waited",
        "_waits",
        "allowed",
        "budget",
        "stats",
    )

    def __init__(
        self,
        budget: float,
        *,
        clock: Callable[[], float] = time.perf_counter,
        cpu: Callable[[], float] = time.thread_time,
        stats: CacheStats | None = None,
    ) -> None:
        #: The longest a wait may block the loop, in seconds.
        self.budget = budget
        self._clock = clock
        self._cpu = cpu
        self._at = clock()
        self._cpu_at = cpu()
        #: This window's waits: time spent, count, and how many ended without the reply.
        self._waited = 0.0
        self._waits = 0
        self._missed = 0
        self._off_until = float("-inf")
        self._backoff = BACKOFF
        #: Windows in a row the loop had time to spare.
        self._calm = CALM
        #: Whether waits are allowed in this window.
        self.allowed = True
        #: Where every wait, and every wait that read its reply, is counted
        #: (``in_place_waits``, ``in_place_answered``): the cache's, once it has them.
        self.stats = stats if stats is not None else CacheStats()

    @property
    def waits(self) -> int:
        """Every wait so far."""
        return self.stats.in_place_waits

    @property
    def answered(self) -> int:
        """The waits that read their reply."""
        return self.stats.in_place_answered

    def allow(self) -> bool:
        """Return whether to wait in place now (see the module)."""
        now = self._clock()
        if now - self._at >= WINDOW:
            self._close_window(now)
        return self.allowed

    def record(self, seconds: float, answered: bool) -> None:
        """Count one wait: how long it blocked the loop and whether its reply came."""
        self._waited += seconds
        self._waits += 1
        stats = self.stats
        stats.in_place_waits += 1
        if answered:
            stats.in_place_answered += 1
        else:
            self._missed += 1

    def _close_window(self, now: float) -> None:
        cpu = self._cpu()
        span = now - self._at
        busy = (cpu - self._cpu_at + self._waited) / span if span > 0 else 1.0
        if self._waits >= _FEWEST:
            if self._missed > self._waits * MISSED:
                self._off_until = now + self._backoff
                self._backoff = min(self._backoff * 2, BACKOFF_MAX)
            else:
                self._backoff = BACKOFF
        self._calm = self._calm + 1 if busy < BUSY else 0
        self.allowed = self._calm >= CALM and now >= self._off_until
        self._at = now
        self._cpu_at = cpu
        self._waited = 0.0
        self._waits = self._missed = 0


def read_until(
    fd: int, deadline: float, done: Callable[[], bool], received: Callable[[bytes], bool]
) -> None:
    """Read what arrives on ``fd`` and hand it to ``received`` until ``done()``, the
    ``deadline`` (``time.perf_counter``) passes, or ``received`` returns False (the
    connection was dropped). End of stream and errors are left for the transport to find:
    it reads them too."""
    while not done():
        left = deadline - time.perf_counter()
        if left <= 0:
            return
        try:
            ready, _, _ = select.select((fd,), (), (), left)
        except (OSError, ValueError):
            return
        if not ready:
            return
        try:
            data = os.read(fd, 262144)
        except (BlockingIOError, InterruptedError):
            continue
        except OSError:
            return
        if not data or not received(data):
            return
