"""The measurements besides throughput, all on ``ours``: Redis commands per hit and per miss,
Python CPU time per hit in-process, and peak RSS while streaming a large response.
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import io
import json
import pstats
import re
import socket
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from procs import AppServer, RedisServer, start_app, stop

#: Commands the harness itself sends while counting; never charged to the middleware.
_HARNESS_COMMANDS = {"info", "config|resetstat", "config", "flushall", "monitor"}


# -- Redis commands per hit / per miss ---------------------------------------------------


def _commandstats(client: Any) -> Counter[str]:
    stats = client.info("commandstats")
    counts: Counter[str] = Counter()
    for key, value in stats.items():
        name = key[len("cmdstat_") :] if key.startswith("cmdstat_") else key
        if name in _HARNESS_COMMANDS or name.startswith("config|"):
            continue
        counts[name] = int(value["calls"])
    return counts


class _Monitor:
    """A raw ``MONITOR`` connection read in a thread: every command Redis runs, in order.

    Each line is ``(client, args)``; ``client`` is ``"lua"`` for a command a script ran.
    """

    _LINE = re.compile(r"^\+(\d+\.\d+) \[(\d+) ([^\]]+)\] (.*)$")
    _ARG = re.compile(r'"((?:[^"\\]|\\.)*)"')

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.sendall(b"MONITOR\r\n")
        self.file = self.sock.makefile("rb")
        first = self.file.readline()
        if not first.startswith(b"+OK"):
            raise RuntimeError(f"MONITOR refused: {first!r}")
        self.sock.settimeout(0.2)
        self.lines: list[tuple[str, list[str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                raw = self.file.readline()
            except TimeoutError:
                continue
            except OSError:
                return
            if not raw:
                return
            match = self._LINE.match(raw.decode("utf-8", "replace").rstrip("\r\n"))
            if match:
                args = self._ARG.findall(match.group(4))
                if args:
                    self.lines.append((match.group(3), args))

    def mark(self) -> int:
        time.sleep(0.1)  # let the lines of what came before arrive
        return len(self.lines)

    def close(self) -> list[tuple[str, list[str]]]:
        time.sleep(0.3)
        self._stop.set()
        self._thread.join(timeout=2)
        with contextlib.suppress(OSError):
            self.sock.close()
        return self.lines


#: Commands only the harness sends while it counts.
_HARNESS_SENT = {"INFO", "CONFIG", "FLUSHALL", "MONITOR"}

_WRITE_COMMANDS = {
    "SET",
    "SETEX",
    "PSETEX",
    "HSET",
    "HMSET",
    "DEL",
    "UNLINK",
    "EXPIRE",
    "PEXPIRE",
    "EXPIREAT",
    "PEXPIREAT",
    "SADD",
    "SREM",
    "INCR",
    "INCRBY",
    "HDEL",
    "ZADD",
    "ZREM",
    "ZREMRANGEBYSCORE",
    "RPUSH",
    "LPUSH",
    "EVAL",
    "EVALSHA",
    "FCALL",
}


def _sent(lines: list[tuple[str, list[str]]]) -> Counter[str]:
    """Count the commands clients sent (not those run inside scripts, not the harness's)."""
    counts: Counter[str] = Counter()
    for client, args in lines:
        name = args[0].upper()
        if client != "lua" and name not in _HARNESS_SENT:
            counts[name] += 1
    return counts


#: What storing an entry writes (the fill lock's SET is not among them).
_ENTRY_WRITES = {"HSET", "ZADD", "SADD", "PEXPIRE", "ZREMRANGEBYSCORE"}


def _summarise_sequence(lines: list[tuple[str, list[str]]]) -> dict[str, object]:
    """Describe one request's commands: in order, with scripts' own commands in brackets
    after the EVALSHA that ran them; and its round trips ("units": a command sent alone, or a
    MULTI/EXEC block), with which of them wrote the entry."""
    shown: list[str] = []
    units: list[dict[str, object]] = []
    in_multi = False
    current: dict[str, object] | None = None
    inner: list[str] = []

    def flush_inner() -> None:
        if inner and shown:
            shown[-1] += "[" + " ".join(inner) + "]"
        inner.clear()

    for client, args in lines:
        name = args[0].upper()
        if client == "lua":
            inner.append(name)
            if current is not None:
                current["runs"].append(name)  # type: ignore[attr-defined]
            continue
        if name in _HARNESS_SENT:
            continue
        flush_inner()
        shown.append(name)
        if name == "MULTI":
            in_multi = True
            current = {"sent": ["MULTI"], "runs": []}
            units.append(current)
        elif name in ("EXEC", "DISCARD"):
            in_multi = False
            assert current is not None
            current["sent"].append(name)  # type: ignore[attr-defined]
        elif in_multi:
            assert current is not None
            current["sent"].append(name)  # type: ignore[attr-defined]
            current["runs"].append(name)  # type: ignore[attr-defined]
        else:
            current = {"sent": [name], "runs": [name]}
            units.append(current)
    flush_inner()
    entry_units = [
        i
        for i, u in enumerate(units)
        if _ENTRY_WRITES & set(u["runs"])  # type: ignore[arg-type]
    ]
    return {
        "sequence": shown,
        "sent": sum(len(u["sent"]) for u in units),  # type: ignore[arg-type,misc]
        "round_trips": len(units),
        "units": [" ".join(u["sent"]) for u in units],  # type: ignore[arg-type]
        "entry_write_units": len(entry_units),
    }


def redis_commands(
    redis_server: RedisServer,
    env: dict[str, str],
    cpus: list[int] | None,
    log_dir: Path,
    hits: int,
    misses: int,
) -> dict[str, object]:
    """Count the Redis commands ``ours`` causes per hit and per miss (sequential requests).

    Two counts: ``INFO commandstats`` deltas (which include the commands Lua scripts run
    inside Redis) and what the middleware's connections sent, read from ``MONITOR``.
    """
    client = redis_server.client()
    client.flushall()
    server = start_app("ours", "commands-ours", env, cpus, log_dir)
    try:
        with httpx.Client(timeout=10.0) as http:
            hot = f"{server.base}/items/42?q=hot"
            first = http.get(hot)  # miss: stores the entry
            warm = http.get(hot)  # hit: also opens the middleware's Redis connection
            status_first = first.headers.get("cache-status", "")
            status_warm = warm.headers.get("cache-status", "")

            # The counter route goes through the middleware too (a lookup, then no-store),
            # so it is read outside the windows that Redis counts.
            calls0 = server.calls(http)
            monitor = _Monitor(redis_server.port)
            try:
                client.config_resetstat()
                start = monitor.mark()
                statuses: Counter[str] = Counter()
                for _ in range(hits):
                    parts = http.get(hot).headers.get("cache-status", "").split(";")
                    statuses[parts[1].strip() if len(parts) > 1 else "none"] += 1
                end = monitor.mark()
                hit_counts = _commandstats(client)
            finally:
                hit_lines = monitor.close()[start:end]
            hit_calls = server.calls(http) - calls0

            calls0 = server.calls(http)
            monitor = _Monitor(redis_server.port)
            try:
                client.config_resetstat()
                start = monitor.mark()
                for i in range(misses):
                    http.get(f"{server.base}/items/42?q=count-miss-{i}")
                end = monitor.mark()
                miss_counts = _commandstats(client)
            finally:
                miss_lines = monitor.close()[start:end]
            miss_calls = server.calls(http) - calls0

            # One miss and one hit of a fresh URL, command by command.
            monitor = _Monitor(redis_server.port)
            try:
                start = monitor.mark()
                http.get(f"{server.base}/items/43?q=monitored")
                mark = monitor.mark()
                http.get(f"{server.base}/items/43?q=monitored")
                end = monitor.mark()
            finally:
                lines = monitor.close()
            miss_seq = _summarise_sequence(lines[start:mark])
            hit_seq = _summarise_sequence(lines[mark:end])
    finally:
        server.stop()
        client.close()

    def per(counts: Counter[str], n: int) -> dict[str, float]:
        return {k.lower(): round(v / n, 3) for k, v in sorted(counts.items())}

    hit_sent, miss_sent = _sent(hit_lines), _sent(miss_lines)
    return {
        "hits": hits,
        "misses": misses,
        "first_cache_status": status_first,
        "warm_cache_status": status_warm,
        "hit_cache_status_counts": dict(statuses),
        "origin_calls_during_hits": hit_calls,
        "origin_calls_during_misses": miss_calls,
        "per_hit": per(hit_counts, hits),
        "per_miss": per(miss_counts, misses),
        "commands_per_hit": round(sum(hit_counts.values()) / hits, 3),
        "commands_per_miss": round(sum(miss_counts.values()) / misses, 3),
        "sent_per_hit": per(hit_sent, hits),
        "sent_per_miss": per(miss_sent, misses),
        "sent_commands_per_hit": round(sum(hit_sent.values()) / hits, 3),
        "sent_commands_per_miss": round(sum(miss_sent.values()) / misses, 3),
        "miss_sequence": miss_seq,
        "hit_sequence": hit_seq,
    }


# -- CPU per hit, in-process -------------------------------------------------------------


def _scope() -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/items/42",
        "raw_path": b"/items/42",
        "query_string": b"q=hot",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"user-agent", b"wrk/4.1.0"),
            (b"accept", b"*/*"),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


