"""A short benchmark: the middleware in-process on a local 3-primary cluster vs one Redis.

    python bench/cluster_bench.py [--duration 3] [--concurrency 32] [--urls 1000] [--json FILE]

(with the project and its test extra installed: ``pip install -e '.[test]'``)

Starts a ``redis-server`` and a 3-primary Redis Cluster on free loopback ports (through
``tests/cluster_fixtures.py``; every process is stopped at the end, and stops by itself after
30 minutes whatever happens), then for each backend drives ``CacheMiddleware`` over a small
Starlette app with ``httpx.ASGITransport`` (no sockets between client and app, so Redis and
the client library are what differ):

- ``hit``: ``--urls`` URLs stored first, then GETs of random ones from ``--concurrency``
  concurrent tasks for ``--duration`` seconds;
- ``miss``: every GET a new URL (lookup with the fill lock, app call, and the store script
  with its index writes).

It prints requests per second and p50/p99 latency per backend and kind, and with ``--json``
writes the same rows with the settings and versions to a file (``docs/bench/cluster.json``
holds the run the docs quote). Everything runs in
this one process on this host, so the figures compare client-side cost and round trips, not
the capacity of a real multi-host cluster.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import httpx  # noqa: E402
import redis  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import Response  # noqa: E402
from starlette.routing import Route  # noqa: E402
from tests.cluster_fixtures import free_ports, start_cluster, start_node  # noqa: E402

from redis_cache_middleware import CacheMiddleware, RedisCache  # noqa: E402

BODY = b"x" * 1024


async def item(request: Request) -> Response:
    return Response(BODY, headers={"cache-control": "max-age=600"})


@asynccontextmanager
async def middleware_client(cache: RedisCache) -> AsyncIterator[httpx.AsyncClient]:
    app = Starlette(routes=[Route("/item/{n}", item)])
    app.add_middleware(CacheMiddleware, cache=cache, timeout=1.0)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://bench"
    ) as client:
        yield client


async def drive(
    client: httpx.AsyncClient,
    next_path: Callable[[], str],
    expect: str,
    duration: float,
    concurrency: int,
) -> tuple[int, list[float], int]:
    """Run ``concurrency`` tasks GETting ``next_path()`` for ``duration`` seconds; return
    the requests done, their latencies and how many did not say ``expect``."""
    latencies: list[float] = []
    wrong = 0
    deadline = time.perf_counter() + duration

    async def worker() -> None:
        nonlocal wrong
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            response = await client.get(next_path())
            latencies.append(time.perf_counter() - start)
            if expect not in response.headers.get("cache-status", "") or response.content != BODY:
                wrong += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(latencies), latencies, wrong


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def bench_backend(
    name: str, url: str, args: argparse.Namespace
) -> list[tuple[str, str, float, float, float, int]]:
    rows = []
    cache = RedisCache.from_url(url, namespace=f"bench-{uuid.uuid4().hex[:8]}")
    try:
        if hasattr(cache.client, "initialize"):
            await cache.client.initialize()
        async with middleware_client(cache) as client:
            paths = [f"/item/{n}" for n in range(args.urls)]
            for i in range(0, len(paths), 100):
                await asyncio.gather(*(client.get(p) for p in paths[i : i + 100]))
            await drive(client, lambda: random.choice(paths), "hit", 0.5, args.concurrency)
            done, lat, wrong = await drive(
                client, lambda: random.choice(paths), "hit", args.duration, args.concurrency
            )
            rows.append((name, "hit", done / args.duration, pct(lat, 0.5), pct(lat, 0.99), wrong))
            counter = iter(range(10**9))
            done, lat, wrong = await drive(
                client,
                lambda: f"/item/m{next(counter)}",
                "stored",
                args.duration,
                args.concurrency,
            )
            rows.append((name, "miss", done / args.duration, pct(lat, 0.5), pct(lat, 0.99), wrong))
    finally:
        await cache.clear()
        await cache.aclose()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per run (3)")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent tasks (32)")
    parser.add_argument("--urls", type=int, default=1000, help="URLs stored for hits (1000)")
    parser.add_argument("--json", metavar="FILE", help="also write the results to FILE")
    args = parser.parse_args()
    if not 0 < args.duration <= 60:
        parser.error("--duration must be in (0, 60]")
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        print("redis-server and redis-cli must be on PATH", file=sys.stderr)
        return 2
    workdir = tempfile.mkdtemp(prefix="rcm-bench-")
    single = start_node(free_ports(1)[0], workdir)
    cluster = None
    try:
        cluster = start_cluster(3, 0)
        rows = asyncio.run(run_all(single.port, cluster.url, args))
    finally:
        single.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        if cluster is not None:
            cluster.stop()
    today = datetime.date.today().isoformat()
    print(
        f"\n{today}, {platform.python_implementation()} {platform.python_version()}, "
        f"redis-py {redis.__version__}, {os.cpu_count()} cores; {args.duration:g} s per run, "
        f"{args.concurrency} concurrent, {args.urls} URLs, 1 KiB bodies, one process\n"
    )
    print("| backend | kind | requests/s | p50 ms | p99 ms | wrong |")
    print("|---|---|---:|---:|---:|---:|")
    for name, kind, rps, p50, p99, wrong in rows:
        print(f"| {name} | {kind} | {rps:,.0f} | {p50:.2f} | {p99:.2f} | {wrong} |")
    by = {(n, k): r for n, k, r, *_ in rows}
    for kind in ("hit", "miss"):
        ratio = by[("cluster (3 primaries)", kind)] / by[("single Redis", kind)]
        print(f"\ncluster / single, {kind}: {ratio:.2f}", end="")
    print()
    if args.json:
        record = {
            "date": today,
            "python": platform.python_version(),
            "redis_py": redis.__version__,
            "cpus": os.cpu_count(),
            "settings": {
                "duration_s": args.duration,
                "concurrency": args.concurrency,
                "urls": args.urls,
            },
            "rows": [
                {"backend": n, "kind": k, "rps": r, "p50_ms": p50, "p99_ms": p99, "wrong": w}
                for n, k, r, p50, p99, w in rows
            ],
        }
        with open(args.json, "w") as out:
            json.dump(record, out, indent=2)
            out.write("\n")
    return 1 if any(row[-1] for row in rows) else 0


async def run_all(
    single_port: int, cluster_url: str, args: argparse.Namespace
) -> list[tuple[str, str, float, float, float, int]]:
    rows = await bench_backend("single Redis", f"redis://127.0.0.1:{single_port}/0", args)
    rows += await bench_backend("cluster (3 primaries)", cluster_url, args)
    return rows


if __name__ == "__main__":
    sys.exit(main())
