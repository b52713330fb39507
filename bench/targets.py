"""The benchmark's targets: each one's measured value, threshold and PASS/FAIL (None where it
was not measured), read from the summarised results: hit and miss throughput against the
floors, Redis commands per hit, the miss's writes in one round trip, streaming RSS growth.
"""

from __future__ import annotations

import statistics


def targets(results: dict[str, object]) -> list[dict[str, object]]:
    """The issue's targets, each with its measured value and PASS/FAIL (None: not measured)."""
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
