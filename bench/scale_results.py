"""bench-scale's results record: the sizes and stages it holds, the goals, the ratios between
sizes, and scale.md.
"""

from __future__ import annotations

import json
from typing import Any

SIZES = {  # name -> (events, users, items); "smoke" checks the script in a minute
    "smoke": (60_000, 2_000, 800),
    "1M": (1_000_000, 30_000, 5_000),
    "5M": (5_000_000, 150_000, 20_000),
    "20M": (20_000_000, 600_000, 50_000),
}
DATA_STAGES = ("ingest", "validate", "features")
MODEL_STAGES = ("train", "export", "evaluate")
# The goals for the largest size: each kind's stages with the data stages, end to end.
END_TO_END_GOAL_S = 3600.0
PEAK_RSS_GOAL_MB = 16e9 / 2**20  # the 16 GB, in the MiB that peak_rss_mb counts
THROUGHPUT_GOAL = 0.8  # training examples/s at the largest size over the smallest's


def ratios(results: dict[str, Any], sizes: list[str]) -> list[dict[str, Any]]:
    """Per stage: time ratio between consecutive sizes over their event ratio."""
    out = []
    for a, b in zip(sizes, sizes[1:], strict=False):
        input_ratio = SIZES[b][0] / SIZES[a][0]
        for key, stage_a in results[a]["stages"].items():
            stage_b = results[b]["stages"].get(key, {})
            if not stage_a.get("seconds") or not stage_b.get("seconds"):
                continue
            time_ratio = stage_b["seconds"] / stage_a["seconds"]
            row = {
                "stage": key,
                "from": a,
                "to": b,
                "input_ratio": round(input_ratio, 2),
                "time_ratio": round(time_ratio, 2),
                "growth_over_input": round(time_ratio / input_ratio, 2),
                "goal_met": time_ratio / input_ratio <= 1.3,
            }
            if stage_a.get("cpu_seconds") and stage_b.get("cpu_seconds"):
                # CPU time depends much less on other jobs' load than wall time does
                cpu_ratio = stage_b["cpu_seconds"] / stage_a["cpu_seconds"]
                row["cpu_growth_over_input"] = round(cpu_ratio / input_ratio, 2)
            if stage_a.get("examples_per_s") and stage_b.get("examples_per_s"):
                row["throughput_ratio"] = round(
                    stage_b["examples_per_s"] / stage_a["examples_per_s"], 2
                )
            out.append(row)
    return out


def markdown(doc: dict[str, Any]) -> str:
    lines = [
        "# bench-scale: the training DAG's stages on generated logs",
        "",
        f"{doc['date']} · {doc['machine']} · `{doc['command']}`",
        "",
        f"Recipe (config defaults): `{json.dumps(doc['recipe'])}`",
        "",
    ]
    for name, size in doc["sizes"].items():
        ev, us, it = SIZES[name]
        lines += [
            f"## {name}: {ev:,} events, {us:,} users, {it:,} items",
            "",
            f"generate: {size['generate']}; stages below, end to end: "
            f"{size.get('end_to_end_seconds')} s, peak RSS {size.get('peak_rss_mb')} MB",
            "",
        ]
        for label, run in (
            ("Run", size.get("run")),
            *(("Rows carried from the run", r) for r in size.get("carried_from", [])),
        ):
            if not run:
                continue
            models = f" (models: {', '.join(run['models'])})" if run.get("models") else ""
            code = f", code {run['code']}" if run.get("code") else ""
            costs = run.get("host_costs")
            costs_text = (
                f"; at start a fixed Python loop {costs['python_loop_ms']} ms, a system call "
                f"{costs['syscall_ns']} ns, a thread hand-off {costs['thread_handoff_us']} us"
                if costs
                else ""
            )
            lines += [
                f"{label}{models}{code}: {run.get('date')} to {run.get('finished', 'unfinished')} on "
                f"{run.get('machine')}; load average at start {run.get('loadavg_start')}, "
                f"at end {run.get('loadavg_end')}{costs_text}; `{run.get('command')}`",
                "",
            ]
        lines += [
            "| stage | seconds | CPU s | peak RSS MB | events/s | train examples/s | loadavg | note |",
            "| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |",
        ]
        for key, st in size["stages"].items():
            lines.append(
                f"| {key} | {st.get('seconds', '')} | {st.get('cpu_seconds', '')} | "
                f"{st.get('peak_rss_mb', '')} | "
                f"{st.get('events_per_s', '')} | {st.get('examples_per_s', '')} | "
                f"{st.get('loadavg', '')} | {st.get('error', st.get('note', ''))} |"
            )
        lines.append("")
    lines += goals(doc)
    if doc["ratios"]:
        lines += [
            "## Growth between sizes (goal: time ratio / input ratio <= 1.3)",
            "",
            "| stage | sizes | input x | time x | growth/input | goal | CPU s growth/input "
            "| throughput x |",
            "| --- | --- | ---: | ---: | ---: | --- | ---: | ---: |",
        ]
        for r in doc["ratios"]:
            lines.append(
                f"| {r['stage']} | {r['from']}->{r['to']} | {r['input_ratio']} | "
                f"{r['time_ratio']} | {r['growth_over_input']} | "
                f"{'met' if r['goal_met'] else 'MISSED'} | {r.get('cpu_growth_over_input', '')} | "
                f"{r.get('throughput_ratio', '')} |"
            )
    lines += ["", *(f"- {n}" for n in doc.get("notes", []))]
    return "\n".join(lines) + "\n"


