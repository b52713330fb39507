#!/usr/bin/env python3
"""What each performance lever is worth: the benchmark with one lever taken out at a time.

    python bench/levers.py                 # every ablation below, 2 rounds x 5 s each
    python bench/levers.py --only memo     # a subset (names below), plus "all levers"

For each ablation it copies the library (``src/``) into a scratch directory, undoes one
lever there with a small source edit (each edit must match exactly once, or the run stops),
and runs ``bench/run.py --variants constant,nocache,ours --skip-rss`` against that copy
(through ``PYTHONPATH``, which wins over the editable install). A run of the unchanged library
comes first, so every row is read against the same machine and the same hour. It prints a
table and writes ``bench/results/levers.json``. ``--baseline REF`` also measures the library
at a git commit (default: none), e.g. the commit before any of this work.

Each row's figures: hit and miss throughput as ratios (``ours`` over ``constant`` for hits,
over ``nocache`` for misses, same round), Redis commands sent per hit and per miss, and the
middleware's CPU per hit and per miss in-process (no HTTP server).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"

#: name -> (what the lever is, [(file under src/redis_cache_middleware, old, new), ...])
ABLATIONS: dict[str, tuple[str, list[tuple[str, str, str]]]] = {
    "generation": (
        "read the namespace generation once a second, not with every lookup",
        [
            (
                "cache.py",
                "generation_check_interval: float = 1.0,\n        admin_timeout: float | None = "
                "5.0,\n        multiplex: bool = True,\n        near_cache_bytes: int = 0,\n"
                "        wait_in_place: float = WAIT_IN_PLACE,\n        socket_timeout",
                "generation_check_interval: float = 0.0,\n        admin_timeout: float | None = "
                "5.0,\n        multiplex: bool = True,\n        near_cache_bytes: int = 0,\n"
                "        wait_in_place: float = WAIT_IN_PLACE,\n        socket_timeout",
            ),
        ],
    ),
    "store_script": (
        "a miss stores entry, indexes and lock release with one script (without: the indexes "
        "follow in a pipeline of ~10 commands, as on a cluster)",
        [("_redis/store.py", "cluster = state.cluster\n", "cluster = True\n")],
    ),
    "lookup_lock": (
        "a likely miss's lookup also takes the fill lock, in the same round trip",
        [
            (
                "middleware.py",
                "if self.config.coalesce\n" + " " * 12 + "and not request.directives",
                "if False\n" + " " * 12 + "and not request.directives",
            ),
        ],
    ),
    "hash_memo": (
        "a hot URL's key hash is remembered, not recomputed (query parsing, msgpack, blake2b)",
        [("_redis/url_keys.py", "uhash = self._hash_memo.get(memo_key)", "uhash = None")],
    ),
    "store_while_sending": (
        "a response sent whole goes out as its store is sent, not after Redis's reply (without: "
        "every store completes before the response's headers leave)",
        [
            (
                "forward.py",
                "if self.complete and self.ctx.stores_taken:",
                "if False:",
            )
        ],
    ),
    "socket_timeout": (
        "no redis-py socket timeout (a task per command); the middleware bounds each call",
        [
            (
                "cache.py",
                "socket_timeout: float | None = None,",
                "socket_timeout: float | None = 0.5,",
            )
        ],
    ),
    "lane": (
        "the request path's commands pipelined on one connection of their own (without: each "
        "through redis-py's client and pool)",
        [
            (
                "_redis/state.py",
                "if multiplex and not self.cluster and suits(client)",
                "if False",
            )
        ],
    ),
    "wait_in_place": (
        "a likely miss's lookup waits for its reply in place while the event loop has time to "
        "spare (without: awaited, read when the loop comes round)",
        [("_redis/connect.py", "WAIT_IN_PLACE = 0.0003\n", "WAIT_IN_PLACE = 0.0\n")],
    ),
    "freeze_gc": (
        "the app's startup heap frozen once it has started (without: full collections walk it)",
        [("middleware.py", "freeze_gc: bool = True,", "freeze_gc: bool = False,")],
    ),
}


def ablated_copy(edits: list[tuple[str, str, str]], into: Path) -> Path:
    """Copy ``src/`` to ``into`` and apply ``edits``; return the directory for PYTHONPATH."""
    shutil.copytree(ROOT / "src", into / "src")
    package = into / "src" / "redis_cache_middleware"
    for name, old, new in edits:
        path = package / name
        text = path.read_text()
        found = text.count(old)
        if found != 1:
            raise SystemExit(f"ablation edit of {name} matches {found} times: {old!r}")
        path.write_text(text.replace(old, new))
    return into / "src"


def checkout(ref: str, into: Path) -> Path:
    """The library's ``src/`` at a git commit."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref, "src"], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into / "src"


