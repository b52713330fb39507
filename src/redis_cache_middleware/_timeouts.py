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
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

if sys.version_info >= (3, 11):
    from asyncio import timeout as bounded
else:  # pragma: no cover - Python 3.10
    from async_timeout import timeout as bounded

__all__ = [
    "WAIT_FOR_SWALLOWS_CANCELLATION",
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
