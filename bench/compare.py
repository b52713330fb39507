#!/usr/bin/env python3
"""Two benchmark results side by side: before and after a change, figure by figure.

    python bench/compare.py bench/results/before.json bench/results/after.json
    python bench/compare.py OLD.json NEW.json --variants ours --runs hit

For each mode both results measured, each variant both ran and each run (hit, miss): req/s,
its ratio to the constant floor (same round), the worker's CPU per request and the latency
distribution (p50, p90, p99, p99.9, max), each a median over rounds, with after/before. A
result written before the benchmark had modes counts as the mode its pinning was (cpu-bound
when pinned); figures it did not record show as "-". Standard library only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

#: (label, key in a run's summary, format)
ROWS = (
    ("req/s", "rps", ",.0f"),
    ("x constant", "ratio_to_constant", ".2f"),
    ("CPU us/req", "cpu_us_per_request", ",.0f"),
    ("CPU %", "cpu_utilisation", ".0%"),
    ("p50 ms", "p50_ms", ".2f"),
    ("p90 ms", "p90_ms", ".2f"),
    ("p99 ms", "p99_ms", ".2f"),
    ("p99.9 ms", "p99_9_ms", ".2f"),
    ("max ms", "max_ms", ".2f"),
)


def by_mode(results: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """variant -> mode -> the variant's summary in that mode (run kind -> figures)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    settings = results.get("settings", {})
    legacy_mode = "unpinned" if settings.get("pinning") == "none" else "cpu-bound"
    for name, data in results.get("variants", {}).items():
        summary = data.get("summary") or {}
        if results.get("schema", 1) < 2:  # one mode, summary keyed by run kind
            summary = {legacy_mode: summary} if summary else {}
        out[name] = summary
    return out


def label(results: dict[str, Any], path: Path) -> str:
    git = results.get("git", {})
    commit = git.get("commit", "?")[:9] if isinstance(git, dict) else "?"
    return f"{path.name} ({results.get('date', '?')[:16]}, {commit})"


def cell(summary: dict[str, Any] | None, key: str, fmt: str) -> tuple[str, float | None]:
    figure = (summary or {}).get(key)
    if not isinstance(figure, dict):
        return "-", None
    value = float(figure["median"])
    return format(value, fmt), value


def compare(
    before: dict[str, Any], after: dict[str, Any], variants: list[str] | None, runs: list[str]
) -> list[str]:
    old, new = by_mode(before), by_mode(after)
    lines: list[str] = []
    names = [n for n in new if n in old and (variants is None or n in variants)]
    modes = [
        m for m in ("cpu-bound", "unpinned") if any(m in new[n] and m in old[n] for n in names)
    ]
    for mode in modes:
        lines.append(f"\nmode {mode}")
        lines.append(
            f"{'variant':<15} {'run':<4} {'figure':<11} {'before':>10} {'after':>10}  after/before"
        )
        for name in names:
            if mode not in old[name] or mode not in new[name]:
                continue
            for run in runs:
                a, b = old[name][mode].get(run), new[name][mode].get(run)
                if a is None and b is None:
                    continue
                for text, key, fmt in ROWS:
                    (a_text, a_value), (b_text, b_value) = cell(a, key, fmt), cell(b, key, fmt)
                    ratio = f"{b_value / a_value:.3f}" if a_value and b_value is not None else "-"
                    lines.append(
                        f"{name:<15} {run:<4} {text:<11} {a_text:>10} {b_text:>10}  {ratio:>12}"
                    )
                lines.append("")
    if not modes:
        lines.append("no mode and variant measured in both results")
    return lines


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python bench/compare.py", description=__doc__.split("\n")[0])
    p.add_argument("before", type=Path, help="the earlier result (bench/results/TAG.json)")
    p.add_argument("after", type=Path, help="the later result")
    p.add_argument("--variants", help="comma-separated subset (default: every one in both)")
    p.add_argument("--runs", default="hit,miss", help="hit, miss or both (default hit,miss)")
    args = p.parse_args(argv)
    runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    if not runs or any(r not in ("hit", "miss") for r in runs):
        p.error("--runs takes hit, miss or hit,miss")
    variants = [v.strip() for v in args.variants.split(",")] if args.variants else None
    before = json.loads(args.before.read_text())
    after = json.loads(args.after.read_text())
    print(f"before: {label(before, args.before)}\nafter:  {label(after, args.after)}")
    print("\n".join(compare(before, after, variants, runs)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
