"""Instructions per request of the middleware alone, by ``valgrind --tool=callgrind``.

The middleware is called directly (no HTTP server) on uvloop, in front of a raw ASGI origin
that answers a ~2 KB JSON document at once, against the Redis at ``--url``: ``miss`` makes
every request a new URL (lookup with the fill lock, the origin, the store), ``hit`` asks one
stored URL, ``near`` the same with a 64 MiB near cache, ``origin`` the origin alone. Each kind
runs twice under callgrind, with ``--requests`` and with none, after the same 300 requests of
warm-up; the difference over ``--requests`` is what one request costs, start-up excluded.
Instruction counts are stable on a noisy machine where times are not; they count user-space
instructions only (a system call counts as one).

    python bench/instructions.py --kinds miss,hit,near --requests 2000
    python bench/instructions.py --one miss 2000     # what each callgrind run executes
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))


async def _run(kind: str, requests: int, url: str) -> None:
    from apps._common import make_document
    from cpu_hit import hit_scope

    from redis_cache_middleware import CacheMiddleware, RedisCache

    body = json.dumps(make_document(42, "hot")).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]

    async def origin(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    namespace = f"instructions-{uuid.uuid4().hex[:8]}"
    options = {"near_cache_bytes": 64 * 2**20} if kind == "near" else {}
    cache = RedisCache.from_url(url, namespace=namespace, **options)
    app: Any = origin if kind == "origin" else CacheMiddleware(origin, cache=cache, default_ttl=60)
    await cache.warm_up()
    template = hit_scope()

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        return None

    async def one(i: int) -> None:
        scope = dict(template)
        scope["headers"] = list(template["headers"])
        if kind in ("miss", "origin"):
            scope["query_string"] = b"q=m%d" % i
        await app(scope, receive, send)

    for i in range(300):
        await one(-1 - i)
    await asyncio.sleep(0.05)
    for i in range(requests):
        await one(i)
    await asyncio.sleep(0.05)
    await cache.clear()
    await cache.aclose()


def run_one(kind: str, requests: int, url: str) -> None:
    try:
        import uvloop

        uvloop.run(_run(kind, requests, url))
    except ImportError:  # pragma: no cover
        asyncio.run(_run(kind, requests, url))


def instructions(kind: str, requests: int, url: str) -> int:
    command = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        __file__,
        "--url",
        url,
        "--one",
        kind,
        str(requests),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    found = re.search(r"Collected : (\d+)", result.stderr)
    if found is None:
        raise RuntimeError(f"callgrind printed no total:\n{result.stderr[-2000:]}")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--kinds", default="miss,hit,near,origin")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--one", nargs=2, metavar=("KIND", "REQUESTS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        run_one(args.one[0], int(args.one[1]), args.url)
        return
    for kind in args.kinds.split(","):
        base = instructions(kind, 0, args.url)
        total = instructions(kind, args.requests, args.url)
        print(f"{kind:>6}: {(total - base) // args.requests:>9,} instructions per request")


if __name__ == "__main__":
    main()
