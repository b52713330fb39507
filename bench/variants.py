"""Which variants the benchmark measures and how each is started: the apps under ``apps/``,
the peers' pinned packages (and the venv of a peer that cannot share ``bench/.venv``), what
each variant is, and the check a variant must pass before it is loaded (the expected
document, and for a cached one, a second request served from cache).

Standard library only at import: ``run.py`` reads the variants before it has a venv.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from procs import AppServer

BENCH = Path(__file__).resolve().parent

#: Each peer is installed on its own, so that one that fails skips only its variant.
PEERS: dict[str, list[str]] = {
    # fastapi-cache2's own [redis] extra pins redis<5, which this project (redis>=5.0.1)
    # cannot share: with it pip falls back to fastapi-cache2 0.1.8 and aioredis 2.0.1, which
    # does not import on Python 3.11. Its RedisBackend only needs redis.asyncio, which the
    # core's redis (install.py) provides, so it is installed without the extra. It imports
    # starlette.templating, which needs jinja2, and does not declare it.
    "fastapi_cache2": ["fastapi-cache2==0.2.2", "jinja2==3.1.6"],
    "cashews": ["cashews[redis]==7.6.0"],
    "litestar": ["uvicorn[standard]==0.54.0", "httpx==0.28.1", "litestar[redis]==2.25.0"],
}
#: Peers whose pins cannot live beside the others get a venv of their own.
OWN_VENV = {"litestar": BENCH / ".venv-litestar"}
PEER_NOTES = {
    "fastapi_cache2": (
        "fastapi-cache2 0.2.2 installed without its [redis] extra (which pins redis<5, "
        "against this project's redis>=5.0.1), plus jinja2, which it imports undeclared"
    ),
    "litestar": (
        "litestar[redis] 2.25.0 pins redis<5.3, so it runs in a venv of its own "
        "(bench/.venv-litestar) on the redis-py that pin allows"
    ),
}

#: name -> (module under bench/apps, checks that a second request is a cache hit, peer)
VARIANTS: dict[str, tuple[str, bool, str | None]] = {
    "constant": ("constant", False, None),
    "bare": ("bare", False, None),
    "nocache": ("nocache", False, None),
    "ours": ("ours", True, None),
    "ours_near": ("ours_near", True, None),
    "ours_outer": ("ours_outer", True, None),
    "fastapi_cache2": ("fastapi_cache2", True, "fastapi_cache2"),
    "cashews": ("cashews", True, "cashews"),
    "litestar": ("litestar", True, "litestar"),
}
DESCRIPTIONS = {
    "constant": "FastAPI route returning pre-built bytes, no upstream, no cache (the floor)",
    "bare": "bare ASGI callable sending the same pre-built bytes (the lowest floor)",
    "nocache": "FastAPI, every request awaits the 20 ms upstream",
    "ours": "FastAPI + redis_cache_middleware.CacheMiddleware(default_ttl=60)",
    "ours_near": "ours with RedisCache(near_cache_bytes=64 MiB): hits from process memory",
    "ours_outer": "ours_near wrapped around the whole app: CacheMiddleware(app, ...)",
    "fastapi_cache2": "FastAPI + fastapi-cache2 @cache(expire=60), RedisBackend",
    "cashews": "FastAPI + cashews @cache(ttl='60s'), redis backend",
    "litestar": "Litestar route cache=True, ResponseCacheConfig + RedisStore",
}
HOT_PATH = "/items/42?q=hot"


def variant_entries(
    names: list[str], install_state: dict[str, Any]
) -> dict[str, dict[str, object]]:
    """The results' entry of each variant in ``names``; a peer that did not install is skipped."""
    variants: dict[str, dict[str, object]] = {}
    for name in names:
        _, cached, peer = VARIANTS[name]
        entry: dict[str, object] = {
            "status": "ran",
            "description": DESCRIPTIONS[name],
            "cached": cached,
            "rounds": [],
        }
        if peer is not None:
            state = install_state.get("peers", {}).get(peer, {})
            if not state.get("installed", False):
                entry["status"] = "skipped"
                entry["reason"] = f"could not be installed: {state.get('reason', 'unknown')}"
                print(f"skipping {name}: {entry['reason']}", flush=True)
        variants[name] = entry
    return variants


def start_variant(
    name: str, tag: str, env: dict[str, str], cpus: list[int] | None, log_dir: Path
) -> AppServer:
    """Start the variant's app under uvicorn, with its own venv's Python if it has one.

    Raises RuntimeError (from ``procs.start_app``) when the server does not start.
    """
    import procs

    module = VARIANTS[name][0]
    own = OWN_VENV.get(name)
    return procs.start_app(
        module,
        tag,
        env,
        cpus,
        log_dir,
        python=str(own / "bin" / "python") if own else sys.executable,
    )


def check_document(body: bytes, item_id: int, q: str) -> str | None:
    """Return why ``body`` is not the endpoint's document for (item_id, q), or None."""
    from apps._common import make_document

    try:
        got = json.loads(body)
    except ValueError:
        return f"not JSON: {body[:80]!r}"
    if got != json.loads(json.dumps(make_document(item_id, q))):
        return f"not the expected document for id={item_id} q={q}: {body[:80]!r}"
    return None


def verify(server, cached: bool, tag: str, floor: bool) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """Check the endpoint; for a cached variant, that a second request is served from cache.

    Raises RuntimeError with the reason when the variant must not be loaded.
    """
    import httpx

    with httpx.Client(timeout=10.0) as client:
        path_q = f"verify-{tag}"
        url = f"{server.base}/items/7?q={path_q}"
        calls0 = server.calls(client)
        t0 = time.perf_counter()
        first = client.get(url)
        t1 = time.perf_counter()
        second = client.get(url)
        t2 = time.perf_counter()
        calls1 = server.calls(client)
        for response in (first, second):
            if response.status_code != 200:
                raise RuntimeError(f"GET {url} answered {response.status_code}")
        if not floor:
            for response in (first, second):
                why = check_document(response.content, 7, path_q)
                if why:
                    raise RuntimeError(why)
        hot = client.get(server.base + HOT_PATH)
        why = check_document(hot.content, 42, "hot")
        if why:
            raise RuntimeError(why)
        info = {
            "first_ms": round((t1 - t0) * 1000, 2),
            "second_ms": round((t2 - t1) * 1000, 2),
            "origin_calls": calls1 - calls0,
            "cache_status": [first.headers.get("cache-status"), second.headers.get("cache-status")],
            "hot_body_bytes": len(hot.content),
            "hot_header_bytes": sum(len(k) + len(v) + 4 for k, v in hot.headers.raw),
        }
        if cached:
            if calls1 - calls0 != 1:
                raise RuntimeError(
                    f"two requests for one URL ran the upstream {calls1 - calls0} times: "
                    "the second was not served from cache"
                )
            if (t2 - t1) >= 0.015:
                raise RuntimeError(
                    f"the second request took {(t2 - t1) * 1000:.1f} ms (the upstream alone "
                    "takes 20 ms): not a cache hit"
                )
        return info
