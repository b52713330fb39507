#!/usr/bin/env python3
"""The benchmark of redis-cache-middleware against no cache, its peers and two floors.

    python bench/run.py            # 3 rounds x 10 s per run: about 9 minutes
    python bench/run.py --quick    # 2 rounds x 2 s: a smoke run of about 2 minutes

It makes (once) and then uses its own venv in ``bench/.venv``, starts its own redis-server and
one uvicorn per variant on free loopback ports, drives them with wrk, and writes
``bench/results/latest.json`` and ``latest.png``. See bench/README.md.

This file runs with any Python 3.10+ for the bootstrap (standard library only), then
re-executes itself with the venv's Python.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
VENV = BENCH / ".venv"
RESULTS = BENCH / "results"
INSTALL_STATE = VENV / ".bench-install.json"

# What the venv holds, pinned to versions that install together on Python 3.11.
CORE = [
    f"-e{ROOT}",
    "uvicorn[standard]==0.54.0",  # brings uvloop and httptools
    "fastapi==0.165.0",
    "redis[hiredis]==8.1.0",
    "hiredis==3.5.0",
    "httpx==0.28.1",
    "matplotlib==3.11.2",
    "py-spy==0.4.3",  # bench/profile_hit.py
]
#: Each peer is installed on its own, so that one that fails skips only its variant.
PEERS: dict[str, list[str]] = {
    # fastapi-cache2's own [redis] extra pins redis<5, which this project (redis>=5.0.1)
    # cannot share: with it pip falls back to fastapi-cache2 0.1.8 and aioredis 2.0.1, which
    # does not import on Python 3.11. Its RedisBackend only needs redis.asyncio, which the
    # redis above provides, so it is installed without the extra. It imports
    # starlette.templating, which needs jinja2, and does not declare it.
    "fastapi_cache2": ["fastapi-cache2==0.2.2", "jinja2==3.1.6"],
    "cashews": ["cashews[redis]==7.6.0"],
    "litestar": ["uvicorn[standard]==0.54.0", "httpx==0.28.1", "litestar[redis]==2.25.0"],
}
#: Peers whose pins cannot live beside the others get a venv of their own.
OWN_VENV = {"litestar": BENCH / ".venv-litestar"}
PEER_NOTES = {
    "fastapi_cache2": (
        "fastapi-cache2 0.2.2 installed without its [redis] extra (which pins redis<5, "
        "against this project's redis>=5.0.1), plus jinja2, which it imports undeclared"
    ),
    "litestar": (
        "litestar[redis] 2.25.0 pins redis<5.3, so it runs in a venv of its own "
        "(bench/.venv-litestar) on the redis-py that pin allows"
    ),
}

#: name -> (module under bench/apps, checks that a second request is a cache hit, peer)
VARIANTS: dict[str, tuple[str, bool, str | None]] = {
    "constant": ("constant", False, None),
    "bare": ("bare", False, None),
    "nocache": ("nocache", False, None),
    "ours": ("ours", True, None),
    "fastapi_cache2": ("fastapi_cache2", True, "fastapi_cache2"),
    "cashews": ("cashews", True, "cashews"),
    "litestar": ("litestar", True, "litestar"),
}
DESCRIPTIONS = {
    "constant": "FastAPI route returning pre-built bytes, no upstream, no cache (the floor)",
    "bare": "bare ASGI callable sending the same pre-built bytes (the lowest floor)",
    "nocache": "FastAPI, every request awaits the 20 ms upstream",
    "ours": "FastAPI + redis_cache_middleware.CacheMiddleware(default_ttl=60)",
    "fastapi_cache2": "FastAPI + fastapi-cache2 @cache(expire=60), RedisBackend",
    "cashews": "FastAPI + cashews @cache(ttl='60s'), redis backend",
    "litestar": "Litestar route cache=True, ResponseCacheConfig + RedisStore",
}
HOT_PATH = "/items/42?q=hot"


# -- bootstrap (standard library only) ---------------------------------------------------


def _venv_python() -> Path:
    return VENV / "bin" / "python"


def _in_venv() -> bool:
    return Path(sys.prefix).resolve() == VENV.resolve()


def _spec_hash() -> str:
    h = hashlib.sha256()
    h.update(json.dumps([CORE, PEERS]).encode())
    h.update((ROOT / "pyproject.toml").read_bytes())
    return h.hexdigest()


def _pip(args: list[str], log: Path, python: Path | None = None) -> tuple[bool, str]:
    command = [
        str(python or _venv_python()),
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--no-input",
        *args,
    ]
    with open(log, "a") as f:
        f.write(f"\n$ {' '.join(command)}\n")
        f.flush()
        result = subprocess.run(command, stdout=f, stderr=subprocess.STDOUT, timeout=900)
    if result.returncode == 0:
        return True, ""
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    errors = [ln for ln in lines if "ERROR" in ln or "error" in ln.lower()]
    return False, (errors[-1] if errors else lines[-1] if lines else "pip failed")[:300]


def ensure_venv() -> None:
    """Make ``bench/.venv`` and install what the benchmark needs, unless already done."""
    spec = _spec_hash()
    if _venv_python().exists() and INSTALL_STATE.exists():
        try:
            if json.loads(INSTALL_STATE.read_text()).get("spec") == spec:
                return
        except (OSError, ValueError):
            pass
    RESULTS.mkdir(parents=True, exist_ok=True)
    log = RESULTS / "install.log"
    log.write_text("")
    if not _venv_python().exists():
        print(f"creating {VENV} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, timeout=300)
        _pip(["--quiet", "--upgrade", "pip"], log)
    print(
        f"installing the benchmark's packages into bench/.venv (log: {log.relative_to(ROOT)}) ...",
        flush=True,
    )
    ok, why = _pip(["--quiet", *CORE], log)
    if not ok:
        print(f"could not install the core packages: {why}", file=sys.stderr)
        sys.exit(1)
    peers: dict[str, dict[str, object]] = {}
    for name, requirements in PEERS.items():
        own = OWN_VENV.get(name)
        if own is not None:
            if not (own / "bin" / "python").exists():
                subprocess.run([sys.executable, "-m", "venv", str(own)], check=True, timeout=300)
            ok, why = _pip(["--quiet", *requirements], log, python=own / "bin" / "python")
            peers[name] = {
                "installed": ok,
                "reason": why,
                "requirements": requirements,
                "venv": str(own.relative_to(ROOT)),
            }
            print(f"  {name}: {'installed' if ok else 'NOT installed: ' + why}", flush=True)
            continue
        ok, why = _pip(["--quiet", *requirements], log)
        peers[name] = {"installed": ok, "reason": why, "requirements": requirements}
        print(f"  {name}: {'installed' if ok else 'NOT installed: ' + why}", flush=True)
    INSTALL_STATE.write_text(json.dumps({"spec": spec, "peers": peers}, indent=2))


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
    python = str(_venv_python())
    os.execv(python, [python, str(Path(__file__).resolve()), *argv])


# -- options -----------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python bench/run.py",
        description="HTTP throughput, Redis commands, CPU and memory of redis-cache-middleware "
        "against no cache, fastapi-cache2, cashews, litestar and two floors.",
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
        "--no-pin",
        action="store_true",
        help="do not pin uvicorn to one CPU and wrk+redis to the others",
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


def machine_info() -> dict[str, object]:
    import platform

    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kib = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    except OSError:
        pass
    return {
        "cpu_model": model,
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
    }


def package_versions() -> dict[str, str]:
    from importlib import metadata

    names = [
        "redis-cache-middleware",
        "starlette",
        "fastapi",
        "uvicorn",
        "uvloop",
        "httptools",
        "redis",
        "hiredis",
        "msgpack",
        "fastapi-cache2",
        "cashews",
        "httpx",
        "matplotlib",
        "pydantic",
    ]
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    for peer, venv in OWN_VENV.items():
        # What the peer's own venv runs it on.
        probe = (
            "import json, importlib.metadata as m\n"
            "out = {}\n"
            "for n in ('litestar', 'redis', 'hiredis', 'uvicorn', 'uvloop', 'httptools'):\n"
            "    try: out[n] = m.version(n)\n"
            "    except m.PackageNotFoundError: out[n] = 'not installed'\n"
            "print(json.dumps(out))"
        )
        try:
            found = subprocess.run(
                [str(venv / "bin" / "python"), "-c", probe],
                capture_output=True,
                text=True,
                timeout=30,
            )
            for name, version in json.loads(found.stdout).items():
                versions[f"{name} ({peer} venv)" if name != peer else name] = version
        except (OSError, ValueError, subprocess.SubprocessError):
            versions[peer] = "not installed"
    return versions


def _redis_parser() -> str:
    from redis.utils import HIREDIS_AVAILABLE

    return "hiredis" if HIREDIS_AVAILABLE else "python"


def git_state() -> dict[str, object]:
    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    digest = hashlib.sha256()
    for path in sorted((ROOT / "src").rglob("*.py")):
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return {
        "commit": git("rev-parse", "HEAD"),
        "library_changes_uncommitted": bool(git("status", "--porcelain", "--", "src")),
        # The library is measured as it is on disk: this names that exact source.
        "src_sha256": digest.hexdigest(),
    }


def check_document(body: bytes, item_id: int, q: str) -> str | None:
    """Return why ``body`` is not the endpoint's document for (item_id, q), or None."""
    from apps._common import make_document

    try:
        got = json.loads(body)
    except ValueError:
        return f"not JSON: {body[:80]!r}"
    if got != json.loads(json.dumps(make_document(item_id, q))):
        return f"not the expected document for id={item_id} q={q}: {body[:80]!r}"
    return None


