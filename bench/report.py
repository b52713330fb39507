"""Turn the measurements into what a run shows and writes: the per-variant summaries of each
mode (ratios to the floor, latency percentiles, CPU per request), the stdout tables, the side
measurements and target verdicts as text, ``results/latest.json`` and ``latest.png``.
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


#: The figures of a wrk run summarised over rounds (median, min, max), as the JSON names them.
FIGURES = (
    "rps",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "p99_9_ms",
    "max_ms",
    "cpu_us_per_request",
    "cpu_utilisation",
    "origin_calls_per_request",
)


def summarise(results: dict[str, Any], floor: str = "constant") -> None:
    """Add per-variant summaries to ``results``: for each mode and each run kind (hit, miss),
    every figure's median and min-max over rounds, and the ratios to ``floor`` measured in the
    same round and mode (req/s, and p99 for the tail)."""
    variants = results["variants"]
    base_rounds = {(r["round"], r.get("mode")): r for r in variants[floor].get("rounds", [])}
    modes = list(results["settings"]["modes"])
    for data in variants.values():
        rounds = data.get("rounds", [])
        if data["status"] != "ran" or not rounds:
            continue
        summary: dict[str, Any] = {}
        for mode in modes:
            per_mode: dict[str, Any] = {}
            for kind in ("hit", "miss"):
                values: dict[str, list[float]] = {f: [] for f in FIGURES}
                ratios, p99_ratios = [], []
                for r in rounds:
                    base = base_rounds.get((r["round"], r.get("mode")))
                    if r.get("mode") != mode or kind not in r or base is None or kind not in base:
                        continue
                    run = r[kind]
                    for figure in FIGURES:
                        if run.get(figure) is not None:
                            values[figure].append(run[figure])
                    ratios.append(run["rps"] / base[kind]["rps"])
                    if base[kind]["p99_ms"]:
                        p99_ratios.append(run["p99_ms"] / base[kind]["p99_ms"])
                if not ratios:
                    continue
                per_mode[kind] = {
                    "ratio_to_constant": spread(ratios),
                    "p99_ratio_to_constant": spread(p99_ratios) if p99_ratios else None,
                    **{f: spread(v) if v else None for f, v in values.items()},
                    "rounds": len(ratios),
                }
            if per_mode:
                summary[mode] = per_mode
        data["summary"] = summary


def _fmt_ratio(s: dict[str, float]) -> str:
    return f"{s['median']:.2f} ({s['min']:.2f}-{s['max']:.2f})"


def _median(s: dict[str, Any], figure: str, fmt: str, width: int) -> str:
    value = s.get(figure)
    return f"{'-':>{width}}" if value is None else f"{value['median']:>{width}{fmt}}"


def table(results: dict[str, Any], mode: str) -> str:
    """Return the main results table of one mode as text: throughput, its ratio to the floor,
    p50 and p99, the server's CPU per request and its utilisation, origin calls per request."""
    cols = (
        f"{{rps}} {'x constant (min-max)':>21} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'CPU us':>7} {'CPU %':>5} {'origin':>6}"
    )
    hit_cols, miss_cols = cols.format(rps=f"{'hit req/s':>10}"), cols.format(rps="miss req/s")
    header = f"{'variant':<15} | {hit_cols} | {miss_cols}"
    lines = [header, "-" * len(header)]
    for name, data in results["variants"].items():
        if data["status"] != "ran" or "summary" not in data:
            lines.append(f"{name:<15} | skipped: {data.get('reason', '?').splitlines()[0][:90]}")
            continue
        cells = [f"{name:<15}"]
        for kind in ("hit", "miss"):
            s = data["summary"].get(mode, {}).get(kind)
            if s is None:
                cells.append(f"{'-':>10} {'-':>21} {'-':>7} {'-':>7} {'-':>7} {'-':>5} {'-':>6}")
                continue
            util = s.get("cpu_utilisation")
            cells.append(
                f"{s['rps']['median']:>10,.0f} {_fmt_ratio(s['ratio_to_constant']):>21} "
                f"{s['p50_ms']['median']:>7.2f} {s['p99_ms']['median']:>7.2f} "
                f"{_median(s, 'cpu_us_per_request', ',.0f', 7)} "
                + (f"{'-':>5}" if util is None else f"{util['median']:>5.0%}")
                + f" {s['origin_calls_per_request']['median']:>6.2f}"
            )
        lines.append(" | ".join(cells))
    lines.append(
        "req/s, p50, p99, CPU and origin are medians over rounds; 'x constant' is req/s over "
        "the constant floor's in the same round and mode; CPU us = the uvicorn worker's CPU "
        "per request completed, CPU % = its CPU seconds over wall seconds during the run "
        "(100 % = one core); origin = upstream calls per request."
    )
    return "\n".join(lines)


def latency_table(results: dict[str, Any], mode: str) -> str:
    """Return one mode's latency distributions (wrk's, medians over rounds) as text."""
    cols = " ".join(f"{c:>7}" for c in ("p50", "p90", "p99", "p99.9", "max"))
    header = f"{'ms':<15} | {'hit':<4} {cols} | {'miss':<4} {cols}"
    lines = [header, "-" * len(header)]
    figures = ("p50_ms", "p90_ms", "p99_ms", "p99_9_ms", "max_ms")
    for name, data in results["variants"].items():
        summary = data.get("summary", {}).get(mode) if data["status"] == "ran" else None
        if not summary:
            continue
        cells = [f"{name:<15}"]
        for kind in ("hit", "miss"):
            s = summary.get(kind)
            values = (
                " ".join(f"{'-':>7}" for _ in figures)
                if s is None
                else " ".join(_median(s, f, ".2f", 7) for f in figures)
            )
            cells.append(f"{'':<4} {values}")
        lines.append(" | ".join(cells))
    lines.append("wrk's latency percentiles in ms, each the median over rounds.")
    return "\n".join(lines)


