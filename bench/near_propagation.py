"""How long a change in one worker takes to reach another worker's near cache.

Two processes on one Redis, each with a ``RedisCache(near_cache_bytes=...)`` behind the
middleware: the reader (a child process) holds a URL in its near cache; the writer (this
process) purges it, and the reader records when the push dropped it. Both read
``time.monotonic()``, one clock for every process of a Linux host. Reported: the delay from
the writer's purge call returning (the change is done) to the reader's drop, and from the
purge call starting, p50 / p99 / max over ``--rounds`` purges.

    python bench/near_propagation.py --url redis://127.0.0.1:6379/0 --rounds 500
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import statistics
import time
import uuid
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from redis_cache_middleware import CacheMiddleware, RedisCache


async def page(request: Request) -> Response:
    return Response(f"page {request.path_params['n']}", headers={"cache-control": "max-age=300"})


def client_for(cache: RedisCache) -> httpx.AsyncClient:
    app = Starlette(routes=[Route("/p/{n}", page)])
    app.add_middleware(CacheMiddleware, cache=cache)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench")


def reader(url: str, namespace: str, conn: Any) -> None:
    asyncio.run(_reader(url, namespace, conn))


async def _reader(url: str, namespace: str, conn: Any) -> None:
    cache = RedisCache.from_url(url, namespace=namespace, near_cache_bytes=2**24)
    await cache.warm_up()
    near = cache._state.near
    assert near is not None and near.ready, "tracking did not start"
    dropped: dict[str, float] = {}
    seen = asyncio.Event()
    tracker = cache._state.tracker
    assert tracker is not None
    pushed = tracker._pushed

    def timed(message: Any) -> None:
        now = time.monotonic()
        for name in message[1] or ():
            key = name.decode()
            if key in near.items:
                dropped[key] = now
                seen.set()
        pushed(message)

    tracker._pushed = timed  # type: ignore[method-assign]
    http = client_for(cache)
    loop = asyncio.get_running_loop()
    while True:
        message = await loop.run_in_executor(None, conn.recv)
        if message is None:
            break
        path = message
        deadline = time.monotonic() + 5
        while True:  # read it until the near cache holds it
            response = await http.get(path)
            if "detail=near" in response.headers.get("cache-status", ""):
                break
            assert time.monotonic() < deadline
            await asyncio.sleep(0.001)
        (key,) = [k for k, item in near.items.items() if item.value.body == response.content]
        conn.send("ready")
        dropped.pop(key, None)
        seen.clear()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(seen.wait(), 5)
        conn.send(dropped.get(key))
    await http.aclose()
    await cache.aclose()


async def writer(url: str, rounds: int) -> None:
    namespace = f"bench-near-{uuid.uuid4().hex[:8]}"
    parent, child = multiprocessing.Pipe()
    process = multiprocessing.get_context("spawn").Process(
        target=reader, args=(url, namespace, child)
    )
    process.start()
    cache = RedisCache.from_url(url, namespace=namespace, near_cache_bytes=2**24)
    await cache.warm_up()
    http = client_for(cache)
    after_done: list[float] = []
    after_start: list[float] = []
    loop = asyncio.get_running_loop()
    for n in range(rounds):
        path = f"/p/{n}"
        await http.get(path)
        parent.send(path)
        assert await loop.run_in_executor(None, parent.recv) == "ready"
        started = time.monotonic()
        await cache.purge_url(f"http://bench{path}")
        done = time.monotonic()
        at = await loop.run_in_executor(None, parent.recv)
        assert at is not None, "the reader never saw the purge"
        after_done.append(at - done)
        after_start.append(at - started)
    parent.send(None)
    process.join(10)
    await http.aclose()
    await cache.clear()
    await cache.aclose()
    for name, values in (("after the purge returned", after_done), ("after it began", after_start)):
        ordered = sorted(values)
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        print(
            f"{name}: p50 {statistics.median(ordered) * 1000:.3f} ms, "
            f"p99 {p99 * 1000:.3f} ms, max {ordered[-1] * 1000:.3f} ms, "
            f"min {ordered[0] * 1000:.3f} ms ({len(ordered)} purges)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--rounds", type=int, default=500)
    args = parser.parse_args()
    asyncio.run(writer(args.url, args.rounds))


if __name__ == "__main__":
    main()
