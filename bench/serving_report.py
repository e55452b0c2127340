"""serving.md from bench/serving.py's result record: one table per model, and each target's verdict.

Older records (kept under bench/results) lack some measurements; each renders with what it has.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from recflow.ops.machine import summary

P99_TARGET_MS = 20.0
RATE_TARGET = 1000
FLOOR_GAP_TARGET_MS = 1.0


def _us(ms: float) -> int:
    return round(ms * 1000)


def _model_line(m: dict[str, Any]) -> str:
    line = (
        f"{m['kind']} on {m.get('data', 'synthetic data')}: {m['users']} users x {m['items']} "
        f"items, {m.get('events', '?')} events, top_k {m['top_k']}; settings {m.get('config')}"
    )
    recall = {k: round(v, 4) for k, v in (m.get("fit_metrics") or {}).items() if "recall" in k}
    if recall:
        line += f"; validation recall of the retrieval stage {recall}"
    if m.get("fit_reused_from"):
        line += f" (trained weights reused from {m['fit_reused_from']}; exported by this run)"
    return line


def host_lines(m: dict[str, Any]) -> list[str]:
    """What a fixed Python loop, a system call and a thread hand-off cost on the host (records
    from before 2026-12-02 lack them): serving figures compare across hosts only as far as
    these do."""
    if "host_costs" not in m:
        return []
    costs = m["host_costs"]
    mitigations = "; ".join(f"{k}: {v}" for k, v in m.get("cpu_mitigations", {}).items())
    return [
        f"- host: a fixed Python loop {costs['python_loop_ms']} ms, a system call "
        f"{costs['syscall_ns']} ns, a thread hand-off over a pipe "
        f"{costs['thread_handoff_us']} us (measured at start); clock source "
        f"{m.get('clocksource', '?')}; CPU mitigations: {mitigations or 'none'}"
    ]


def gap_lines(r: dict[str, Any]) -> list[str]:
    """The gap target's line: from paired rounds where the record has them (from
    2026-12-02 11:00 UTC), else the difference of the two long runs, as before."""
    t = r["targets"]
    verdict = f"(target <= {FLOOR_GAP_TARGET_MS} ms): **{'met' if t['one_client_gap_met'] else 'NOT met'}**"
    pairs = r.get("paired_gap")
    if not pairs:
        return [f"- one-client p50 - floor p50 = {t['one_client_gap_ms']} ms {verdict}"]
    return [
        f"- one-client p50 - floor p50, median of {pairs['rounds']} paired rounds of "
        f"{pairs['block']} calls each = {pairs['median_gap_ms']} ms {verdict}",
        "  - per round (floor p50 / one-client p50 / gap, ms): "
        + ", ".join(
            f"{f} / {c} / {g}"
            for f, c, g in zip(
                pairs["floor_p50_ms"], pairs["one_client_p50_ms"], pairs["gap_ms"], strict=True
            )
        ),
        f"  - the two long runs above, unpaired: {t['unpaired_gap_ms']} ms",
        *_paced_lines(pairs),
    ]


def _paced_lines(pairs: dict[str, Any]) -> list[str]:
    """The paced floor's line (records from 2026-12-04 09:58 UTC): not the target, a split of
    the gap into the model running slower when its calls are spaced and the rest."""
    if "paced_floor_p50_ms" not in pairs:
        return []
    return [
        "  - diagnostic, not the target: the floor *paced* like one client (each in-process "
        "call after a pause as long as its round's gap; per round p50 ms: "
        + ", ".join(str(p) for p in pairs["paced_floor_p50_ms"])
        + f"); one-client p50 - paced floor p50, median = {pairs['median_gap_over_paced_ms']} ms"
    ]


def header_lines(result: dict[str, Any], title: str) -> list[str]:
    """Title, date, command and code, machine and load, software and host costs of a record."""
    m = result["machine"]
    return [
        f"# {title}",
        "",
        f"- date: {result['date']} (finished {result['finished']})",
        f"- command: `{result['command']}`"
        + (f", code {result['code']}" if result.get("code") else ""),
        f"- machine: {summary(m)}, load average at start "
        f"{m['load_average_at_start']}, at end {result['load_average_at_end']} "
        "(other jobs share this machine)",
        f"- software: Python {m['python']}, TensorFlow {m['tensorflow']}, grpcio {m['grpcio']}",
        *host_lines(m),
    ]


def write_markdown(result: dict[str, Any], path: Path) -> None:
    lines = [
        *header_lines(result, "Serving latency: top-10 Predict over gRPC"),
        f"- open loop: {result['seconds_per_run']} s per run, {result['repeats']} runs per rate "
        "(median p99), rates in increasing order until the first rate not held",
    ]
    for name, r in result["models"].items():
        f, fb, c, t = r["floor"], r["floor_batched"], r["one_client"], r["targets"]
        lines += [
            "",
            f"## {name}",
            "",
            f"- model: {_model_line(r['model'])}",
            f"- server: `{r['server_command']}`",
            f"- load average before gRPC runs {r['load_average_before_gRPC']}, after "
            f"{r['load_average_after']}",
            "",
            "| measurement | requests | errors | p50 ms | p95 ms | p99 ms | max ms | server CPU "
            "us/req | client CPU us/req |",
            "|---|---|---|---|---|---|---|---|---|",
            f"| in-process floor, 1 user per call | {f['calls']} | 0 | {f['p50_ms']} | "
            f"{f['p95_ms']} | {f['p99_ms']} | {f['max_ms']} | {_us(f['cpu_ms_per_call'])} | |",
            f"| in-process, {fb['batch']} users per call ({fb['p50_ms_per_user']} ms per user) "
            f"| {fb['calls']} | 0 | {fb['p50_ms']} | {fb['p95_ms']} | {fb['p99_ms']} | "
            f"{fb['max_ms']} | {_us(fb['cpu_ms_per_call'])} per call | |",
            f"| one client, closed loop, gRPC | {c['requests']} | {c['errors']} | "
            f"{c['p50_ms']} | {c['p95_ms']} | {c['p99_ms']} | {c['max_ms']} | | |",
        ]
        if "status_rpc" in r:  # from 2026-12-03
            st = r["status_rpc"]
            lines.append(
                f"| one client, closed loop, GetModelStatus (no model call) | {st['requests']} "
                f"| {st['errors']} | {st['p50_ms']} | {st['p95_ms']} | {st['p99_ms']} | "
                f"{st['max_ms']} | | |"
            )
        for step in r["open_loop"]:
            for i, o in enumerate(step["runs"], start=1):
                lines.append(
                    f"| open loop {o['rate']:.0f} req/s run {i} (achieved {o['achieved_rps']}) | "
                    f"{o['requests']} | {o['errors']} | {o['p50_ms']} | {o['p95_ms']} | "
                    f"{o['p99_ms']} | {o['max_ms']} | {o['server_cpu_us_per_request']} | "
                    f"{o['client_cpu_us_per_request']} |"
                )
        held = ", ".join(
            f"{s['rate']:.0f}: median p99 {s['median_p99_ms']} ms, {s['errors']} errors, "
            f"{'held' if s['held'] else 'NOT held'}"
            for s in r["open_loop"]
        )
        lines += [
            "",
            f"- rates: {held}",
            *gap_lines(r),
            f"- highest rate with p99 < {P99_TARGET_MS:.0f} ms and no errors (every lower rate "
            f"held too): {t['max_rate_p99_under_20ms']} req/s (target >= {RATE_TARGET}): "
            f"**{'met' if t['rate_met'] else 'NOT met'}**",
        ]
    lines += [
        "",
        "Latency under open loop counts from each request's scheduled send time, so time a",
        "request waited in the load generator is included (its Python garbage collector is",
        "paused during each run, so its own full collections are not counted as server time).",
        "The in-process floor loads the model with the server's session threads. The load",
        "generator, the server and TensorFlow's threads share the same cores, with whatever",
        "else runs on the machine (see the load averages); CPU columns are the server's (its",
        "process and children: with --native_frontend, predictd) and the load generator's CPU",
        "time during each run, divided by its requests (in-process rows: the benchmark",
        "process's CPU time per call, TensorFlow's threads included).",
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
