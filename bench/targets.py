"""The benchmark's targets: each one's mode (None: not a load-run figure), the figures it
compares, its measured value, threshold and PASS/FAIL (None where it was not measured), read
from the results: per mode, hit and miss throughput and the hit tail against the floors, and
once, Redis commands per hit, the miss's writes in one round trip, streaming RSS growth.
"""

from __future__ import annotations

import statistics
from typing import Any

#: Per mode: hit req/s over constant's (at least), hit p99 over constant's (at most), miss req/s
#: over nocache's (at least); each ratio taken in the same round and mode, median of rounds.
THRESHOLDS: dict[str, dict[str, float]] = {
    "cpu-bound": {"hit_x_constant": 1.5, "hit_p99_x_constant": 2.0, "miss_x_nocache": 0.9},
    "unpinned": {"hit_x_constant": 2.0, "miss_x_nocache": 0.95},
}
#: Under this CPU utilisation the uncached app's miss runs wait on the upstream, not the CPU.
LATENCY_BOUND_BELOW = 0.8


def _rounds(variants: dict[str, Any], name: str, mode: str) -> dict[int, dict[str, Any]]:
    data = variants.get(name, {})
    if data.get("status") != "ran":
        return {}
    return {r["round"]: r for r in data.get("rounds", []) if r.get("mode") == mode}


def _same_round(
    ours: dict[int, dict[str, Any]], base: dict[int, dict[str, Any]], kind: str, figure: str
) -> list[float]:
    """ours' ``figure`` over base's, for each round both measured (in one mode)."""
    out = []
    for rnd, r in sorted(ours.items()):
        b = base.get(rnd)
        if b is None or kind not in r or kind not in b:
            continue
        x, y = r[kind].get(figure), b[kind].get(figure)
        if x is not None and y:
            out.append(x / y)
    return out


def _ratio_target(
    mode: str,
    name: str,
    compares: str,
    ratios: list[float],
    threshold: float,
    *,
    at_most: bool = False,
    missing: str,
) -> dict[str, Any]:
    value = statistics.median(ratios) if ratios else None
    passed = None if value is None else (value <= threshold if at_most else value >= threshold)
    return {
        "mode": mode,
        "name": name,
        "compares": compares,
        "value": None if value is None else round(value, 3),
        "threshold": threshold,
        "passed": passed,
        "detail": missing
        if value is None
        else f"{compares}; median of {len(ratios)} rounds "
        f"(min {min(ratios):.2f}, max {max(ratios):.2f})",
    }


def load_targets(results: dict[str, Any], mode: str) -> list[dict[str, Any]]:
    """The targets of one mode's load runs."""
    variants = results["variants"]
    limits = THRESHOLDS[mode]
    ours = _rounds(variants, "ours", mode)
    constant = _rounds(variants, "constant", mode)
    nocache = _rounds(variants, "nocache", mode)
    out = [
        _ratio_target(
            mode,
            f"hit throughput >= {limits['hit_x_constant']:g}x constant",
            f"ours hit req/s / constant hit req/s, same round, {mode}",
            _same_round(ours, constant, "hit", "rps"),
            limits["hit_x_constant"],
            missing="ours did not run",
        )
    ]
    if "hit_p99_x_constant" in limits:
        out.append(
            _ratio_target(
                mode,
                f"hit p99 <= {limits['hit_p99_x_constant']:g}x constant's p99",
                f"ours hit p99 / constant hit p99 (wrk), same round, {mode}",
                _same_round(ours, constant, "hit", "p99_ms"),
                limits["hit_p99_x_constant"],
                at_most=True,
                missing="ours did not run",
            )
        )
    miss = _ratio_target(
        mode,
        f"miss throughput >= {limits['miss_x_nocache']:g}x nocache",
        f"ours miss req/s / nocache miss req/s, same round, {mode}",
        _same_round(ours, nocache, "miss", "rps"),
        limits["miss_x_nocache"],
        missing="needs both ours and nocache",
    )
    # Beside it, the same comparison in CPU: nocache's CPU per miss over ours' (1.0: a miss
    # costs ours no more CPU than the uncached app; 0.5: twice as much).
    cpu_ratios = _same_round(nocache, ours, "miss", "cpu_us_per_request")
    utilisation = _utilisation(nocache)
    ours_utilisation = _utilisation(ours)
    if cpu_ratios:
        miss["cpu_us_ratio"] = round(statistics.median(cpu_ratios), 3)
        miss["detail"] += (
            f"; CPU per miss, nocache us / ours us: {miss['cpu_us_ratio']:.2f} "
            f"(min {min(cpu_ratios):.2f}, max {max(cpu_ratios):.2f})"
        )
    if utilisation:
        util = statistics.median(utilisation)
        miss["nocache_cpu_utilisation"] = round(util, 3)
        if util < LATENCY_BOUND_BELOW:
            settings = results["settings"]
            conns, delay = settings["connections"], settings["upstream_delay_ms"]
            miss["detail"] += (
                f"; nocache's worker ran at {util:.0%} CPU: its miss req/s is bound by "
                f"latency ({conns} connections / {delay} ms = {conns * 1000 / delay:,.0f} req/s "
                "at most), not CPU, so the req/s ratio says how close ours stays to that bound "
                "and the CPU ratio is the comparison of cost"
            )
    if ours_utilisation:
        miss["ours_cpu_utilisation"] = round(statistics.median(ours_utilisation), 3)
        miss["detail"] += f"; ours' worker ran at {miss['ours_cpu_utilisation']:.0%} CPU"
    out.append(miss)
    return out


def _utilisation(rounds: dict[int, dict[str, Any]]) -> list[float]:
    """The worker's CPU utilisation in each miss run of ``rounds``."""
    return [
        r["miss"]["cpu_utilisation"]
        for r in rounds.values()
        if r.get("miss", {}).get("cpu_utilisation") is not None
    ]


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each with its measured value and PASS/FAIL (None: not measured)."""
    out: list[dict[str, Any]] = []
    for mode in results["settings"]["modes"]:
        out.extend(load_targets(results, mode))
    out.extend(_side_targets(results))
    return out


def _side_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The targets of the side measurements on ours (once per run, not per mode)."""
    out: list[dict[str, Any]] = []
    rc = results.get("redis_commands")
    if isinstance(rc, dict) and "error" not in rc:
        sent = rc["sent_per_hit"]
        # The namespace generation is read once per generation_check_interval (1 s), as a
        # GET and an EVAL of the read script in one round trip: not a hit's own command.
        generation_checks = min(sent.get("get", 0.0), sent.get("eval", 0.0))
        per_hit = rc["sent_commands_per_hit"] - 2 * generation_checks
        out.append(
            {
                "name": "1 Redis command per hit (URL without Vary)",
                "value": round(per_hit, 3),
                "threshold": 1,
                "passed": per_hit <= 1.0,
                "detail": "sent per hit: "
                + ", ".join(f"{k} {v:g}" for k, v in sent.items())
                + f" (INFO commandstats: {rc['commands_per_hit']:g}); less the generation"
                f" check (GET and EVAL once a second, {generation_checks:g} per hit)",
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
    for t in out:
        t.setdefault("mode", None)
    return out