async def _cpu_per_hit(redis_url: str, n: int, profile_n: int, misses: int) -> dict[str, object]:
    from apps._common import make_document
    from redis.asyncio import Redis

    from redis_cache_middleware import CacheMiddleware, RedisCache

    body = json.dumps(make_document(42, "hot")).encode()
    app_calls = {"n": 0}

    async def origin(scope: Any, receive: Any, send: Any) -> None:
        app_calls["n"] += 1
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    cache = RedisCache.from_url(redis_url, namespace="micro")
    middleware = CacheMiddleware(origin, cache=cache, default_ttl=60)
    template = _scope()
    sent = {"n": 0, "bytes": 0}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent["n"] += 1
        if message["type"] == "http.response.body":
            sent["bytes"] += len(message.get("body", b""))

    async def one() -> None:
        scope = dict(template)
        scope["headers"] = list(template["headers"])
        await middleware(scope, receive, send)

    await one()  # miss: stores
    for _ in range(500):  # warm: connections, caches, branch history
        await one()
    if app_calls["n"] != 1:
        raise RuntimeError(f"the microbenchmark's hits reached the app ({app_calls['n']} calls)")

    def timed() -> tuple[float, float]:
        return time.process_time(), time.perf_counter()

    c0, w0 = timed()
    for _ in range(n):
        await one()
    c1, w1 = timed()
    hits_ok = app_calls["n"] == 1

    # The same round trip with redis-py alone: what the lookup costs before any of our code.
    raw = Redis.from_url(redis_url)
    key_gen = "micro:gen"
    key = b"micro:missing"
    async for candidate in raw.scan_iter(match="micro:*"):
        if await raw.type(candidate) == b"hash" and await raw.hexists(candidate, "body"):
            key = candidate  # the stored entry: what the lookup's HGETALL reads
            break
    for _ in range(200):
        async with raw.pipeline(transaction=False) as pipe:
            pipe.get(key_gen)
            pipe.hgetall(key)
            await pipe.execute()
    r0, rw0 = timed()
    for _ in range(n):
        async with raw.pipeline(transaction=False) as pipe:
            pipe.get(key_gen)
            pipe.hgetall(key)
            await pipe.execute()
    r1, rw1 = timed()
    s0, sw0 = timed()
    for _ in range(n):
        await raw.hgetall(key)
    s1, sw1 = timed()
    await raw.aclose()

    # A profile of a shorter run, for whoever optimises the hit path.
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(profile_n):
        await one()
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)

    # Misses: a new query each time, the origin answering at once (no 20 ms sleep), so this
    # is the middleware's own cost of a miss: lookup, fill lock, capture, store.
    async def one_miss(i: int) -> None:
        scope = dict(template)
        scope["headers"] = list(template["headers"])
        scope["query_string"] = f"q=cpu-miss-{i}".encode()
        await middleware(scope, receive, send)

    for i in range(50):
        await one_miss(-1 - i)
    calls0 = app_calls["n"]
    m0, mw0 = timed()
    for i in range(misses):
        await one_miss(i)
    m1, mw1 = timed()
    miss_calls = app_calls["n"] - calls0
    await asyncio.sleep(0.2)  # let any background work finish before profiling
    miss_profiler = cProfile.Profile()
    miss_profiler.enable()
    for i in range(misses, misses + min(misses, 1000)):
        await one_miss(i)
    miss_profiler.disable()
    miss_out = io.StringIO()
    pstats.Stats(miss_profiler, stream=miss_out).sort_stats("tottime").print_stats(25)
    await cache.aclose()
    return {
        "hits": n,
        "hits_served_from_cache": hits_ok,
        "cpu_us_per_hit": round((c1 - c0) / n * 1e6, 2),
        "wall_us_per_hit": round((w1 - w0) / n * 1e6, 2),
        "redis_py_pipeline_get_hgetall_cpu_us": round((r1 - r0) / n * 1e6, 2),
        "redis_py_pipeline_get_hgetall_wall_us": round((rw1 - rw0) / n * 1e6, 2),
        "redis_py_single_hgetall_cpu_us": round((s1 - s0) / n * 1e6, 2),
        "redis_py_single_hgetall_wall_us": round((sw1 - sw0) / n * 1e6, 2),
        "misses": misses,
        "miss_origin_calls": miss_calls,
        "cpu_us_per_miss": round((m1 - m0) / misses * 1e6, 2),
        "wall_us_per_miss": round((mw1 - mw0) / misses * 1e6, 2),
        "body_bytes": len(body),
        "profile_hits": profile_n,
        "profile": out.getvalue(),
        "profile_miss": miss_out.getvalue(),
    }


def cpu_per_hit(
    redis_server: RedisServer, cpus: list[int] | None, n: int, profile_n: int, misses: int
) -> dict[str, object]:
    """Microbenchmark: our middleware called directly (no HTTP server): hits, then misses."""
    import os

    client = redis_server.client()
    client.flushall()
    client.close()
    old = os.sched_getaffinity(0)
    if cpus:
        os.sched_setaffinity(0, cpus)
    try:
        try:
            import uvloop

            loop_factory = uvloop.new_event_loop
            loop_name = "uvloop"
        except ImportError:  # pragma: no cover
            loop_factory = None
            loop_name = "asyncio"
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            result = runner.run(_cpu_per_hit(redis_server.url, n, profile_n, misses))
    finally:
        os.sched_setaffinity(0, old)
    result["loop"] = loop_name
    return result


# -- streaming RSS -----------------------------------------------------------------------


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
    scope = _scope()
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


__all__ = ["AppServer", "cpu_per_hit", "redis_commands", "stop", "streaming_rss"]