def verify(server, cached: bool, tag: str, floor: bool) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """Check the endpoint; for a cached variant, that a second request is served from cache.

    Raises RuntimeError with the reason when the variant must not be loaded.
    """
    import httpx

    with httpx.Client(timeout=10.0) as client:
        path_q = f"verify-{tag}"
        url = f"{server.base}/items/7?q={path_q}"
        calls0 = server.calls(client)
        t0 = time.perf_counter()
        first = client.get(url)
        t1 = time.perf_counter()
        second = client.get(url)
        t2 = time.perf_counter()
        calls1 = server.calls(client)
        for response in (first, second):
            if response.status_code != 200:
                raise RuntimeError(f"GET {url} answered {response.status_code}")
        if not floor:
            for response in (first, second):
                why = check_document(response.content, 7, path_q)
                if why:
                    raise RuntimeError(why)
        hot = client.get(server.base + HOT_PATH)
        why = check_document(hot.content, 42, "hot")
        if why:
            raise RuntimeError(why)
        info = {
            "first_ms": round((t1 - t0) * 1000, 2),
            "second_ms": round((t2 - t1) * 1000, 2),
            "origin_calls": calls1 - calls0,
            "cache_status": [first.headers.get("cache-status"), second.headers.get("cache-status")],
            "hot_body_bytes": len(hot.content),
            "hot_header_bytes": sum(len(k) + len(v) + 4 for k, v in hot.headers.raw),
        }
        if cached:
            if calls1 - calls0 != 1:
                raise RuntimeError(
                    f"two requests for one URL ran the upstream {calls1 - calls0} times: "
                    "the second was not served from cache"
                )
            if (t2 - t1) >= 0.015:
                raise RuntimeError(
                    f"the second request took {(t2 - t1) * 1000:.1f} ms (the upstream alone "
                    "takes 20 ms): not a cache hit"
                )
        return info