def model_of(key: str) -> str | None:
    return key.split(".", 1)[0] if "." in key else None


def in_stage_order(stages: dict[str, Any]) -> dict[str, Any]:
    """The data stages first, then each model's rows together, whichever run they came from."""
    data = [k for k in DATA_STAGES if k in stages]
    rest = [k for k in stages if k not in data]
    models = list(dict.fromkeys(model_of(k) for k in rest))
    return {k: stages[k] for k in [*data, *(k for m in models for k in rest if model_of(k) == m)]}


def goals(doc: dict[str, Any]) -> list[str]:
    """Per kind at the largest size: the data stages plus its own, end to end, against the
    60-minute and 16 GB goals; its training throughput against the smallest size's."""
    names = [s for s in SIZES if s in doc["sizes"]]
    if not names:
        return []
    largest = doc["sizes"][names[-1]]["stages"]
    smallest = doc["sizes"][names[0]]["stages"]
    data = [largest.get(k, {}) for k in DATA_STAGES]
    lines = [
        f"## Goals at {names[-1]} (each kind with the data stages, end to end)",
        "",
        f"| kind | seconds | minutes | peak RSS MB | within {END_TO_END_GOAL_S / 60:.0f} min and "
        f"{PEAK_RSS_GOAL_MB * 2**20 / 1e9:.0f} GB | train examples/s vs {names[0]} |",
        "| --- | ---: | ---: | ---: | --- | ---: |",
    ]
    kinds = dict.fromkeys(m for k in largest if (m := model_of(k)) and " [" not in k)
    for kind in kinds:
        own = [largest.get(f"{kind}.{stage}", {}) for stage in MODEL_STAGES]
        if not all(st.get("seconds") for st in data + own):
            failed = next((st["error"] for st in own if st.get("error")), "stages missing")
            # a stage's error ends with the exception's own line: the part worth showing
            reason = failed.rsplit(" | ", 1)[-1].strip(" |").split(": ", 1)[-1]
            lines.append(f"| {kind} | | | | not run to the end: {reason} | |")
            continue
        seconds = sum(st["seconds"] for st in data + own)
        peak = max(st.get("peak_rss_mb", 0) for st in data + own)
        met = seconds <= END_TO_END_GOAL_S and peak <= PEAK_RSS_GOAL_MB
        rate = largest[f"{kind}.train"].get("examples_per_s")
        base = smallest.get(f"{kind}.train", {}).get("examples_per_s")
        ratio = ""
        if rate and base and names[-1] != names[0]:
            share = rate / base
            verdict = "met" if share >= THROUGHPUT_GOAL else "MISSED"
            ratio = f"{share:.0%} (goal {THROUGHPUT_GOAL:.0%}: {verdict})"
        lines.append(
            f"| {kind} | {seconds:,.1f} | {seconds / 60:.2f} | {peak} | "
            f"{'met' if met else 'MISSED'} | {ratio} |"
        )
    return [*lines, ""]


def finish(doc: dict[str, Any]) -> None:
    """Totals per size and the ratios between sizes."""
    for size in doc["sizes"].values():
        size["stages"] = in_stage_order(size["stages"])
        # rows marked "<stage> [<which run>]" come from another run of this size: kept, not summed
        done = [s for k, s in size["stages"].items() if s.get("seconds") and " [" not in k]
        size["end_to_end_seconds"] = round(sum(s["seconds"] for s in done), 1)
        size["peak_rss_mb"] = max((s.get("peak_rss_mb", 0) for s in done), default=0)
    doc["ratios"] = ratios(doc["sizes"], [s for s in SIZES if s in doc["sizes"]])
