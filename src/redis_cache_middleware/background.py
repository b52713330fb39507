"""Background refreshes: tracked tasks, bounded in number, drained or cancelled on shutdown."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any

from .stats import logger


class BackgroundTasks:
    """A bounded set of tasks that outlive the request that started them.

    ``spawn`` refuses (and closes the coroutine) when ``limit`` tasks already run, so a burst
    of stale hits cannot pile up work. ``drain`` waits for them up to a timeout, then cancels
    what is left; a task's failure is logged, never raised into a request.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._tasks: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, None], name: str = "refresh") -> bool:
        """Start ``coro`` in the background; return False (and close it) when full."""
        if len(self._tasks) >= self.limit:
            coro.close()
            return False
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return True

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            logger.warning("background refresh failed: %s: %s", type(exc).__name__, exc)

    async def drain(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the running tasks, then cancel the rest."""
        if not self._tasks:
            return
        pending = set(self._tasks)
        _, still = await asyncio.wait(pending, timeout=timeout)
        for task in still:
            task.cancel()
        for task in still:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
