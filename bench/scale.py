"""`make bench-scale`: the training DAG's stages on generated logs of growing size.

For each size a streaming synthetic log (recflow.data.stream) is written as parquet shards,
then the training DAG's stage functions run on it as Airflow would run them, each in its own
process (so each stage's peak RSS is its own): ingest, validate, features once per size, then
train, export and evaluate for each model. The recipe is the config defaults (recorded in the
results); ``--sasrec-epochs`` is the only override and is recorded when used.

Writes bench/results/scale.{json,md}: each stage's wall time, peak RSS, events/s (training
also examples/s), and the ratios between consecutive sizes against the ratio of their inputs.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from recflow.ops.machine import (
    code_label,
    describe,
    host_costs,
    loadavg,
    same_host,
    summary,
)

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
DAG_ID = "recsys_training"
RUN_ID = "scale"
DEFAULT_SEED = 7


def _params(
    data_dir: Path, work: Path, model: str, extra: dict[str, Any], run_id: str
) -> dict[str, Any]:
    return {
        "data_source": "parquet",
        "data_path": str(data_dir / "interactions"),
        "items_path": str(data_dir / "items.parquet"),
        "model": model,
        "work_dir": str(work),
        **extra,
        "_run_id": run_id,
    }


def _child(stage: str, params: dict[str, Any]) -> dict[str, Any]:
    """Run one stage in this process; returns seconds, peak RSS and training counts."""
    import importlib

    from recflow.config import from_params
    from recflow.pipeline.context import RunContext, make_registry

    params = dict(params)
    run_id = params.pop("_run_id", RUN_ID)
    cfg = from_params(params)
    ctx = RunContext.create(cfg, DAG_ID, run_id)
    registry = make_registry(cfg)
    module = importlib.import_module(f"recflow.pipeline.{stage}")
    started = time.perf_counter()
    module.run(cfg, ctx, registry)
    seconds = time.perf_counter() - started
    out: dict[str, Any] = {"seconds": round(seconds, 2)}
    if stage == "train":
        out.update(_train_counts(cfg, ctx))
    use = resource.getrusage(resource.RUSAGE_SELF)
    out["peak_rss_mb"] = round(use.ru_maxrss / 1024)
    # CPU seconds of the whole process (start-up included): on a shared machine wall time
    # depends on the load, CPU time much less.
    out["cpu_seconds"] = round(use.ru_utime + use.ru_stime, 1)
    return out


def _train_counts(cfg: Any, ctx: Any) -> dict[str, Any]:
    from recflow.features import load_features

    train = json.loads((ctx.run_dir / "train.json").read_text())
    seconds = sum(train.get("history", {}).get("seconds", [])) or train["seconds"]
    features = load_features(ctx.features_dir)
    if cfg.train.model in ("ranking_mlp", "neumf"):
        from recflow.models.pointwise import unique_positives

        per_epoch = unique_positives(features)[0].size * (1 + cfg.train.negatives_per_positive)
        examples = per_epoch * cfg.train.epochs
        return {"train_examples": examples, "examples_per_s": round(examples / seconds)}
    if cfg.train.model in ("sasrec", "sasrec_sqn"):
        # Early stopping may end training before sasrec_epochs; the epochs that ran count.
        epochs = int(train.get("metrics", {}).get("epochs_trained", cfg.train.sasrec.epochs))
        events = int(features.train_user_idx.size) * epochs
        return {
            "train_event_epochs": events,
            "epochs_trained": epochs,
            "examples_per_s": round(events / train["seconds"]),
        }
    return {}


def _run_stage(stage: str, params: dict[str, Any], log: Path) -> dict[str, Any]:
    """Run ``stage`` in a child process; its output (progress lines) streams into ``log``."""
    result_file = log.with_suffix(".result.json")
    result_file.unlink(missing_ok=True)
    cmd = [sys.executable, __file__, "--child", stage, "--params", json.dumps(params)]
    cmd += ["--result", str(result_file)]
    with log.open("a") as fh:
        fh.write(f"\n### {stage} {json.dumps(params)}\n")
        fh.flush()
        done = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0 or not result_file.is_file():
        tail = [line for line in log.read_text().splitlines() if line.strip()][-3:]
        return {"error": f"exit {done.returncode}: " + " | ".join(tail)[-600:]}
    result: dict[str, Any] = json.loads(result_file.read_text())
    return result


def _generate(name: str, root: Path, seed: int) -> tuple[Path, dict[str, Any]]:
    from recflow.data.stream import StreamConfig, write_stream

    events, users, items = SIZES[name]
    data_dir = root / "data" / name
    cfg = StreamConfig(n_events=events, n_users=users, n_items=items, seed=seed)
    manifest = data_dir / "manifest.json"
    if manifest.is_file() and json.loads(manifest.read_text()).get("n_events") == events:
        return data_dir, {"seconds": None, "reused": True}
    started = time.perf_counter()
    write_stream(cfg, data_dir)
    return data_dir, {"seconds": round(time.perf_counter() - started, 2)}


def _ratios(results: dict[str, Any], sizes: list[str]) -> list[dict[str, Any]]:
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


def _markdown(doc: dict[str, Any]) -> str:
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
    lines += _goals(doc)
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


def _model_of(key: str) -> str | None:
    return key.split(".", 1)[0] if "." in key else None


def _seed_in(command: str) -> int:
    """The generator seed of a results file written before files recorded it: its command's."""
    words = command.split()
    return int(words[words.index("--seed") + 1]) if "--seed" in words else DEFAULT_SEED


