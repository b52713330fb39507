"""The near cache against Redis hits where it differs: many hot URLs, and one client at a time.

``python bench/near_hot.py`` (with ``bench/.venv``, which ``bench/run.py`` makes) runs, for
``ours`` and ``ours_near`` in turn, each in the cpu-bound layout of ``run.py`` (uvicorn on
one CPU, wrk and redis-server on the other):

- a **hot-set run**: wrk, 32 connections, each request the next of 256 hot URLs (all
  stored, and held by the near cache, beforehand), so that concurrent lookups are for
  different URLs and none is shared (``wrk/hot_set.lua``);
- a **one-client run**: the same with one connection: each request's latency is the
  worker's work plus, without the near cache, a Redis round trip.

It prints req/s, latency percentiles, the worker's CPU per request and redis-server's CPU
per request (from ``/proc``), medians over ``--rounds`` interleaved rounds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time
from pathlib import Path

import httpx
from procs import BENCH, _affinity, cpu_seconds, start_app, start_redis, stop

HOT = 256
VARIANTS = ("ours", "ours_near")


def run(
    base: str, connections: int, seconds: int, app_pid: int, redis_pid: int
) -> dict[str, float]:
    command = ["wrk", "-t", str(min(2, connections)), "-c", str(connections), "-d", f"{seconds}s"]
    command += ["-s", str(BENCH / "wrk" / "hot_set.lua"), base + "/", "--", str(HOT)]
    app0, redis0 = cpu_seconds(app_pid), cpu_seconds(redis_pid)
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + 60, preexec_fn=_affinity([0])
    )
    app_cpu, redis_cpu = cpu_seconds(app_pid) - app0, cpu_seconds(redis_pid) - redis0
    line = next(x for x in result.stdout.splitlines() if x.startswith("BENCHJSON "))
    data = json.loads(line[len("BENCHJSON ") :])
    requests = data["requests"]
    return {
        "rps": requests / (data["duration_us"] / 1e6),
        "p50_ms": data["latency_us"]["p50"] / 1000,
        "p99_ms": data["latency_us"]["p99"] / 1000,
        "app_cpu_us": app_cpu * 1e6 / requests,
        "redis_cpu_us": redis_cpu * 1e6 / requests,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=8)
    args = parser.parse_args()
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    log_dir = BENCH / "results" / "near_hot_logs"
    for round_no in range(args.rounds):
        order = VARIANTS if round_no % 2 == 0 else VARIANTS[::-1]
        for variant in order:
            redis = start_redis([0])
            env = {"BENCH_REDIS_URL": redis.url}
            app = start_app(variant, f"near-hot-{variant}", env, [1], Path(log_dir))
            try:
                with httpx.Client(timeout=5) as client:
                    for _ in range(3):  # stored, read from Redis (kept), then a near hit
                        for n in range(HOT):
                            client.get(f"{app.base}/items/{n}?q=hot").raise_for_status()
                time.sleep(1)
                for kind, connections in (("hot-set", 32), ("one-client", 1)):
                    figures = run(
                        app.base, connections, args.duration, app.process.pid, redis.process.pid
                    )
                    results.setdefault((variant, kind), []).append(figures)
                    print(
                        f"round {round_no + 1} {variant:10} {kind:10} "
                        + " ".join(f"{k} {v:,.1f}" for k, v in figures.items())
                    )
            finally:
                stop(app.process)
                redis.stop()
    print("\nmedians over rounds:")
    for (variant, kind), runs in sorted(results.items(), key=lambda item: (item[0][1], item[0][0])):
        medians = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(f"{kind:10} {variant:10} " + "  ".join(f"{k} {v:,.2f}" for k, v in medians.items()))


if __name__ == "__main__":
    main()
