"""Where a miss's time goes, over HTTP: ``ours`` with timers on each phase, cpu-bound.

uvicorn (one worker, uvloop, httptools) pinned to CPU 1 serves ``apps.ours_phases`` (the
``ours`` variant with timers); wrk (32 connections, miss runs: a new query each request) and
a redis-server of its own share CPU 0, as in ``run.py``'s cpu-bound mode. Prints p50, p90
and p99 of, per miss:

* ``request``: from the middleware's first line to the response's last byte handed over;
* ``before_app`` and ``app``: the part before the app's router starts, and the app's own;
* ``lookup``: the lookup (with the fill lock) as the middleware awaits it;
* on the lane, per command: ``queued_before_write`` (from the call to the socket write),
  ``write_to_reply`` (from that write to the reply read: Redis, and this event loop coming
  round to read it) and ``reply_to_caller`` (from the reply to the caller running again).

    python bench/miss_phases.py --duration 5

Run it on a quiet machine; the timers cost CPU of their own, so compare the phases, not the
req/s, with ``run.py``'s figures.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import httpx
from procs import WRK_DIR, run_wrk, start_app, start_redis, stop_all


def percentiles(values: list[float]) -> str:
    if not values:
        return "-"
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000

    return f"n={len(ordered):>6}  p50 {at(0.5):6.2f}  p90 {at(0.9):6.2f}  p99 {at(0.99):6.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of miss load")
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    assert (WRK_DIR / "miss.lua").exists()
    cpus = len(os.sched_getaffinity(0))
    app_cpus, load_cpus = ([1], [0]) if cpus >= 2 else (None, None)
    redis_server = start_redis(load_cpus)
    out = Path(tempfile.mkdtemp(prefix="rcm-phases-")) / "phases.json"
    try:
        app = start_app(
            "ours_phases",
            "ours_phases",
            {"BENCH_REDIS_URL": redis_server.url, "PHASES_OUT": str(out)},
            app_cpus,
            out.parent,
        )
        common = {"connections": args.connections, "threads": 2, "cpus": load_cpus}
        run_wrk(app.base, "miss", duration=1, run_tag="warm", **common)  # type: ignore[arg-type]
        httpx.post(f"{app.base}/__phases/reset", timeout=5).raise_for_status()
        result = run_wrk(app.base, "miss", duration=args.duration, run_tag="phases", **common)  # type: ignore[arg-type]
        app.stop()
        phases: dict[str, list[float]] = json.loads(out.read_text())
    finally:
        stop_all()
        redis_server.stop()
    print(f"miss runs, {args.connections} connections, {args.duration:g} s: {result.as_dict()}")
    for name, values in phases.items():
        print(f"{name:>20}  {percentiles(values)}")


if __name__ == "__main__":
    main()
