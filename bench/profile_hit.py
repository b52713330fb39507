"""Where a hit's time goes: py-spy on the uvicorn worker of ``apps/ours.py`` under hit load.

    bench/.venv/bin/python bench/profile_hit.py            # the library as it is
    bench/.venv/bin/python bench/profile_hit.py a4b6f7c    # the library at a git commit

Run ``python bench/run.py`` once first: it makes ``bench/.venv``; ``pip install py-spy`` into
it. This starts its own redis-server and one uvicorn worker (pinned like the benchmark), puts
wrk's hit load on one URL for 12 s, records the worker with ``py-spy record`` for 8 s at
250 Hz (``--nonblocking``), and prints what share of the worker's samples each part of the
stack holds, inclusive, then the top functions by their own samples. The raw stacks go to
``bench/results/profile-<ref>.txt``.
"""

from __future__ import annotations

import collections
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import procs

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"

#: Stack frames worth a line of their own, by "function (file)" prefix match.
PARTS = [
    ("uvicorn: HTTP parsing and the request task", ("HttpToolsProtocol.",)),
    ("uvicorn: writing the response (send)", ("RequestResponseCycle.send",)),
    (
        "FastAPI/Starlette middleware in front of ours",
        ("FastAPI.__call__", "Starlette.__call__", "ServerErrorMiddleware.__call__ "),
    ),
    ("CacheMiddleware.__call__ (all of ours, send included)", ("CacheMiddleware.__call__",)),
    ("  lookup (redis-py call included)", ("CacheMiddleware._lookup", "Lookups.find")),
    ("    redis-py: execute_command", ("Redis.execute_command",)),
    ("  key: url_hash", ("RedisCache.url_hash",)),
    ("    query parsing (normalise_query)", ("normalise_query",)),
    ("  replay (send included)", ("replay ",)),
    ("  entry decode", ("decode ",)),
]


def fetch_src(ref: str | None, into: Path) -> Path:
    if ref is None:
        return ROOT / "src"
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref, "src"], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into / "src"


def summarise(raw: Path) -> str:
    total = 0
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        names = [f.split(":")[0] + ")" if "(" in f else f for f in frames]
        own[frames[-1].rsplit(":", 1)[0] + ")"] += n
        for label, prefixes in PARTS:
            if any(name.startswith(prefixes) for name in names):
                inclusive[label] += n
    out = [
        f"{total} samples (uvloop resumes coroutines from C, so a stack often starts at the "
        "coroutine: a part's share counts the samples whose stack shows it, a lower bound)",
        "",
        "| part | share of samples |",
        "|---|---:|",
    ]
    for label, _ in PARTS:
        out.append(f"| {label} | {100 * inclusive[label] / max(total, 1):.1f} % |")
    out += ["", "top functions by own samples:"]
    for name, n in own.most_common(12):
        out.append(f"  {100 * n / max(total, 1):5.1f} %  {name}")
    return "\n".join(out)


def main() -> int:
    ref = sys.argv[1] if len(sys.argv) > 1 else None
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        print("py-spy is not installed: bench/.venv/bin/pip install py-spy", file=sys.stderr)
        return 2
    cpus = sorted(os.sched_getaffinity(0))
    server_cpus, load_cpus = ([cpus[-1]], cpus[:-1]) if len(cpus) > 1 else (None, None)
    RESULTS.mkdir(exist_ok=True)
    raw = RESULTS / f"profile-{ref or 'head'}.txt"
    with tempfile.TemporaryDirectory(prefix="rcm-profile-") as scratch:
        src = fetch_src(ref, Path(scratch))
        redis_server = procs.start_redis(load_cpus)
        env = {"BENCH_REDIS_URL": redis_server.url, "PYTHONPATH": str(src)}
        try:
            app = procs.start_app("ours", f"profile-{ref or 'head'}", env, server_cpus, RESULTS)
            try:
                with httpx.Client() as http:
                    for _ in range(2):  # store, then hit
                        http.get(app.base + "/items/42?q=hot").raise_for_status()
                load = threading.Thread(
                    target=procs.run_wrk,
                    args=(app.base, "hit"),
                    kwargs={"duration": 12, "connections": 32, "threads": 2, "cpus": load_cpus},
                )
                load.start()
                time.sleep(2)
                subprocess.run(
                    [spy, "record", "-p", str(app.process.pid), "-d", "8", "-r", "250",
                     "-f", "raw", "-o", str(raw), "--nonblocking"],
                    check=True, capture_output=True, timeout=60,
                )  # fmt: skip
                load.join()
            finally:
                app.stop()
        finally:
            redis_server.stop()
    print(f"library: {ref or 'working tree'}")
    print(summarise(raw))
    return 0


if __name__ == "__main__":
    sys.exit(main())
