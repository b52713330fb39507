"""The side measurements on ``ours``, after the load runs: which of them run (Redis commands
per hit and per miss, CPU per hit in-process, streaming memory), in what order and on which
sizes, where their profiles go, and a failure of one recorded under its key (with its
traceback in ``results/<key>.error.txt``) rather than ending the run.
"""

from __future__ import annotations

import traceback
from pathlib import Path

from cpu_hit import cpu_per_hit
from redis_counts import redis_commands
from stream_rss import streaming_rss

RESULTS = Path(__file__).resolve().parent / "results"


def run_extras(args, results, redis_server, env, server_cpus, log_dir) -> None:  # type: ignore[no-untyped-def]
    """The side measurements on ``ours``; one that fails is recorded, not fatal."""

    def attempt(key: str, title: str, fn) -> None:  # type: ignore[no-untyped-def]
        print(title, flush=True)
        try:
            results[key] = fn()
        except Exception as exc:
            results[key] = {"error": f"{type(exc).__name__}: {exc}"}
            print(f"  FAILED: {type(exc).__name__}: {exc}", flush=True)
            (RESULTS / f"{key}.error.txt").write_text(traceback.format_exc())

    attempt(
        "redis_commands",
        "\ncounting Redis commands per hit and per miss (ours) ...",
        lambda: redis_commands(
            redis_server, env, server_cpus, log_dir, args.count_hits, args.count_misses
        ),
    )

    def cpu() -> dict[str, object]:
        data = cpu_per_hit(
            redis_server,
            server_cpus,
            args.micro_hits,
            min(5000, args.micro_hits),
            args.micro_misses,
        )
        (RESULTS / "profile_hit.txt").write_text(str(data.pop("profile")))
        (RESULTS / "profile_miss.txt").write_text(str(data.pop("profile_miss")))
        return data

    attempt("cpu_per_hit", "CPU per hit, in-process (ours) ...", cpu)
    if args.skip_rss:
        return
    attempt(
        "streaming_rss",
        "peak RSS while streaming 200 MiB (ours, and without middleware) ...",
        lambda: streaming_rss(
            redis_server, env, server_cpus, log_dir, repeats=3 if args.quick else 5
        ),
    )
