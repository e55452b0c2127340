"""What the soak's RSS samples say (slopes after warm-up, per window, around hot swaps), and
soak.md from bench/soak.py's result record."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from recflow.ops.machine import summary

RSS_SLOPE_GOAL = 1.0  # MB per minute after warm-up


def _slope(points: list[tuple[float, float]], places: int) -> float | None:
    """Least-squares MB per minute through (seconds, MB) points; None below three points."""
    if len(points) < 3:
        return None
    minutes = np.asarray([t for t, _ in points]) / 60.0
    return round(float(np.polyfit(minutes, np.asarray([mb for _, mb in points]), 1)[0]), places)


def slope_mb_per_min(samples: list[tuple[float, float]], after_s: float) -> float | None:
    return _slope([(t, mb) for t, mb in samples if t >= after_s], 3)


def swap_steps(
    samples: list[tuple[float, float]], swaps: list[float], settle_s: float = 30.0
) -> list[dict[str, Any]]:
    """At each hot swap: RSS just before it, the highest in the ``settle_s`` after it, and the
    slope from then to the next swap (traffic alone), so swap steps and request-driven growth
    are told apart."""
    out = []
    for i, at in enumerate(swaps):
        before = [mb for t, mb in samples if t < at]
        after = [mb for t, mb in samples if at < t <= at + settle_s]
        nxt = swaps[i + 1] if i + 1 < len(swaps) else float("inf")
        seg = [(t, mb) for t, mb in samples if at + settle_s <= t < nxt]
        out.append({"at_s": at, "before_mb": before[-1] if before else None,
                    "max_after_mb": max(after) if after else None,
                    "slope_until_next_swap_mb_per_min": _slope(seg, 2)})  # fmt: skip
    return out


def window_slopes(samples: list[tuple[float, float]], every_s: float) -> list[dict[str, Any]]:
    """RSS slope in each window between hot swaps: a leak stays, a warm-up fades."""
    out, start, end = [], 0.0, max(t for t, _ in samples)
    while start < end:
        slope = _slope([(t, mb) for t, mb in samples if start < t <= start + every_s], 2)
        if slope is not None:
            out.append({"from_s": start, "to_s": start + every_s, "mb_per_min": slope})
        start += every_s
    return out


def write_markdown(r: dict[str, Any], path: Path) -> None:
    m, s = r["machine"], r["soak"]
    w, h, rss = s["well_formed"], s["hostile"], s["rss_mb"]
    lines = [
        "# Soak: open-loop load, hot swaps and hostile requests",
        "",
        f"- date: {r['date']}",
        f"- command: `{r['command']}`",
        f"- machine: {summary(m)}, load average at start "
        f"{m['load_average_at_start']}, at end {r['load_average_at_end']} (shared machine)",
        f"- software: Python {m['python']}, TensorFlow {m['tensorflow']}, grpcio {m['grpcio']}",
        f"- model: {r['model']['kind']} on the seeded synthetic generator at MovieLens-100K size "
        f"({r['model']['users']} users x {r['model']['items']} items, {r['model']['events']} "
        f"events), top_k {r['model']['top_k']}",
        f"- server: `{s['server_command']}`",
        f"- {r['args']['minutes']} min at {r['args']['rate']} req/s, a hot swap every "
        f"{r['args']['swap_seconds']} s, a hostile request every {r['args']['hostile_seconds']} s",
        "",
        "## Single-request bound (fresh server, one request of the largest allowed size)",
        "",
        "| config | rows | RSS before MB | RSS after MB | peak RSS growth MB | next size up |",
        "|---|---|---|---|---|---|",
        *(
            f"| {b['config']} | {b['rows']} | {b['rss_before_mb']} | {b['rss_after_mb']} | "
            f"{b['peak_rss_growth_mb']} | {b['one_row_over_limit']} in "
            f"{b['one_row_over_limit_ms']} ms |"
            for b in r["single_request"]
        ),
        "",
        "## Soak",
        "",
        f"- well-formed requests: {w['requests']}, errors {w['errors']} (goal 0) "
        f"{w['error_codes'] or ''}; p50 {w['p50_ms']} ms, p99 {w['p99_ms']} ms, max {w['max_ms']} ms",
        f"- hostile requests: {h['requests']}; unexpected outcomes: {h['unexpected'] or 'none'}",
        f"- hostile p99 ms by kind: {h['p99_ms_by_kind']}",
        f"- hot swaps: {len(s['swaps'])} ({', '.join(str(x['seconds']) + ' s' for x in s['swaps'])})",
        f"- RSS: {rss['start']} MB at start, {rss['end']} MB at end, max {rss['max']} MB; slope "
        f"after {r['args']['warmup_seconds']} s: **{rss['slope_after_warmup_mb_per_min']} MB/min** "
        f"(goal < {RSS_SLOPE_GOAL})",
        "- RSS slope per window (MB/min): "
        + ", ".join(
            f"{w['from_s']:.0f}-{w['to_s']:.0f} s: {w['mb_per_min']}"
            for w in rss.get("slope_by_window", [])
        ),
        "- at each hot swap, RSS before -> highest in the 30 s after (MB), then the slope until "
        "the next swap (MB/min): "
        + "; ".join(
            f"{w['at_s']:.0f} s: {w['before_mb']} -> {w['max_after_mb']}, "
            f"{w['slope_until_next_swap_mb_per_min']}"
            for w in rss.get("swap_steps", [])
        ),
        f"- server alive at end: {s['server_alive_at_end']}",
        "",
        "A leak shows as a steady slope in every window; a warm-up as slopes that fade. The",
        "server's RSS includes what the allocator keeps after the largest requests (see the",
        "single-request table); bench/results/soak-diagnosis.md separates the causes.",
        "",
        "Hostile outcomes (kind:status = count):",
        "",
        *(f"- {k} = {v}" for k, v in h["outcomes"].items()),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
