"""The middleware's side of fill locks: each call bounded and failing open (``guarded``),
and the renewal that keeps a lock alive while its owner's app call runs.

A fill lock (``SET NX PX`` with a random token, in ``RedisCache``) lets one request per URL
and variant, across every process, call the app on a miss while the others wait for its
entry. Every call here takes the generation the request's keys are in (the one its lookup
saw), so that a ``clear()`` meanwhile leaves the old generation's lock behind.

May call: ``RedisCache``'s fill-lock methods, through ``guarded``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from .cache import FillLock, RedisCache
from .config import CacheConfig
from .guard import Skipped, T, guarded

#: A fill lock's owner renews it this many times per TTL (``LockRenewal``).
RENEWALS_PER_TTL = 3


class LockCalls:
    """Acquire, take over, renew and release fill locks for the middleware: ``ACQUIRED``,
    ``HELD`` or ``PASS`` as ``RedisCache`` says, None when Redis failed (the request then
    carries on without a lock)."""

    def __init__(self, cache: RedisCache, config: CacheConfig) -> None:
        self.cache = cache
        self.config = config

    async def _call(self, kind: str, call: Callable[[], Coroutine[Any, Any, T]]) -> T | None:
        result = await guarded(self.cache, self.config.timeout, kind, call)
        return None if isinstance(result, Skipped) else result

    async def acquire(self, uhash: str, fill: FillLock, generation: int) -> int | None:
        """Try to take the lock of ``fill``'s variant of the URL."""
        ttl = self.config.fill_lock_ttl
        return await self._call(
            "fill lock", lambda: self.cache.acquire_fill(uhash, fill, ttl, generation)
        )

    async def take_over(self, uhash: str, fill: FillLock, generation: int) -> int | None:
        """Ask Redis whether this waiter, whose ``coalesce_timeout`` ran out, takes the fill
        over under ``fill``: one waiter across all processes may per ``coalesce_timeout``
        (``RedisCache.take_over_fill``). ``ACQUIRED``: the lock is this waiter's now;
        ``HELD``: another's was; ``PASS``: hit-for-pass."""
        window = self.config.coalesce_timeout
        ttl = self.config.fill_lock_ttl
        return await self._call(
            "fill takeover",
            lambda: self.cache.take_over_fill(uhash, fill, ttl, window, generation),
        )

    async def renew(self, uhash: str, fill: FillLock, generation: int) -> bool | None:
        """Give a lock this request holds its full TTL again: True; False when it is no
        longer ours; None when Redis did not answer in time."""
        ttl = self.config.fill_lock_ttl
        return await self._call(
            "lock renewal", lambda: self.cache.renew_fill(uhash, fill, ttl, generation)
        )

    async def release(
        self, uhash: str, fill: FillLock, generation: int, *, refused: bool = False
    ) -> None:
        """Give back a lock this request holds; ``refused`` (the response was not storable)
        also marks the URL hit-for-pass for ``hit_for_pass_ttl``."""
        pass_for = self.config.hit_for_pass_ttl if refused else 0.0
        await self._call(
            "lock release",
            lambda: self.cache.release_fill(uhash, fill, generation, pass_for=pass_for),
        )

    def keep_alive(self, uhash: str, fill: FillLock, generation: int) -> LockRenewal:
        """Start renewing a lock this request holds, until ``stop()``."""
        return LockRenewal(self, uhash, fill, generation)


class LockRenewal:
    """Keep the fill lock a forward owns alive for as long as its app call runs.

    The lock lives ``fill_lock_ttl`` seconds, well under ``coalesce_timeout``, so that the
    lock of an owner that died frees up long before its waiters give up. A live owner whose
    app is slower than that renews it every third of the TTL with a compare-token
    ``PEXPIRE`` (``RedisCache.renew_fill``), so that no waiter takes it over and calls the
    app again; a renewal that fails still leaves another before the lock would expire.

    Nothing runs in between: a timer waits, and only when it fires does a task send the
    renewal, so a fill quicker than a third of the TTL (most are) costs one timer and no
    Redis call. Each renewal is bounded by ``timeout`` and fails open (a failed one is tried
    again at the next tick: the lock may still be ours). The renewals end when ``stop`` is
    called, as the app call ends (it answered, raised, or was cancelled; a client that went away
    ends it when the app stops on ``http.disconnect`` or on its ``send`` raising); the store
    or release that follows is bounded by ``timeout``, under the two thirds of its TTL the
    lock has left.
    They also end when the lock is found not to be ours any more. A renewal whose timer
    fired but whose task had not run yet when ``stop`` was called sends nothing; one already
    sent is let finish: it only ever extends our own token, so it cannot
    keep a lock someone else holds, and a lock that was stored or released is gone.
    """

    __slots__ = (
        "_fill",
        "_generation",
        "_handle",
        "_interval",
        "_locks",
        "_loop",
        "_task",
        "_uhash",
    )

    def __init__(self, locks: LockCalls, uhash: str, fill: FillLock, generation: int) -> None:
        self._locks = locks
        self._uhash = uhash
        self._fill = fill
        self._generation = generation
        self._interval = locks.config.fill_lock_ttl / RENEWALS_PER_TTL
        self._loop = asyncio.get_running_loop()
        self._task: asyncio.Task[None] | None = None
        self._handle: asyncio.TimerHandle | None = self._loop.call_later(self._interval, self._fire)

    def _fire(self) -> None:
        self._handle = None
        # Held here until it is done: the loop keeps only a weak reference to its tasks.
        self._task = self._loop.create_task(self._renew(self._loop.time()))

    async def _renew(self, fired: float) -> None:
        if not self._interval:
            # Stopped after the timer fired but before this task ran: send nothing.
            self._task = None
            return
        kept = await self._locks.renew(self._uhash, self._fill, self._generation)
        self._task = None
        if kept is not False and self._interval:
            self._handle = self._loop.call_at(fired + self._interval, self._fire)

    def stop(self) -> None:
        """Renew no more (a renewal under way finishes, and schedules nothing)."""
        self._interval = 0.0
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
