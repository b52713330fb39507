"""What every benchmark variant shares: the document, the fake upstream, the origin counter.

Each variant serves the same endpoint, ``GET /items/{id}?q=...``: it awaits a 20 ms "upstream"
(``asyncio.sleep``) and returns a ~2 KB JSON document that depends only on ``id`` and ``q``.
``GET /__bench/calls`` reports how many times the upstream ran in this process (so that the
harness can tell a cache hit from a miss) and which event loop serves it; it is never cached.

Configuration comes from the environment: ``BENCH_REDIS_URL`` (the harness's own
redis-server), ``BENCH_TTL`` (seconds, 60 by default).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys

UPSTREAM_DELAY = 0.02
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6390/0")
TTL = int(os.environ.get("BENCH_TTL", "60"))
NAMESPACE = "bench"

#: How many times the upstream ran in this process.
CALLS = {"n": 0}


def make_document(item_id: int, q: str | None) -> dict[str, object]:
    """Return the ~2 KB document for (id, q): deterministic, a little nested, mostly strings."""
    seed = hashlib.sha256(f"{item_id}:{q}".encode()).hexdigest()
    tags = [seed[i : i + 8] for i in range(0, 64, 8)]
    related = [
        {"id": item_id * 10 + k, "name": f"related item {k} of {item_id}", "score": k / 7}
        for k in range(8)
    ]
    return {
        "id": item_id,
        "q": q,
        "name": f"Item number {item_id}",
        "description": ("A deterministic benchmark document for " + seed + ". ") * 12,
        "price": {"amount": (item_id % 997) + 0.99, "currency": "EUR"},
        "tags": tags,
        "related": related,
        "in_stock": item_id % 3 != 0,
    }


async def upstream(item_id: int, q: str | None) -> dict[str, object]:
    """The slow origin: 20 ms of waiting, then the document."""
    CALLS["n"] += 1
    await asyncio.sleep(UPSTREAM_DELAY)
    return make_document(item_id, q)


def calls_payload() -> dict[str, object]:
    """What ``/__bench/calls`` answers."""
    try:
        loop = type(asyncio.get_running_loop())
        loop_name = f"{loop.__module__}.{loop.__qualname__}"
    except RuntimeError:  # pragma: no cover
        loop_name = "none"
    http = "unknown"
    if "uvicorn.protocols.http.httptools_impl" in sys.modules:
        http = "httptools"
    elif "uvicorn.protocols.http.h11_impl" in sys.modules:
        http = "h11"
    return {"calls": CALLS["n"], "loop": loop_name, "http": http, "pid": os.getpid()}


#: The pre-built answer of the two floors: what a perfect cache would send.
CONSTANT_BODY = json.dumps(make_document(42, "hot"), separators=(",", ":")).encode()
