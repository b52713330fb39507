"""Redis commands per hit and per miss of ``ours``, over HTTP with sequential requests: the
``INFO commandstats`` deltas (which count what Lua scripts run inside Redis), what the
middleware's connections sent (read from ``MONITOR``), and one miss and one hit command by
command, with the miss's round trips and which of them write the entry.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from procs import RedisServer, start_app

#: Commands the harness itself sends while counting; never charged to the middleware.
_HARNESS_COMMANDS = {"info", "config|resetstat", "config", "flushall", "monitor"}


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
