"""The load runs: the CPUs each process may use in each mode, the results' header, then for
each round, each mode and each variant (variants and modes in order in odd rounds, reversed in
even ones), with Redis flushed: start it, verify it, warm it up, and the hit run and the miss
run under wrk, with the upstream calls and the server's CPU per request; then the side
measurements on ``ours``, and everything stopped.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import procs
from extras import run_extras
from install import install_state
from provenance import git_state, machine_info, package_versions, redis_parser
from variants import HOT_PATH, PEER_NOTES, VARIANTS, start_variant, variant_entries, verify

RESULTS = Path(__file__).resolve().parent / "results"

#: The load modes, in the order ``--mode both`` runs them (odd rounds; reversed in even ones).
MODES = ("cpu-bound", "unpinned")


@dataclass(frozen=True)
class Placement:
    """Where one mode runs its processes: ``None`` is every CPU the harness may use."""

    server_cpus: list[int] | None
    load_cpus: list[int] | None
    description: str


def placements(modes: list[str]) -> dict[str, Placement]:
    """Each mode's CPUs. cpu-bound: uvicorn alone on the last CPU, wrk and redis-server on the
    others, so the server under test is limited by one core; unpinned: the scheduler places
    everything. With fewer than 2 CPUs, cpu-bound cannot pin and says so."""
    cpus = sorted(os.sched_getaffinity(0))
    out: dict[str, Placement] = {}
    for mode in modes:
        if mode == "cpu-bound" and len(cpus) >= 2:
            server, load = [cpus[-1]], cpus[:-1]
            out[mode] = Placement(
                server, load, f"uvicorn on CPU {server}, wrk and redis-server on CPUs {load}"
            )
        elif mode == "cpu-bound":
            out[mode] = Placement(None, None, f"not pinned: only {len(cpus)} CPU")
        else:
            out[mode] = Placement(None, None, f"not pinned: every process on CPUs {cpus}")
    return out


def measure(args: argparse.Namespace) -> dict[str, object]:
    modes: list[str] = args.modes
    place = placements(modes)
    all_cpus = sorted(os.sched_getaffinity(0))

    results: dict[str, object] = {
        "schema": 2,
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
            "modes": {mode: place[mode].description for mode in modes},
            "order": "round 1: each mode in the listed order, each variant in the listed "
            "order; round 2 both reversed, and so on",
            "cpu_per_request": "utime+stime (and reaped children's) of the uvicorn process and "
            "its descendants from /proc/<pid>/stat, read just before wrk starts and just "
            "after it exits, over the requests wrk completed",
        },
        "machine": machine_info(),
        "packages": package_versions(),
        "git": git_state(),
        "redis_py_parser": redis_parser(),
        "notes": [PEER_NOTES[p] for p in PEER_NOTES if p in args.variant_names],
        "variants": variant_entries(args.variant_names, install_state()),
    }
    variants: dict[str, dict[str, object]] = results["variants"]  # type: ignore[assignment]

    redis_server = procs.start_redis(place[modes[0]].load_cpus)
    results["redis_server"] = redis_server.version
    results["wrk"] = procs.wrk_version()
    env = {"BENCH_REDIS_URL": redis_server.url, "BENCH_TTL": "60"}
    log_dir = RESULTS / "logs"
    if log_dir.exists():
        shutil.rmtree(log_dir)
    rclient = redis_server.client()
    runs = sum(1 for v in variants.values() if v["status"] == "ran") * len(modes)
    per_variant = 2 + args.warmup + 2 * args.duration
    print(
        f"redis-server on 127.0.0.1:{redis_server.port}; {runs} variant-modes x {args.rounds} "
        f"rounds x (hit {args.duration} s + miss {args.duration} s); about "
        f"{runs * args.rounds * per_variant / 60:.1f} min of load, then the side measurements."
        + "".join(f"\n{mode}: {place[mode].description}" for mode in modes),
        flush=True,
    )
    server_info: dict[str, object] = {}
    started = time.monotonic()
    try:
        for rnd in range(1, args.rounds + 1):
            order, mode_order = list(args.variant_names), list(modes)
            if rnd % 2 == 0:
                order.reverse()
                mode_order.reverse()
            for mode in mode_order:
                where = place[mode]
                procs.pin_threads(redis_server.process.pid, where.load_cpus or all_cpus)
                print(f"\nround {rnd}/{args.rounds}, {mode}: {' '.join(order)}", flush=True)
                for name in order:
                    entry = variants[name]
                    if entry["status"] != "ran":
                        continue
                    rclient.flushall()
                    info = load_variant(args, name, entry, rnd, mode, where, env, log_dir)
                    server_info = server_info or info or {}
        if variants["constant"]["status"] != "ran":
            raise SystemExit("the constant floor did not run: no ratios can be computed")
        print(f"\nload runs took {(time.monotonic() - started) / 60:.1f} min", flush=True)

        if not args.skip_extras and variants.get("ours", {}).get("status") == "ran":
            # The side measurements pin as the cpu-bound mode does, when it ran.
            extras = place.get("cpu-bound", Placement(None, None, "not pinned"))
            procs.pin_threads(redis_server.process.pid, extras.load_cpus or all_cpus)
            results["extras_pinning"] = extras.description
            run_extras(args, results, redis_server, env, extras.server_cpus, log_dir)
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
    mode: str,
    where: Placement,
    env: dict[str, str],
    log_dir: Path,
) -> dict[str, object] | None:
    """One variant in one round and mode: start it, verify it, warm it up, then the hit run and
    the miss run, appended to ``entry["rounds"]`` with the mode; a variant that does not start
    is skipped, one that fails verification aborted. Returns the server's loop and HTTP parser
    (None: not started).
    """
    cached = VARIANTS[name][1]
    load_cpus = where.load_cpus
    tag = f"r{rnd}{'u' if mode == 'unpinned' else ''}"
    try:
        server = start_variant(name, f"{name}-{tag}", env, where.server_cpus, log_dir)
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
            check = verify(server, cached, tag, name in ("constant", "bare"))
        except (RuntimeError, httpx.HTTPError) as exc:
            entry["status"] = "aborted"
            entry["reason"] = f"verification failed in round {rnd} ({mode}): {exc}"
            print(f"  {name:<15} ABORTED: {exc}", flush=True)
            return server_info
        round_data: dict[str, object] = {"round": rnd, "mode": mode, "verify": check}
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
            for kind in ("hit", "miss"):
                calls0 = server.calls(http)
                result = procs.run_wrk(
                    server.base,
                    kind,
                    duration=args.duration,
                    connections=args.connections,
                    threads=args.threads,
                    cpus=load_cpus,
                    run_tag=f"{tag}{kind}",
                    hit_path=HOT_PATH,
                    server_pid=server.process.pid,
                )
                calls = server.calls(http) - calls0
                data = result.as_dict()
                data["origin_calls_per_request"] = round(calls / max(1, result.requests), 4)
                round_data[kind] = data
        entry["rounds"].append(round_data)  # type: ignore[attr-defined]
        h, m = round_data["hit"], round_data["miss"]
        errs = sum(h["errors"].values()) + sum(m["errors"].values())  # type: ignore[index]
        print(
            f"  {name:<15} hit {_progress(h)} | miss {_progress(m)}"  # type: ignore[arg-type]
            + (f" | {errs} wrk errors" if errs else ""),
            flush=True,
        )
        return server_info
    finally:
        server.stop()


def _progress(run: dict[str, object]) -> str:
    """One wrk run in the progress line: req/s, p50, p99, CPU per request, origin calls."""
    cpu, util = run.get("cpu_us_per_request"), run.get("cpu_utilisation")
    cpu_text = (
        f"CPU {cpu:5.0f} us/req at {util:4.0%}"
        if isinstance(cpu, float) and isinstance(util, float)
        else "CPU -"
    )
    return (
        f"{run['rps']:>8,.0f} req/s p50 {run['p50_ms']:6.2f} p99 {run['p99_ms']:6.2f} ms "
        f"{cpu_text} origin/req {run['origin_calls_per_request']:.2f}"
    )
