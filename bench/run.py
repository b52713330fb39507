#!/usr/bin/env python3
"""The benchmark of redis-cache-middleware against no cache, its peers and two floors.

    python bench/run.py            # 3 rounds x 10 s per run: about 9 minutes
    python bench/run.py --quick    # 2 rounds x 2 s: a smoke run of about 2 minutes
    python bench/run.py --mode both    # each round in the cpu-bound and the unpinned mode

It makes (once) and then uses its own venv in ``bench/.venv``, starts its own redis-server and
one uvicorn per variant on free loopback ports, drives them with wrk, and writes
``bench/results/latest.json`` and ``latest.png``. See bench/README.md.

This file runs with any Python 3.10+ for the bootstrap (standard library only), then
re-executes itself with the venv's Python. It owns the command line and the run's shape:
options, bootstrap, then the load runs (``rounds.py``), the targets (``targets.py``), the
report (``report.py``) and the exit status.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from install import ensure_venv, in_venv, venv_python
from variants import VARIANTS

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"


# -- bootstrap (standard library only) ---------------------------------------------------


def bootstrap(argv: list[str]) -> None:
    parse_args(argv)  # --help and bad options answer before any install
    if shutil.which("wrk") is None:
        print(
            "wrk is not installed; the benchmark drives its servers with it. Install it with:\n"
            "  apt-get install -y wrk",
            file=sys.stderr,
        )
        sys.exit(2)
    if shutil.which("redis-server") is None:
        print(
            "redis-server is not installed. Install it with:\n  apt-get install -y redis-server",
            file=sys.stderr,
        )
        sys.exit(2)
    if sys.platform != "linux":
        print("the benchmark reads /proc and sets CPU affinity: Linux only", file=sys.stderr)
        sys.exit(2)
    ensure_venv()
    python = str(venv_python())
    os.execv(python, [python, str(Path(__file__).resolve()), *argv])


# -- options -----------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python bench/run.py",
        description="HTTP throughput, latency, CPU per request, Redis commands and memory of "
        "redis-cache-middleware against no cache, fastapi-cache2, cashews, litestar and two "
        "floors.",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 2 rounds x 2 s per run and smaller side measurements",
    )
    p.add_argument("--duration", type=int, help="seconds per wrk run (default 10; quick 2)")
    p.add_argument("--rounds", type=int, help="rounds over all variants (default 3; quick 2)")
    p.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    p.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    p.add_argument("--warmup", type=int, help="seconds of hit load before measuring (default 1)")
    p.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help="comma-separated subset (constant is always run: it is the reference)",
    )
    p.add_argument(
        "--mode",
        choices=("cpu-bound", "unpinned", "both"),
        help="cpu-bound (default): uvicorn pinned to one CPU, wrk and redis-server to the "
        "others; unpinned: no pinning; both: every variant in both modes in each round",
    )
    p.add_argument(
        "--no-pin",
        action="store_true",
        help="the same as --mode unpinned",
    )
    p.add_argument(
        "--skip-extras",
        action="store_true",
        help="only the wrk runs: no command counts, CPU microbenchmark or RSS",
    )
    p.add_argument("--skip-rss", action="store_true", help="no streaming memory measurement")
    p.add_argument(
        "--tag",
        default="latest",
        help="name of the result files: bench/results/TAG.json and TAG.png (default latest)",
    )
    args = p.parse_args(argv)
    args.duration = args.duration or (2 if args.quick else 10)
    args.rounds = args.rounds or (2 if args.quick else 3)
    args.warmup = args.warmup if args.warmup is not None else 1
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    if "constant" not in names:
        names.insert(0, "constant")
    args.variant_names = [v for v in VARIANTS if v in names]
    if args.no_pin and args.mode not in (None, "unpinned"):
        p.error(f"--no-pin is --mode unpinned: it contradicts --mode {args.mode}")
    mode = "unpinned" if args.no_pin else args.mode or "cpu-bound"
    args.modes = ["cpu-bound", "unpinned"] if mode == "both" else [mode]
    if args.duration < 1 or args.rounds < 1 or args.connections < 1 or args.threads < 1:
        p.error("--duration, --rounds, --connections and --threads must be >= 1")
    if args.threads > args.connections:
        p.error("--threads must not exceed --connections")
    args.micro_hits = 2000 if args.quick else 20000
    args.micro_misses = 300 if args.quick else 2000
    args.count_hits = 200 if args.quick else 1000
    args.count_misses = 50 if args.quick else 300
    return args


# -- the run (inside the venv) -----------------------------------------------------------


def main_in_venv(argv: list[str]) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(BENCH))
    import report
    import rounds
    from targets import targets

    if shutil.which("wrk") is None:
        print("wrk is not installed. Install it with:\n  apt-get install -y wrk", file=sys.stderr)
        return 2
    RESULTS.mkdir(parents=True, exist_ok=True)
    results = rounds.measure(args)
    report.summarise(results)
    results["targets"] = targets(results)
    report.print_results(results)
    report.write_json(results, RESULTS / f"{args.tag}.json")
    report.chart(results, RESULTS / f"{args.tag}.png")
    print(
        f"\nwrote {(RESULTS / f'{args.tag}.json').relative_to(ROOT)} and "
        f"{(RESULTS / f'{args.tag}.png').relative_to(ROOT)} ({results['elapsed_s'] / 60:.1f} min)"
    )
    # A missed target is a failed run, so a script (or CI) can rely on the exit status.
    return 1 if any(t["passed"] is False for t in results["targets"]) else 0


if __name__ == "__main__":
    import signal

    # A SIGTERM unwinds like Ctrl-C, so that the servers we started are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if in_venv():
        try:
            sys.exit(main_in_venv(sys.argv[1:]))
        except KeyboardInterrupt:
            sys.exit(130)
    else:
        bootstrap(sys.argv[1:])