def measure(args: argparse.Namespace) -> dict[str, object]:
    import httpx
    import procs

    cpus = sorted(os.sched_getaffinity(0))
    if args.no_pin or len(cpus) < 2:
        server_cpus = load_cpus = None
        pinning = "none"
    else:
        server_cpus, load_cpus = [cpus[-1]], cpus[:-1]
        pinning = f"uvicorn on CPU {server_cpus}, wrk and redis-server on CPUs {load_cpus}"

    install_state = json.loads(INSTALL_STATE.read_text()) if INSTALL_STATE.exists() else {}
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
        "redis_py_parser": _redis_parser(),
        "notes": [PEER_NOTES[p] for p in PEER_NOTES if p in args.variant_names],
        "variants": {},
    }
    variants: dict[str, dict[str, object]] = results["variants"]  # type: ignore[assignment]
    for name in args.variant_names:
        module, cached, peer = VARIANTS[name]
        entry: dict[str, object] = {
            "status": "ran",
            "description": DESCRIPTIONS[name],
            "cached": cached,
            "rounds": [],
        }
        if peer is not None:
            state = install_state.get("peers", {}).get(peer, {})
            if not state.get("installed", False):
                entry["status"] = "skipped"
                entry["reason"] = f"could not be installed: {state.get('reason', 'unknown')}"
                print(f"skipping {name}: {entry['reason']}", flush=True)
        variants[name] = entry

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
                module, cached, _ = VARIANTS[name]
                rclient.flushall()
                try:
                    own = OWN_VENV.get(name)
                    server = procs.start_app(
                        module,
                        f"{name}-r{rnd}",
                        env,
                        server_cpus,
                        log_dir,
                        python=str(own / "bin" / "python") if own else sys.executable,
                    )
                except RuntimeError as exc:
                    entry["status"] = "skipped"
                    entry["reason"] = f"server did not start: {exc}"
                    print(f"  {name:<15} SKIPPED: {exc}", flush=True)
                    continue
                try:
                    server_info = server_info or {
                        "loop": server.info.get("loop"),
                        "http": server.info.get("http"),
                    }
                    try:
                        check = verify(server, cached, f"r{rnd}", name in ("constant", "bare"))
                    except (RuntimeError, httpx.HTTPError) as exc:
                        entry["status"] = "aborted"
                        entry["reason"] = f"verification failed in round {rnd}: {exc}"
                        print(f"  {name:<15} ABORTED: {exc}", flush=True)
                        continue
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
                            data["origin_calls_per_request"] = round(
                                calls / max(1, result.requests), 4
                            )
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
                finally:
                    server.stop()
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


