"""The load runs: the CPUs each process is pinned to, the results' header, then for each round
and each variant (in order in odd rounds, reversed in even ones), with Redis flushed: start
it, verify it, warm it up, and the hit run and the miss run under wrk, with the upstream
calls per request; then the side measurements on ``ours``, and everything stopped.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import httpx
import procs
from extras import run_extras
from install import install_state
from provenance import git_state, machine_info, package_versions, redis_parser
from variants import HOT_PATH, PEER_NOTES, VARIANTS, start_variant, variant_entries, verify

RESULTS = Path(__file__).resolve().parent / "results"


def measure(args: argparse.Namespace) -> dict[str, object]:
    cpus = sorted(os.sched_getaffinity(0))
    if args.no_pin or len(cpus) < 2:
        server_cpus = load_cpus = None
        pinning = "none"
    else:
        server_cpus, load_cpus = [cpus[-1]], cpus[:-1]
        pinning = f"uvicorn on CPU {server_cpus}, wrk and redis-server on CPUs {load_cpus}"

    results: dict[str, object] = {
        "schema": 1,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": "python bench/run.py " + " ".join(sys.argv[1:]),
        "settings": {
            "rounds": args.rounds,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "connections": args.connections,
            "threads": args.threads,
            "hot_url": HOT_PATH,
            "miss_url": "/items/42?q=<run>-<thread>-<counter>",
            "upstream_delay_ms": 20,
            "ttl_s": 60,
            "pinning": pinning,
            "order": "round 1 in the listed order, round 2 reversed, and so on",
        },
        "machine": machine_info(),
        "packages": package_versions(),
        "git": git_state(),
        "redis_py_parser": redis_parser(),
        "notes": [PEER_NOTES[p] for p in PEER_NOTES if p in args.variant_names],
        "variants": variant_entries(args.variant_names, install_state()),
    }
    variants: dict[str, dict[str, object]] = results["variants"]  # type: ignore[assignment]

    redis_server = procs.start_redis(load_cpus)
    results["redis_server"] = redis_server.version
    results["wrk"] = procs.wrk_version()
    env = {"BENCH_REDIS_URL": redis_server.url, "BENCH_TTL": "60"}
    log_dir = RESULTS / "logs"
    if log_dir.exists():
        shutil.rmtree(log_dir)
    rclient = redis_server.client()
    runs = sum(1 for v in variants.values() if v["status"] == "ran")
    per_variant = 2 + args.warmup + 2 * args.duration
    print(
        f"redis-server on 127.0.0.1:{redis_server.port}; {runs} variants x {args.rounds} "
        f"rounds x (hit {args.duration} s + miss {args.duration} s); about "
        f"{runs * args.rounds * per_variant / 60:.1f} min of load, then the side measurements."
        f"\npinning: {pinning}",
        flush=True,
    )
    server_info: dict[str, object] = {}
    started = time.monotonic()
    try:
        for rnd in range(1, args.rounds + 1):
            order = list(args.variant_names)
            if rnd % 2 == 0:
                order.reverse()
            print(f"\nround {rnd}/{args.rounds}: {' '.join(order)}", flush=True)
            for name in order:
                entry = variants[name]
                if entry["status"] != "ran":
                    continue
                rclient.flushall()
                info = load_variant(args, name, entry, rnd, env, server_cpus, load_cpus, log_dir)
                server_info = server_info or info or {}
        if variants["constant"]["status"] != "ran":
            raise SystemExit("the constant floor did not run: no ratios can be computed")
        print(f"\nload runs took {(time.monotonic() - started) / 60:.1f} min", flush=True)

        if not args.skip_extras and variants.get("ours", {}).get("status") == "ran":
            run_extras(args, results, redis_server, env, server_cpus, log_dir)
    finally:
        rclient.close()
        redis_server.stop()
        procs.stop_all()
    results["server"] = {**server_info, "uvicorn_flags": "--loop uvloop --http httptools"}
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    return results


def load_variant(
    args: argparse.Namespace,
    name: str,
    entry: dict[str, object],
    rnd: int,
    env: dict[str, str],
    server_cpus: list[int] | None,
    load_cpus: list[int] | None,
    log_dir: Path,
) -> dict[str, object] | None:
    """One variant in one round: start it, verify it, warm it up, then the hit run and the miss
    run, appended to ``entry["rounds"]``; a variant that does not start is skipped, one that
    fails verification aborted. Returns the server's loop and HTTP parser (None: not started).
    """
    cached = VARIANTS[name][1]
    try:
        server = start_variant(name, f"{name}-r{rnd}", env, server_cpus, log_dir)
    except RuntimeError as exc:
        entry["status"] = "skipped"
        entry["reason"] = f"server did not start: {exc}"
        print(f"  {name:<15} SKIPPED: {exc}", flush=True)
        return None
    try:
        server_info: dict[str, object] = {
            "loop": server.info.get("loop"),
            "http": server.info.get("http"),
        }
        try:
            check = verify(server, cached, f"r{rnd}", name in ("constant", "bare"))
        except (RuntimeError, httpx.HTTPError) as exc:
            entry["status"] = "aborted"
            entry["reason"] = f"verification failed in round {rnd}: {exc}"
            print(f"  {name:<15} ABORTED: {exc}", flush=True)
            return server_info
        round_data: dict[str, object] = {"round": rnd, "verify": check}
        if args.warmup:
            procs.run_wrk(
                server.base,
                "hit",
                duration=args.warmup,
                connections=args.connections,
                threads=args.threads,
                cpus=load_cpus,
                hit_path=HOT_PATH,
            )
        with httpx.Client(timeout=10.0) as http:
            for mode in ("hit", "miss"):
                calls0 = server.calls(http)
                result = procs.run_wrk(
                    server.base,
                    mode,
                    duration=args.duration,
                    connections=args.connections,
                    threads=args.threads,
                    cpus=load_cpus,
                    run_tag=f"r{rnd}{mode}",
                    hit_path=HOT_PATH,
                )
                calls = server.calls(http) - calls0
                data = result.as_dict()
                data["origin_calls_per_request"] = round(calls / max(1, result.requests), 4)
                round_data[mode] = data
        entry["rounds"].append(round_data)  # type: ignore[attr-defined]
        h, m = round_data["hit"], round_data["miss"]
        errs = sum(h["errors"].values()) + sum(m["errors"].values())  # type: ignore[index]
        print(
            f"  {name:<15} hit {h['rps']:>8,.0f} req/s p50 {h['p50_ms']:6.2f} ms "  # type: ignore[index]
            f"p99 {h['p99_ms']:6.2f} ms origin/req {h['origin_calls_per_request']:.2f}"  # type: ignore[index]
            f" | miss {m['rps']:>7,.0f} req/s p50 {m['p50_ms']:6.2f} ms "  # type: ignore[index]
            f"p99 {m['p99_ms']:6.2f} ms origin/req {m['origin_calls_per_request']:.2f}"  # type: ignore[index]
            + (f" | {errs} wrk errors" if errs else ""),
            flush=True,
        )
        return server_info
    finally:
        server.stop()