def write_json(results: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, sort_keys=False) + "\n")


def chart(results: dict[str, Any], path: Path) -> None:
    """Two rows of panels (hit runs, miss runs), one column per mode: each variant's req/s over
    the constant floor's in the same round and mode, median bar with min-max error bars, on a
    log scale so that the floors and the 20 ms-upstream variants are both legible."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator
    from targets import THRESHOLDS

    names = list(results["variants"])
    modes = list(results["settings"]["modes"])
    fig, axes = plt.subplots(
        2,
        len(modes),
        figsize=(12 * len(modes) ** 0.5, 9.5),
        dpi=110,
        sharex=True,
        squeeze=False,
    )
    colours = {"hit": "#2b7bba", "miss": "#e8833a"}
    titles = {
        "hit": "hit runs: one hot URL, served from cache after the first request",
        "miss": "miss runs: a unique query per request, every request reaches the upstream",
    }
    values = [
        v
        for data in results["variants"].values()
        for per_mode in data.get("summary", {}).values()
        for s in per_mode.values()
        for v in (s["ratio_to_constant"]["min"], s["ratio_to_constant"]["max"])
    ] or [1.0]
    low, high = min([*values, 0.5]) / 1.6, max([*values, 1.5]) * 1.8
    ticks = [t for t in (0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20) if low <= t <= high]
    for column, mode in enumerate(modes):
        limits = THRESHOLDS[mode]
        for ax, kind in zip(axes[:, column], ("hit", "miss"), strict=True):
            for i, name in enumerate(names):
                data = results["variants"][name]
                s = data.get("summary", {}).get(mode, {}).get(kind)
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
                colour = "#9a9a9a" if name in ("constant", "bare") else colours[kind]
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
                cpu = s.get("cpu_us_per_request")
                ax.annotate(
                    f"{r['median']:.2f}\n{s['rps']['median']:,.0f} req/s"
                    + ("" if cpu is None else f"\n{cpu['median']:,.0f} us CPU"),
                    (i, r["max"]),
                    xytext=(0, 4),
                    textcoords="offset points",
                    ha="center",
                    va="bottom",
                    fontsize=8,
                )
            ax.set_yscale("log")
            ax.set_ylim(low, high)
            ax.yaxis.set_major_locator(FixedLocator(ticks))
            ax.yaxis.set_minor_locator(NullLocator())
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.axhline(1.0, color="#555555", linestyle="--", linewidth=1)
            if kind == "hit":
                ax.axhline(limits["hit_x_constant"], color="#6a3d9a", linestyle=":", lw=1.4)
            else:
                summary = results["variants"].get("nocache", {}).get("summary", {})
                nocache = summary.get(mode, {}).get("miss")
                if nocache:
                    line = limits["miss_x_nocache"] * nocache["ratio_to_constant"]["median"]
                    ax.axhline(line, color="#6a3d9a", linestyle=":", linewidth=1.4)
            ax.set_title(f"{mode}: {titles[kind]}", fontsize=10, loc="left")
            ax.set_ylabel("req/s / constant's (log)")
            ax.grid(axis="y", alpha=0.3)
            ax.set_xlim(-0.6, len(names) - 0.4)
        axes[1, column].set_xticks(range(len(names)))
        axes[1, column].set_xticklabels(names, fontsize=10)
    settings = results["settings"]
    machine = results["machine"]
    fig.suptitle(
        "redis-cache-middleware: throughput relative to a FastAPI route returning pre-built "
        "bytes (same round and mode)\n"
        f"median of {settings['rounds']} rounds, bars min-max; {settings['duration_s']} s per "
        f"run, {settings['connections']} connections, {settings['threads']} wrk threads; "
        f"{machine['cpu_model']}, {machine['cpus']} CPUs; {results['date'][:10]}\n"
        + "; ".join(f"{mode}: {where}" for mode, where in settings["modes"].items()),
        fontsize=10.5,
    )
    target_text = "; ".join(
        f"{mode} hit {THRESHOLDS[mode]['hit_x_constant']:g}, miss "
        f"{THRESHOLDS[mode]['miss_x_nocache']:g} x nocache"
        for mode in modes
    )
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
            label=f"targets for ours: {target_text}",
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
    """Print the run's summary: server and machine, notes, each mode's tables, the side
    measurements and a PASS/FAIL line per target, named by its mode."""
    server = results.get("server", {})
    print("\n" + "=" * 100)
    print(
        f"server: uvicorn, one worker, loop {server.get('loop')}, HTTP parser {server.get('http')}"
    )
    print(
        f"machine: {results['machine']['cpu_model']}, {results['machine']['cpus']} CPUs, "
        f"Python {results['machine']['python']}; {results['redis_server'].split(' sha')[0]}; "
        f"redis-py {results['packages']['redis']} ({results['redis_py_parser']} parser); "
        f"{results['wrk'].split(' Copyright')[0]}"
    )
    for note in results["notes"]:
        print(f"note: {note}")
    for mode, where in results["settings"]["modes"].items():
        print(f"\nmode {mode} ({where}):\n")
        print(table(results, mode))
        print()
        print(latency_table(results, mode))
    if "extras_pinning" in results:
        print(f"\nside measurements on ours: {results['extras_pinning']}")
    print_side(results)
    print()
    for t in results["targets"]:
        verdict = {True: "PASS", False: "FAIL", None: "N/A "}[t["passed"]]
        value = "-" if t["value"] is None else t["value"]
        mode = f"{t['mode']}: " if t.get("mode") else ""
        print(f"{verdict}  {mode}{t['name']}: {value}  -- {t['detail']}")