def run_extras(args, results, redis_server, env, server_cpus, log_dir) -> None:  # type: ignore[no-untyped-def]
    """The side measurements on ``ours``; one that fails is recorded, not fatal."""
    import traceback

    import extras

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
        lambda: extras.redis_commands(
            redis_server, env, server_cpus, log_dir, args.count_hits, args.count_misses
        ),
    )

    def cpu() -> dict[str, object]:
        data = extras.cpu_per_hit(
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
        lambda: extras.streaming_rss(
            redis_server, env, server_cpus, log_dir, repeats=3 if args.quick else 5
        ),
    )


def targets(results: dict[str, object]) -> list[dict[str, object]]:
    """The issue's targets, each with its measured value and PASS/FAIL (None: not measured)."""
    import statistics

    variants: dict[str, dict[str, object]] = results["variants"]  # type: ignore[assignment]
    out: list[dict[str, object]] = []
    ours = variants.get("ours", {})
    summary = ours.get("summary", {}) if ours.get("status") == "ran" else {}
    hit = summary.get("hit") if summary else None  # type: ignore[union-attr]
    out.append(
        {
            "name": "hit throughput >= 1.3x constant",
            "value": None if hit is None else round(hit["ratio_to_constant"]["median"], 3),
            "threshold": 1.3,
            "passed": None if hit is None else hit["ratio_to_constant"]["median"] >= 1.3,
            "detail": "ours did not run"
            if hit is None
            else "ours hit req/s / constant req/s, median of rounds "
            f"(min {hit['ratio_to_constant']['min']:.2f}, "
            f"max {hit['ratio_to_constant']['max']:.2f})",
        }
    )
    nocache = variants.get("nocache", {})
    ratios = []
    if ours.get("status") == "ran" and nocache.get("status") == "ran":
        by_round = {r["round"]: r for r in nocache["rounds"]}  # type: ignore[union-attr]
        for r in ours["rounds"]:  # type: ignore[union-attr]
            base = by_round.get(r["round"])
            if base:
                ratios.append(r["miss"]["rps"] / base["miss"]["rps"])
    value = statistics.median(ratios) if ratios else None
    out.append(
        {
            "name": "miss throughput >= 0.9x nocache",
            "value": None if value is None else round(value, 3),
            "threshold": 0.9,
            "passed": None if value is None else value >= 0.9,
            "detail": "needs both ours and nocache"
            if value is None
            else "ours miss req/s / nocache miss req/s, same round, median "
            f"(min {min(ratios):.2f}, "
            f"max {max(ratios):.2f})",
        }
    )
    rc = results.get("redis_commands")
    if isinstance(rc, dict) and "error" not in rc:
        per_hit = max(rc["commands_per_hit"], rc["sent_commands_per_hit"])
        out.append(
            {
                "name": "1 Redis command per hit (URL without Vary)",
                "value": per_hit,
                "threshold": 1,
                "passed": per_hit <= 1.0,
                "detail": "sent per hit: "
                + ", ".join(f"{k} {v:g}" for k, v in rc["sent_per_hit"].items())
                + f" (INFO commandstats: {rc['commands_per_hit']:g})",
            }
        )
        seq = rc["miss_sequence"]
        out.append(
            {
                "name": "misses pipeline their writes (one round trip stores the entry)",
                "value": seq["entry_write_units"],
                "threshold": 1,
                "passed": seq["entry_write_units"] == 1,
                "detail": f"{seq['round_trips']} round trips per miss "
                f"({' | '.join(seq['units'])}), "
                f"{rc['sent_commands_per_miss']:g} commands sent, {rc['commands_per_miss']:g} run "
                f"counting those inside scripts; the entry's writes (HSET, ZADD, PEXPIRE...) are "
                f"in {seq['entry_write_units']} of them; one miss: {' '.join(seq['sequence'])}",
            }
        )
    else:
        out.append(
            {
                "name": "1 Redis command per hit (URL without Vary)",
                "value": None,
                "threshold": 1,
                "passed": None,
                "detail": "not measured",
            }
        )
        out.append(
            {
                "name": "misses pipeline their writes (one round trip stores the entry)",
                "value": None,
                "threshold": 1,
                "passed": None,
                "detail": "not measured",
            }
        )
    rss = results.get("streaming_rss")
    if isinstance(rss, dict) and "error" not in rss:
        limit = 3 * rss["max_body_size"]
        all_growth = ", ".join(f"{g / 1024:.2f}" for g in rss["ours"]["growth_kib_all"])
        growth = rss["ours"]["growth_kib"] * 1024
        out.append(
            {
                "name": "streaming RSS growth < 3 x max_body_size",
                "value": round(growth / 1048576, 2),
                "threshold": round(limit / 1048576, 2),
                "passed": growth < limit and bool(rss["ours"]["complete"]),
                "detail": f"MiB of peak RSS over idle while streaming "
                f"{rss['chunks'] * rss['chunk_bytes'] / 1048576:.0f} MiB "
                f"({rss['chunks']} x {rss['chunk_bytes'] // 1024} KiB) through "
                f"ours, median of {rss['repeats']} runs ({all_growth}); the same app without the "
                f"middleware: {rss['no_middleware']['growth_kib'] / 1024:.2f} MiB; in-process "
                f"tracemalloc peak ours {rss['tracemalloc_peak_bytes']['ours'] / 1048576:.2f} MiB "
                f"vs bare app {rss['tracemalloc_peak_bytes']['no_middleware'] / 1048576:.2f} MiB",
            }
        )
    else:
        out.append(
            {
                "name": "streaming RSS growth < 3 x max_body_size",
                "value": None,
                "threshold": 3,
                "passed": None,
                "detail": "not measured",
            }
        )
    return out


