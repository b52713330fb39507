"""Bounding a Redis call in time, so that a request never waits on Redis longer than asked.

The cheap way is a timeout around the call in the request's own task (``bounded``): at the
deadline the task is cancelled, and the call ends there, as long as the call lets the
cancellation through. On Python 3.10 and 3.11 one that redis-py makes may not:
``asyncio.wait_for`` can swallow the cancellation of the task awaiting it when the awaited
send completes in the same loop iteration (CPython issue 86296; 3.12 builds ``wait_for`` on
``asyncio.timeout`` and does not). redis-py sends under ``wait_for`` whenever a connection
has a ``socket_timeout`` (5 s by default in redis-py 8), then treats the connection error
that follows as retryable and sleeps its backoff: the call, and the request, went on for
seconds past the deadline. For such clients ``run_bounded(..., isolate=True)`` runs the call
in a task of its own and stops waiting at the deadline whatever the call does.

A timeout measures the process as much as Redis: when the event loop is busy (CPU work in
the loop's thread, a flood of requests), Redis's answer can sit unread in the socket while
the deadline passes. ``pass_time`` helps the circuit breaker tell such timeouts apart.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import sys
import time
import weakref
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

if sys.version_info >= (3, 11):
    from asyncio import timeout as bounded
else:  # pragma: no cover - Python 3.10
    from async_timeout import timeout as bounded

__all__ = [
    "WAIT_FOR_SWALLOWS_CANCELLATION",
    "Bound",
    "bounded",
    "pass_time",
    "run_bounded",
    "sends_under_wait_for",
]

T = TypeVar("T")

#: Whether ``asyncio.wait_for`` can swallow the cancellation of its caller (Python < 3.12).
WAIT_FOR_SWALLOWS_CANCELLATION = sys.version_info < (3, 12)


async def pass_time(clock: Callable[[], float] = time.monotonic) -> float:
    """Return how long one pass round the event loop takes now, in seconds (the time an
    ``asyncio.sleep(0)`` takes: every callback already ready runs first). Microseconds on an
    idle loop; on one that many ready tasks keep busy, as long as all their work.
    """
    now = clock()
    await asyncio.sleep(0)
    return clock() - now


async def run_bounded(
    call: Callable[[], Coroutine[Any, Any, T]], seconds: float, *, isolate: bool
) -> T:
    """Return ``await call()``, or raise ``asyncio.TimeoutError`` after ``seconds``.

    With ``isolate``, the call runs in a task of its own: at the deadline that task is
    cancelled and left to end by itself (its outcome is retrieved, never logged as lost),
    and the caller goes on at once. A caller cancelled while it waits cancels the call too.
    """
    if not isolate:
        async with bounded(seconds):
            return await call()
    loop = asyncio.get_running_loop()
    task = loop.create_task(call())
    # One future woken by whichever comes first, the call's end or the deadline: lighter
    # than asyncio.wait, which builds sets and a callback per call.
    waiter: asyncio.Future[None] = loop.create_future()
    wake = functools.partial(_wake, waiter)
    task.add_done_callback(wake)
    deadline = loop.call_later(seconds, wake, None)
    try:
        await waiter
    except BaseException:
        deadline.cancel()
        _abandon(task)
        raise
    deadline.cancel()
    if task.done():
        return task.result()
    _abandon(task)
    raise asyncio.TimeoutError


class Bound:
    """A time limit on the rest of the current task's block, for the request path's Redis
    calls: ``asyncio.timeout``'s behaviour at a fraction of its cost.

    ``asyncio.timeout`` starts and stops a timer of the event loop for every block, which
    on uvloop costs a Redis call about as much CPU as the rest of ``guarded``. A bound
    instead joins its loop's ``_Watch``: a heap of deadlines and one timer for the earliest
    one still running, which under a steady load fires about once per timeout.

    ``Bound(seconds)`` starts it; at the deadline the task is cancelled, as
    ``asyncio.timeout`` does. ``close(exc)`` ends it, given the exception the block raised
    (None if it raised none), and returns True when that exception is the cancellation the
    bound made: the caller then raises ``TimeoutError``. A cancellation from elsewhere, even
    one that comes together with the deadline, is not taken for a timeout (Python 3.11+:
    ``Task.uncancel``, as ``asyncio.timeout`` does)::

        bound = Bound(0.1)
        try:
            result = await call()
        except BaseException as exc:
            if bound.close(exc):
                raise TimeoutError from exc
            raise
        bound.close(None)
    """

    __slots__ = ("_cancelling", "_task", "expired")

    def __init__(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop)
        if task is None:
            raise RuntimeError("Bound must be used inside a task")
        self._task: asyncio.Task[Any] | None = task
        if sys.version_info >= (3, 11):
            self._cancelling = task.cancelling()
        else:  # pragma: no cover - Python 3.10
            self._cancelling = 0
        #: Whether the deadline came while the block ran (and the task was cancelled).
        self.expired = False
        _watch(loop).add(loop, loop.time() + seconds, self)

    def _expire(self) -> None:
        task = self._task
        if task is not None:
            self.expired = True
            task.cancel()

    def close(self, exc: BaseException | None) -> bool:
        """End the bound; return whether ``exc`` is the cancellation its deadline made."""
        task, self._task = self._task, None
        if not self.expired or task is None:
            return False
        cancelled = isinstance(exc, asyncio.CancelledError)
        if sys.version_info >= (3, 11):
            return task.uncancel() <= self._cancelling and cancelled
        return cancelled  # pragma: no cover - Python 3.10


#: Deadlines within this many seconds of the loop's clock are due: uvloop's clock and
#: timers count whole milliseconds, so a timer may run just before its deadline.
_SLACK = 0.001


class _Watch:
    """One event loop's running ``Bound``s by deadline, and one timer for the earliest."""

    __slots__ = ("_heap", "_seq", "_timer", "_timer_at")

    def __init__(self) -> None:
        # No strong reference to the loop, which keys the watch in a weak dictionary: the
        # methods are given it, or run in it, and the timer (which holds the loop, and which
        # the loop holds while it is armed) is held weakly, so that a loop closed with its
        # timer armed is freed.
        self._heap: list[tuple[float, int, Bound]] = []
        self._seq = 0
        self._timer: weakref.ref[asyncio.TimerHandle] | None = None
        self._timer_at = float("inf")

    def add(self, loop: asyncio.AbstractEventLoop, deadline: float, bound: Bound) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (deadline, self._seq, bound))
        if deadline < self._timer_at:
            self._arm(loop, deadline)

    def _arm(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        timer = self._timer() if self._timer is not None else None
        if timer is not None:
            timer.cancel()
        self._timer_at = deadline
        self._timer = weakref.ref(loop.call_at(deadline, self._fire, loop))

    def _fire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        self._timer_at = float("inf")
        heap = self._heap
        due = loop.time() + _SLACK
        # Bounds already closed go whenever they reach the top (most of them, long before
        # their deadline); those still running go when due.
        while heap:
            deadline, _, bound = heap[0]
            if bound._task is not None:
                if deadline > due:
                    self._arm(loop, deadline)
                    return
                bound._expire()
            heapq.heappop(heap)


#: Each event loop's watch; the last one used is also kept at hand.
_WATCHES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Watch] = weakref.WeakKeyDictionary()
_last: tuple[Callable[[], asyncio.AbstractEventLoop | None], _Watch] | None = None


def _watch(loop: asyncio.AbstractEventLoop) -> _Watch:
    global _last
    last = _last
    if last is not None and last[0]() is loop:
        return last[1]
    watch = _WATCHES.get(loop)
    if watch is None:
        watch = _WATCHES[loop] = _Watch()
    _last = (weakref.ref(loop), watch)
    return watch


def _wake(waiter: asyncio.Future[None], _: object) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _abandon(task: asyncio.Future[Any]) -> None:
    task.cancel()
    task.add_done_callback(_retrieve)


def _retrieve(task: asyncio.Future[Any]) -> None:
    # The caller has gone on without this outcome: mark it seen, so asyncio does not log
    # "exception was never retrieved" for an error the caller already counted as a timeout.
    if not task.cancelled():
        task.exception()


def sends_under_wait_for(client: Any) -> bool:
    """Whether a redis-py client's connections send under ``asyncio.wait_for``: those with a
    ``socket_timeout`` do. A client whose settings cannot be read is assumed to."""
    holder = getattr(client, "nodes_manager", None) or getattr(client, "connection_pool", None)
    kwargs = getattr(holder, "connection_kwargs", None)
    if not isinstance(kwargs, dict):
        return True
    return bool(kwargs.get("socket_timeout"))