def _carry(earlier: dict[str, Any], size: dict[str, Any], models: list[str]) -> None:
    """Keep an earlier run's rows for the models this run does not train (same host, recipe
    and log, checked by the caller), so a size's models can run in separate sessions."""
    rows = {k: v for k, v in earlier["stages"].items() if _model_of(k) not in (None, *models)}
    if not rows:
        return
    size["stages"].update(rows)
    earlier_run = {**earlier.get("run", {}), "models": sorted({_model_of(k) for k in rows})}
    size["carried_from"] = [earlier_run, *earlier.get("carried_from", [])]


def _in_stage_order(stages: dict[str, Any]) -> dict[str, Any]:
    """The data stages first, then each model's rows together, whichever run they came from."""
    data = [k for k in DATA_STAGES if k in stages]
    rest = [k for k in stages if k not in data]
    models = list(dict.fromkeys(_model_of(k) for k in rest))
    return {k: stages[k] for k in [*data, *(k for m in models for k in rest if _model_of(k) == m)]}


def _goals(doc: dict[str, Any]) -> list[str]:
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
    kinds = dict.fromkeys(m for k in largest if (m := _model_of(k)) and " [" not in k)
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


def _finish(doc: dict[str, Any]) -> None:
    """Totals per size and the ratios between sizes."""
    for size in doc["sizes"].values():
        size["stages"] = _in_stage_order(size["stages"])
        # rows marked "<stage> [<which run>]" come from another run of this size: kept, not summed
        done = [s for k, s in size["stages"].items() if s.get("seconds") and " [" not in k]
        size["end_to_end_seconds"] = round(sum(s["seconds"] for s in done), 1)
        size["peak_rss_mb"] = max((s.get("peak_rss_mb", 0) for s in done), default=0)
    doc["ratios"] = _ratios(doc["sizes"], [s for s in SIZES if s in doc["sizes"]])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1M,5M,20M")
    parser.add_argument("--models", default="ranking_mlp,sasrec,ease")
    parser.add_argument("--work", default="var/bench-scale", help="scratch folder")
    parser.add_argument("--out", default="bench/results")
    parser.add_argument("--sasrec-epochs", type=int, help="override (recorded) for time")
    parser.add_argument(
        "--eval-users",
        type=int,
        default=5_000,
        help="eval_user_sample for the evaluate stage (0: every user); recorded",
    )
    parser.add_argument(
        "--merge",
        action="store_true",
        help="keep the sizes already in the results file, and at a size run again the rows "
        "of models not in --models (same host, recipe and seed only)",
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument(
        "--render", action="store_true", help="only re-write scale.md (and totals) from scale.json"
    )
    parser.add_argument("--note", action="append", default=[], help="a note for the results")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--params", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        result = _child(args.child, json.loads(args.params))
        Path(args.result).write_text(json.dumps(result))
        return 0

    if args.render:
        path = Path(args.out) / "scale.json"
        rendered: dict[str, Any] = json.loads(path.read_text())
        rendered["notes"] = [*rendered.get("notes", []), *args.note]
        _finish(rendered)
        path.write_text(json.dumps(rendered, indent=2) + "\n")
        (Path(args.out) / "scale.md").write_text(_markdown(rendered))
        return 0

    from recflow.config import TrainConfig
    from recflow.settings import flat_values

    host = describe("tensorflow")
    defaults = TrainConfig()
    flat = flat_values(defaults)
    recipe = {
        k: flat[k]
        for k in (
            "epochs", "batch_size", "embedding_dim", "learning_rate", "negatives",
            "sasrec_epochs", "sasrec_patience_steps", "sasrec_patience_epochs",
            "sasrec_validation_users",
            "sasrec_batch_size", "sasrec_max_len", "sasrec_negatives",
            "sasrec_full_softmax_max_items", "sasrec_large_catalogue_negatives", "ease_lambda",
        )
    }  # fmt: skip
    extra: dict[str, Any] = {"eval_user_sample": args.eval_users}
    notes: list[str] = [
        f"evaluate ranks the full catalogue for a fixed random sample of {args.eval_users} "
        "users (eval_user_sample; 0 = all); metrics carry the sampling half-width"
    ]
    if args.sasrec_epochs:
        extra["sasrec_epochs"] = args.sasrec_epochs
        notes.append(
            f"sasrec_epochs overridden to {args.sasrec_epochs} (default "
            f"{defaults.sasrec.epochs}) to fit the time box; its examples/s is per event-epoch"
        )
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    sizes = [s for s in args.sizes.split(",") if s]
    models = [m for m in args.models.split(",") if m]
    doc: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": summary(host),
        "machine_info": host,
        "recipe": recipe,
        "overrides": extra,
        "seed": args.seed,
        "sizes": {},
        "notes": notes,
    }

    previous = out_dir / "scale.json"
    carried: dict[str, dict[str, Any]] = {}  # size -> its earlier results, for other models' rows
    if args.merge and previous.is_file():
        old = json.loads(previous.read_text())
        if not same_host(old.get("machine_info"), host):
            # Growth ratios between sizes measured on different CPUs say nothing about growth.
            parser.error(
                f"--merge: {previous} was recorded on '{old.get('machine')}', this host is "
                f"'{summary(host)}'; ratios between sizes are only meaningful from one host. "
                "Run every size here without --merge, or write to another --out."
            )
        recorded = {**old, "seed": old.get("seed", _seed_in(old.get("command", "")))}
        for what, here in (("recipe", recipe), ("overrides", extra), ("seed", args.seed)):
            if recorded.get(what) != here:
                parser.error(
                    f"--merge: {previous} was recorded with {what} {recorded.get(what)!r}, "
                    f"this run has {here!r}; rows from different recipes or logs do not add up to one "
                    "run. Run every size again without --merge, or write to another --out."
                )
        doc["sizes"] = {k: v for k, v in old.get("sizes", {}).items() if k not in sizes}
        carried = {k: v for k, v in old.get("sizes", {}).items() if k in sizes}
        doc["earlier_runs"] = [
            *old.get("earlier_runs", []),
            {k: old.get(k) for k in ("command", "date", "overrides") if k in old},
        ]
        doc["notes"] = [*old.get("notes", []), *(n for n in notes if n not in old["notes"])]

    root = Path(args.work).resolve()
    root.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        _finish(doc)
        (out_dir / "scale.json").write_text(json.dumps(doc, indent=2) + "\n")
        (out_dir / "scale.md").write_text(_markdown(doc))

    run_id = f"{RUN_ID}-{datetime.now(UTC):%Y%m%dT%H%M%S}"  # one MLflow run per DAG run
    for name in sizes:
        events = SIZES[name][0]
        data_dir, gen = _generate(name, root, args.seed)
        size: dict[str, Any] = {"generate": gen, "stages": {}}
        size["run"] = {
            "command": doc["command"],
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": doc["machine"],
            "loadavg_start": loadavg(),
            "host_costs": host_costs(),
            "models": models,
            "code": code_label(),
        }
        if name in carried:
            _carry(carried[name], size, models)
        doc["sizes"][name] = size
        log = root / f"{name}.log"
        work = root / "work" / name
        plan = [(s, models[0]) for s in DATA_STAGES]
        plan += [(s, m) for m in models for s in MODEL_STAGES]
        failed_models: set[str] = set()
        for stage, model in plan:
            key = stage if stage in DATA_STAGES else f"{model}.{stage}"
            if model in failed_models and stage != "train":
                continue
            load = loadavg()
            print(f"[bench-scale] {name} {key} (loadavg {load})", flush=True)
            result = _run_stage(stage, _params(data_dir, work, model, extra, run_id), log)
            result["loadavg"] = load
            if result.get("seconds"):
                result["events_per_s"] = round(events / result["seconds"])
            size["stages"][key] = result
            print(f"[bench-scale]   -> {json.dumps(result)}", flush=True)
            if "error" in result:
                if stage in DATA_STAGES:
                    break
                failed_models.add(model)
            save()
        size["run"].update(
            finished=datetime.now(UTC).isoformat(timespec="seconds"), loadavg_end=loadavg()
        )
        save()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