def print_side(results: dict[str, object]) -> None:
    for key in ("redis_commands", "cpu_per_hit", "streaming_rss"):
        value = results.get(key)
        if isinstance(value, dict) and "error" in value:
            print(f"\n{key}: FAILED: {value['error']} (bench/results/{key}.error.txt)")
    rc = results.get("redis_commands")
    if isinstance(rc, dict) and "error" not in rc:
        print(
            f"\nRedis commands (ours, {rc['hits']} sequential hits, {rc['misses']} "
            "sequential misses; 'sent' = what the middleware sent, from MONITOR; "
            "'commandstats' = INFO commandstats deltas, which also count the commands "
            "Lua scripts run):"
        )
        for mode in ("hit", "miss"):
            print(
                f"  per {mode:<4}: sent {rc[f'sent_commands_per_{mode}']:g} ("
                + ", ".join(f"{k} {v:g}" for k, v in rc[f"sent_per_{mode}"].items())
                + f"); commandstats {rc[f'commands_per_{mode}']:g} ("
                + ", ".join(f"{k} {v:g}" for k, v in rc[f"per_{mode}"].items())
                + ")"
            )
        ms, hs = rc["miss_sequence"], rc["hit_sequence"]
        print(
            f"  one miss, as MONITOR saw it ([...] = run inside the script): "
            f"{' '.join(ms['sequence'])}"
        )
        print(
            f"    round trips: {ms['round_trips']} ({' | '.join(ms['units'])}); the entry's "
            f"writes are in {ms['entry_write_units']} of them"
        )
        print(f"  one hit, as MONITOR saw it: {' '.join(hs['sequence'])}")
        print(
            f"  upstream calls during the hits: {rc['origin_calls_during_hits']}; "
            f"Cache-Status of the hits: {rc['hit_cache_status_counts']}"
        )
    cpu = results.get("cpu_per_hit")
    if isinstance(cpu, dict) and "error" not in cpu:
        print(
            f"\nCPU per request, in-process ({cpu['hits']} hits on {cpu['loop']}, real "
            "Redis, no HTTP server):"
        )
        print(
            f"  ours: {cpu['cpu_us_per_hit']:.1f} us CPU (process_time), "
            f"{cpu['wall_us_per_hit']:.1f} us wall per hit"
        )
        print(
            f"  for scale, redis-py alone: pipeline GET+HGETALL "
            f"{cpu['redis_py_pipeline_get_hgetall_cpu_us']:.1f} us CPU / "
            f"{cpu['redis_py_pipeline_get_hgetall_wall_us']:.1f} us wall; one HGETALL "
            f"{cpu['redis_py_single_hgetall_cpu_us']:.1f} us CPU / "
            f"{cpu['redis_py_single_hgetall_wall_us']:.1f} us wall"
        )
        print(
            f"  misses ({cpu['misses']}, origin answering at once): "
            f"{cpu['cpu_us_per_miss']:.1f} us CPU, {cpu['wall_us_per_miss']:.1f} us wall "
            "per miss"
        )
        print("  profiles: bench/results/profile_hit.txt, bench/results/profile_miss.txt")
    rss = results.get("streaming_rss")
    if isinstance(rss, dict) and "error" not in rss:
        o, b = rss["ours"], rss["no_middleware"]
        print(
            f"\nStreaming {rss['chunks']} x {rss['chunk_bytes'] // 1024} KiB through uvicorn "
            f"(max_body_size "
            f"{rss['max_body_size']:,} B):"
        )
        print(f"  (median of {rss['repeats']} runs each; growth = peak VmRSS/VmHWM - idle VmRSS)")
        print(
            f"  ours:          idle {o['idle_rss_kib'] / 1024:.1f} MiB, peak "
            f"{o['peak_rss_kib'] / 1024:.1f} MiB, growth {o['growth_kib'] / 1024:.2f} MiB "
            f"(runs: {', '.join(f'{g / 1024:.2f}' for g in o['growth_kib_all'])}), "
            f"{o['bytes_received'] / 1048576:.0f} MiB received in {o['seconds']:.1f} s, "
            f"Cache-Status: {o['cache_status']!r}"
        )
        print(
            f"  no middleware: idle {b['idle_rss_kib'] / 1024:.1f} MiB, peak "
            f"{b['peak_rss_kib'] / 1024:.1f} MiB, growth {b['growth_kib'] / 1024:.2f} MiB "
            f"(runs: {', '.join(f'{g / 1024:.2f}' for g in b['growth_kib_all'])})"
        )
        tm = rss["tracemalloc_peak_bytes"]
        print(
            f"  in-process, tracemalloc peak while the same "
            f"{rss['chunks'] * rss['chunk_bytes'] / 1048576:.0f} MiB pass through: "
            f"ours {tm['ours'] / 1048576:.2f} MiB, the bare app "
            f"{tm['no_middleware'] / 1048576:.2f} MiB (Python allocations only, no server)"
        )
        print(f"  entries stored for the streamed URL: {rss['entries_stored']}")