def measure(label: str, src: Path, args: argparse.Namespace) -> dict[str, object]:
    tag = f"lever-{label}"
    command = [
        sys.executable,
        str(BENCH / "run.py"),
        "--variants",
        "constant,nocache,ours",
        "--skip-rss",
        "--rounds",
        str(args.rounds),
        "--duration",
        str(args.duration),
        "--tag",
        tag,
    ]
    env = {**os.environ, "PYTHONPATH": str(src)}
    print(f"\n=== {label} ===", flush=True)
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
    if done.returncode not in (0, 1):  # 1: a target missed, which is a figure, not a failure
        print(done.stdout[-3000:], done.stderr[-3000:], sep="\n")
        raise SystemExit(f"the benchmark failed for {label}")
    results = json.loads((RESULTS / f"{tag}.json").read_text())
    # The benchmark's default mode is cpu-bound; its targets name the mode they come from.
    targets = [t for t in results.get("targets", []) if t.get("mode") == "cpu-bound"]
    hit = next(t for t in targets if t["name"].startswith("hit throughput"))
    miss = next(t for t in targets if t["name"].startswith("miss throughput"))
    rc = results.get("redis_commands", {})
    cpu = results.get("cpu_per_hit", {})
    row = {
        "label": label,
        "hit_x_constant": hit["value"],
        "miss_x_nocache": miss["value"],
        "commands_per_hit": rc.get("sent_commands_per_hit"),
        "commands_per_miss": rc.get("sent_commands_per_miss"),
        "round_trips_per_miss": rc.get("miss_sequence", {}).get("round_trips"),
        "cpu_us_per_hit": cpu.get("cpu_us_per_hit"),
        "cpu_us_per_miss": cpu.get("cpu_us_per_miss"),
    }
    print(json.dumps(row), flush=True)
    return row


def main() -> int:
    p = argparse.ArgumentParser(prog="python bench/levers.py", description=__doc__)
    p.add_argument("--only", default=",".join(ABLATIONS), help="comma-separated ablations")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--duration", type=int, default=5)
    p.add_argument("--baseline", default=None, help="also measure src/ at this git commit")
    args = p.parse_args()
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in ABLATIONS]
    if unknown:
        p.error(f"unknown ablations {unknown}; choose from {', '.join(ABLATIONS)}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="rcm-levers-") as scratch:
        base = Path(scratch)
        (base / "all").mkdir()
        rows.append(measure("all levers", ablated_copy([], base / "all"), args))
        for name in names:
            (base / name).mkdir()
            description, edits = ABLATIONS[name]
            row = measure(f"without {name}", ablated_copy(edits, base / name), args)
            row["lever"] = description
            rows.append(row)
        if args.baseline:
            (base / "baseline").mkdir()
            rows.append(
                measure(f"at {args.baseline}", checkout(args.baseline, base / "baseline"), args)
            )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "levers.json").write_text(json.dumps(rows, indent=2))
    print()
    header = (
        "| run | hit x constant | miss x nocache | cmds/hit | cmds/miss | round trips/miss "
        "| CPU us/hit | CPU us/miss |"
    )
    print(header)
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['label']} | {r['hit_x_constant']} | {r['miss_x_nocache']} | "
            f"{r['commands_per_hit']} | {r['commands_per_miss']} | {r['round_trips_per_miss']} | "
            f"{r['cpu_us_per_hit']} | {r['cpu_us_per_miss']} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
