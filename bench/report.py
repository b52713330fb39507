"""Turn the measurements into what a run shows and writes: the per-variant summaries (ratios
to the floor), the stdout table, the side measurements and target verdicts as text,
``results/latest.json`` and ``latest.png``.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any


def spread(values: list[float]) -> dict[str, float]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
    }


def summarise(results: dict[str, Any], floor: str = "constant") -> None:
    """Add per-variant summaries (ratios to ``floor`` in the same round) to ``results``."""
    variants = results["variants"]
    base_rounds = {r["round"]: r for r in variants[floor].get("rounds", [])}
    for data in variants.values():
        rounds = data.get("rounds", [])
        if data["status"] != "ran" or not rounds:
            continue
        summary: dict[str, Any] = {}
        for mode in ("hit", "miss"):
            ratios, rps, p50, p99, origin = [], [], [], [], []
            for r in rounds:
                base = base_rounds.get(r["round"])
                if mode not in r or base is None or mode not in base:
                    continue
                rps.append(r[mode]["rps"])
                ratios.append(r[mode]["rps"] / base[mode]["rps"])
                p50.append(r[mode]["p50_ms"])
                p99.append(r[mode]["p99_ms"])
                origin.append(r[mode].get("origin_calls_per_request", 0.0))
            if not rps:
                continue
            summary[mode] = {
                "ratio_to_constant": spread(ratios),
                "rps": spread(rps),
                "p50_ms": spread(p50),
                "p99_ms": spread(p99),
                "origin_calls_per_request": spread(origin),
                "rounds": len(rps),
            }
        data["summary"] = summary


def _fmt_ratio(s: dict[str, float]) -> str:
    return f"{s['median']:.2f} ({s['min']:.2f}-{s['max']:.2f})"


def table(results: dict[str, Any]) -> str:
    """Return the main results table as text."""
    header = (
        f"{'variant':<15} | {'hit req/s':>9} {'x constant (min-max)':>21} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'origin':>6} | {'miss req/s':>10} "
        f"{'x constant (min-max)':>21} {'p50 ms':>7} {'p99 ms':>7} {'origin':>6}"
    )
    lines = [header, "-" * len(header)]
    for name, data in results["variants"].items():
        if data["status"] != "ran" or "summary" not in data:
            lines.append(f"{name:<15} | skipped: {data.get('reason', '?').splitlines()[0][:90]}")
            continue
        cells = [f"{name:<15} |"]
        for mode in ("hit", "miss"):
            s = data["summary"].get(mode)
            if s is None:
                cells.append(f"{'-':>9} {'-':>21} {'-':>7} {'-':>7} {'-':>6} |")
                continue
            width = 9 if mode == "hit" else 10
            cells.append(
                f"{s['rps']['median']:>{width},.0f} {_fmt_ratio(s['ratio_to_constant']):>21} "
                f"{s['p50_ms']['median']:>7.2f} {s['p99_ms']['median']:>7.2f} "
                f"{s['origin_calls_per_request']['median']:>6.2f}" + (" |" if mode == "hit" else "")
            )
        lines.append(" ".join(cells))
    lines.append(
        "req/s, p50, p99 and origin (upstream calls per request) are medians over rounds; "
        "'x constant' is req/s over the constant floor's in the same round."
    )
    return "\n".join(lines)


def write_json(results: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, sort_keys=False) + "\n")


def chart(results: dict[str, Any], path: Path) -> None:
    """Two panels (hit runs, miss runs): each variant's req/s over the constant floor's in the
    same round, median bar with min-max error bars, on a log scale so that the floors and the
    20 ms-upstream variants are both legible."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    names = list(results["variants"])
    fig, axes = plt.subplots(2, 1, figsize=(12, 9.5), dpi=110, sharex=True)
    colours = {"hit": "#2b7bba", "miss": "#e8833a"}
    titles = {
        "hit": "hit runs: one hot URL, served from cache after the first request",
        "miss": "miss runs: a unique query per request, so every request reaches the upstream",
    }
    values = [
        v
        for data in results["variants"].values()
        for s in data.get("summary", {}).values()
        for v in (s["ratio_to_constant"]["min"], s["ratio_to_constant"]["max"])
    ] or [1.0]
    low, high = min([*values, 0.5]) / 1.6, max([*values, 1.5]) * 1.8
    ticks = [t for t in (0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20) if low <= t <= high]
    for ax, mode in zip(axes, ("hit", "miss"), strict=True):
        for i, name in enumerate(names):
            data = results["variants"][name]
            s = data.get("summary", {}).get(mode)
            if s is None:
                ax.text(
                    i,
                    low * 1.15,
                    "skipped" if data["status"] != "ran" else "no data",
                    ha="center",
                    va="bottom",
                    fontsize=10,
                    color="#a00",
                )
                continue
            r = s["ratio_to_constant"]
            colour = "#9a9a9a" if name in ("constant", "bare") else colours[mode]
            if name == "ours":
                colour = "#6a3d9a"
            ax.bar(
                i,
                r["median"],
                0.6,
                bottom=0,
                color=colour,
                yerr=[[r["median"] - r["min"]], [r["max"] - r["median"]]],
                capsize=5,
                error_kw={"elinewidth": 1.2, "ecolor": "#222222"},
            )
            ax.annotate(
                f"{r['median']:.2f}\n{s['rps']['median']:,.0f} req/s",
                (i, r["max"]),
                xytext=(0, 4),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=8.5,
            )
        ax.set_yscale("log")
        ax.set_ylim(low, high)
        ax.yaxis.set_major_locator(FixedLocator(ticks))
        ax.yaxis.set_minor_locator(NullLocator())
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.axhline(1.0, color="#555555", linestyle="--", linewidth=1)
        if mode == "hit":
            ax.axhline(1.3, color="#6a3d9a", linestyle=":", linewidth=1.4)
        else:
            nocache = results["variants"].get("nocache", {}).get("summary", {}).get("miss")
            if nocache:
                line = 0.9 * nocache["ratio_to_constant"]["median"]
                ax.axhline(line, color="#6a3d9a", linestyle=":", linewidth=1.4)
        ax.set_title(titles[mode], fontsize=10.5, loc="left")
        ax.set_ylabel("req/s / constant's (log)")
        ax.grid(axis="y", alpha=0.3)
        ax.set_xlim(-0.6, len(names) - 0.4)
    axes[1].set_xticks(range(len(names)))
    axes[1].set_xticklabels(names, fontsize=11)
    settings = results["settings"]
    machine = results["machine"]
    fig.suptitle(
        "redis-cache-middleware: throughput relative to a FastAPI route returning pre-built "
        "bytes (same round)\n"
        f"median of {settings['rounds']} rounds, bars min-max; {settings['duration_s']} s per "
        f"run, {settings['connections']} connections, {settings['threads']} wrk threads; "
        f"{machine['cpu_model']}, {machine['cpus']} CPUs; {results['date'][:10]}",
        fontsize=11,
    )
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [
        Patch(color="#9a9a9a", label="floors (no upstream)"),
        Patch(color="#6a3d9a", label="ours"),
        Patch(color=colours["hit"], label="others, hit runs"),
        Patch(color=colours["miss"], label="others, miss runs"),
        Line2D([], [], color="#555555", linestyle="--", label="constant floor = 1"),
        Line2D(
            [],
            [],
            color="#6a3d9a",
            linestyle=":",
            linewidth=1.4,
            label="targets for ours: hit 1.3; miss 0.9 x nocache",
        ),
    ]
    fig.legend(handles=handles, loc="lower center", ncol=6, fontsize=8.5, frameon=False)
    fig.tight_layout(rect=(0, 0.035, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


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


def print_results(results: dict[str, Any]) -> None:
    """Print the run's summary: server and machine, notes, the table, the side measurements and
    a PASS/FAIL line per target."""
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
    print(table(results))
    print_side(results)
    print()
    for t in results["targets"]:
        verdict = {True: "PASS", False: "FAIL", None: "N/A "}[t["passed"]]
        value = "-" if t["value"] is None else t["value"]
        print(f"{verdict}  {t['name']}: {value}  -- {t['detail']}")