def main_in_venv(argv: list[str]) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(BENCH))
    import report

    if shutil.which("wrk") is None:
        print("wrk is not installed. Install it with:\n  apt-get install -y wrk", file=sys.stderr)
        return 2
    RESULTS.mkdir(parents=True, exist_ok=True)
    results = measure(args)
    report.summarise(results)
    results["targets"] = targets(results)
    server = results.get("server", {})
    print("\n" + "=" * 100)
    print(
        f"server: uvicorn, one worker, loop {server.get('loop')}, HTTP parser "
        f"{server.get('http')}; {results['settings']['pinning']}"
    )
    print(
        f"machine: {results['machine']['cpu_model']}, {results['machine']['cpus']} CPUs, "
        f"Python {results['machine']['python']}; {results['redis_server'].split(' sha')[0]}; "
        f"redis-py {results['packages']['redis']} ({results['redis_py_parser']} parser); "
        f"{results['wrk'].split(' Copyright')[0]}"
    )
    for note in results["notes"]:
        print(f"note: {note}")
    print()
    print(report.table(results))
    print_side(results)
    print()
    for t in results["targets"]:
        verdict = {True: "PASS", False: "FAIL", None: "N/A "}[t["passed"]]
        value = "-" if t["value"] is None else t["value"]
        print(f"{verdict}  {t['name']}: {value}  -- {t['detail']}")
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
    if _in_venv():
        try:
            sys.exit(main_in_venv(sys.argv[1:]))
        except KeyboardInterrupt:
            sys.exit(130)
    else:
        bootstrap(sys.argv[1:])
