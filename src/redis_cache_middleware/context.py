"""What the request path's pieces share for the middleware's lifetime: the app, the cache,
the validated options, the clock and the fill locks' calls.

Built once by ``CacheMiddleware``; the per-request objects (``Forward``, the coalescer, the
refresher, the invalidation) take it instead of a reference back to the middleware, so that
no module of the request path imports ``middleware``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ._types import ASGIApp

if TYPE_CHECKING:
    from .cache import RedisCache
    from .config import CacheConfig
    from .fill_lock import LockCalls


class Context:
    """The app, the cache, the options, the wall clock (``clock()``, seconds since the epoch,
    replaced by tests), the fill locks' calls, and whether Redis took the last store."""

    __slots__ = ("app", "cache", "clock", "config", "locks", "stores_taken")

    def __init__(
        self,
        app: ASGIApp,
        cache: RedisCache,
        config: CacheConfig,
        locks: LockCalls,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.app = app
        self.cache = cache
        self.config = config
        self.locks = locks
        self.clock = clock
        #: Whether Redis took the last store (``storing.put``): while it does, a response
        #: sent whole goes out as its store is sent, without waiting for Redis's reply
        #: (``Forward``); after a store failed, each waits, so Cache-Status shows the error.
        self.stores_taken = True
