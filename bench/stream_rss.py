"""Streaming memory: uvicorn's peak RSS growth while it streams 200 MiB in 64 KiB chunks
through ``ours`` at its default ``max_body_size``, against the same app without the
middleware (``apps/stream.py``), and the ``tracemalloc`` peak of the same stream passed
through the middleware in-process.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from cpu_hit import hit_scope
from procs import RedisServer, start_app

#: The streaming test's chunk: 64 KiB, what a StreamingResponse over a file or a generator
#: usually yields.
STREAM_CHUNK = 64 * 1024


def _status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/{pid}/status")


def _stream_once(
    module_env: dict[str, str],
    name: str,
    cpus: list[int] | None,
    log_dir: Path,
    expected: int,
) -> dict[str, object]:
    server = start_app("stream", name, module_env, cpus, log_dir)
    pid = server.process.pid
    try:
        with httpx.Client(timeout=httpx.Timeout(60.0)) as http:
            for _ in range(3):  # let imports and first-request allocations happen
                server.calls(http)
            time.sleep(0.3)
            idle_kib = _status_kib(pid, "VmRSS")
            hwm_reset = False
            try:
                with open(f"/proc/{pid}/clear_refs", "w") as f:
                    f.write("5")  # resets VmHWM to the current RSS
                hwm_reset = True
            except OSError:
                pass
            peak_polled = idle_kib
            stop_event = threading.Event()

            def poll() -> None:
                nonlocal peak_polled
                while not stop_event.is_set():
                    try:
                        peak_polled = max(peak_polled, _status_kib(pid, "VmRSS"))
                    except (OSError, RuntimeError):
                        return
                    time.sleep(0.002)

            poller = threading.Thread(target=poll, daemon=True)
            poller.start()
            received = 0
            t0 = time.perf_counter()
            with http.stream("GET", f"{server.base}/big") as response:
                cache_status = response.headers.get("cache-status", "")
                for chunk in response.iter_raw(1 << 20):
                    received += len(chunk)
            seconds = time.perf_counter() - t0
            stop_event.set()
            poller.join(timeout=2)
            hwm_kib = _status_kib(pid, "VmHWM")
            after_kib = _status_kib(pid, "VmRSS")
            # A second request, to see whether anything was stored (it must not be).
            again = http.get(f"{server.base}/__bench/calls")
            again.raise_for_status()
    finally:
        server.stop()
    peak_kib = max(peak_polled, hwm_kib if hwm_reset else peak_polled)
    return {
        "bytes_received": received,
        "complete": received == expected,
        "seconds": round(seconds, 3),
        "idle_rss_kib": idle_kib,
        "peak_rss_kib": peak_kib,
        "peak_polled_kib": peak_polled,
        "vmhwm_kib": hwm_kib,
        "vmhwm_reset": hwm_reset,
        "rss_after_kib": after_kib,
        "growth_kib": peak_kib - idle_kib,
        "cache_status": cache_status,
    }


async def _traced_stream(
    redis_url: str, chunks: int, with_middleware: bool, chunk: int = STREAM_CHUNK
) -> int:
    """Return tracemalloc's peak (bytes over the start) while ``chunks`` chunks pass
    in-process."""
    import tracemalloc

    from redis_cache_middleware import CacheMiddleware, RedisCache

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/octet-stream")],
            }
        )
        for i in range(chunks):
            await send(
                {"type": "http.response.body", "body": bytes((i % 251,)) * chunk, "more_body": True}
            )
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    cache = RedisCache.from_url(redis_url, namespace="traced")
    target = CacheMiddleware(app, cache=cache, default_ttl=60) if with_middleware else app
    scope = hit_scope()
    scope["path"] = scope["raw_path"] = "/big"
    scope["raw_path"] = b"/big"
    scope["query_string"] = f"n={with_middleware}".encode()

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        return None

    await cache.client.ping()  # the connection exists before tracing starts
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        await target(scope, receive, send)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        await cache.aclose()
    return peak - base


def streaming_rss(
    redis_server: RedisServer,
    env: dict[str, str],
    cpus: list[int] | None,
    log_dir: Path,
    chunks: int = 200 * 1024 * 1024 // STREAM_CHUNK,
    repeats: int = 3,
    chunk: int = STREAM_CHUNK,
) -> dict[str, object]:
    """Peak RSS growth of uvicorn while it streams ``chunks`` chunks of ``chunk`` bytes (200
    MiB in 64 KiB chunks, StreamingResponse's usual grain), with and without ``ours``.

    Each is measured ``repeats`` times, alternating, and the median run is reported.
    """
    from redis_cache_middleware.config import DEFAULT_MAX_BODY_SIZE

    expected = chunks * chunk
    client = redis_server.client()
    client.flushall()
    base_env = {**env, "BENCH_STREAM_CHUNKS": str(chunks), "BENCH_STREAM_CHUNK": str(chunk)}
    runs: dict[str, list[dict[str, object]]] = {"ours": [], "no_middleware": []}
    for rep in range(repeats):  # alternate, a fresh server each time
        runs["ours"].append(
            _stream_once(
                {**base_env, "BENCH_STREAM_CACHE": "1"},
                f"stream-ours-{rep}",
                cpus,
                log_dir,
                expected,
            )
        )
        runs["no_middleware"].append(
            _stream_once(
                {**base_env, "BENCH_STREAM_CACHE": "0"},
                f"stream-bare-{rep}",
                cpus,
                log_dir,
                expected,
            )
        )
    stored_keys = sum(1 for _ in client.scan_iter(match="bench:*{*}"))
    client.close()

    def median_run(items: list[dict[str, object]]) -> dict[str, object]:
        ordered = sorted(items, key=lambda r: r["growth_kib"])  # type: ignore[arg-type,return-value]
        chosen = dict(ordered[len(ordered) // 2])
        chosen["growth_kib_all"] = [r["growth_kib"] for r in items]
        chosen["complete"] = all(r["complete"] for r in items)
        return chosen

    ours, without = median_run(runs["ours"]), median_run(runs["no_middleware"])
    traced = {
        name: asyncio.run(_traced_stream(redis_server.url, chunks, flag, chunk))
        for name, flag in (("ours", True), ("no_middleware", False))
    }
    return {
        "tracemalloc_peak_bytes": traced,
        "chunks": chunks,
        "chunk_bytes": chunk,
        "repeats": repeats,
        "max_body_size": DEFAULT_MAX_BODY_SIZE,
        "ours": ours,
        "no_middleware": without,
        "entries_stored": stored_keys,
        "growth_over_baseline_kib": ours["growth_kib"] - without["growth_kib"],  # type: ignore[operator]
    }
