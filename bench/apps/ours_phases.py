"""Variant ``ours`` with timers on a miss's phases, for ``bench/miss_phases.py``.

The app is ``apps.ours`` itself; this module wraps it and patches timers onto the lookup and
the lane (``_redis/lane.py``) before the first request, then writes what they measured to
``PHASES_OUT`` (JSON) at the lifespan's shutdown. Timers cost CPU of their own: compare phases,
not req/s, with the uninstrumented runs.
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from typing import Any

from redis_cache_middleware._redis import lane as lane_module
from redis_cache_middleware.cache import RedisCache

from .ours import app as ours_app

#: Seconds, per phase: see ``bench/miss_phases.py``.
PHASES: dict[str, list[float]] = {
    "request": [],
    "before_app": [],
    "app": [],
    "lookup": [],
    "queued_before_write": [],
    "write_to_reply": [],
    "reply_to_caller": [],
}
_queued: deque[float] = deque()
_written: deque[float] = deque()
_last_reply = [0.0]

_lookup = RedisCache.lookup
_execute = lane_module.Lane.execute
_flush = lane_module.Lane._flush
_received = lane_module.Lane._received


def _timed_lookup(self: RedisCache, *args: Any, **kwargs: Any) -> Any:
    call = _lookup(self, *args, **kwargs)

    async def timed() -> Any:
        began = time.perf_counter()
        try:
            return await call
        finally:
            PHASES["lookup"].append(time.perf_counter() - began)

    return timed()


async def _timed_execute(self: Any, *args: Any, **kwargs: Any) -> Any:
    _queued.append(time.perf_counter())
    reply = await _execute(self, *args, **kwargs)
    PHASES["reply_to_caller"].append(time.perf_counter() - _last_reply[0])
    return reply


def _timed_flush(self: Any) -> None:
    now = time.perf_counter()
    while _queued:
        PHASES["queued_before_write"].append(now - _queued.popleft())
        _written.append(now)
    _flush(self)


def _timed_received(self: Any, protocol: Any, data: bytes) -> None:
    now = time.perf_counter()
    owed = len(self._pending)
    _received(self, protocol, data)
    _last_reply[0] = now
    for _ in range(owed - len(self._pending)):
        if _written:
            PHASES["write_to_reply"].append(now - _written.popleft())


RedisCache.lookup = _timed_lookup  # type: ignore[method-assign]
lane_module.Lane.execute = _timed_execute  # type: ignore[method-assign]
lane_module.Lane._flush = _timed_flush  # type: ignore[method-assign]
lane_module.Lane._received = _timed_received  # type: ignore[method-assign]

_router: Any = ours_app.router
_route = type(_router).__call__


async def _timed_router(self: Any, scope: Any, receive: Any, send: Any) -> None:
    began = time.perf_counter()
    arrived = scope.get("state", {}).get("phases_arrived") if scope["type"] == "http" else None
    if arrived is not None:
        PHASES["before_app"].append(began - arrived)
    await _route(self, scope, receive, send)
    if arrived is not None:
        PHASES["app"].append(time.perf_counter() - began)


type(_router).__call__ = _timed_router


async def app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":

        async def shutdown_writes() -> Any:
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                _write()  # uvicorn ends on the signal it caught: no atexit
            return message

        await ours_app(scope, shutdown_writes, send)
        return
    if scope["type"] != "http":
        await ours_app(scope, receive, send)
        return
    if scope["path"] == "/__phases/reset":  # after the warm-up: measure from here
        for values in PHASES.values():
            values.clear()
        _queued.clear()
        _written.clear()
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    arrived = time.perf_counter()
    scope.setdefault("state", {})["phases_arrived"] = arrived

    async def timed_send(message: Any) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body"):
            PHASES["request"].append(time.perf_counter() - arrived)
        await send(message)

    await ours_app(scope, receive, timed_send)


def _write() -> None:
    path = os.environ.get("PHASES_OUT")
    if path:
        with open(path, "w") as out:
            json.dump(PHASES, out)
