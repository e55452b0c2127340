"""`make bench-scale`: the training DAG's stages on generated logs of growing size.

For each size a streaming synthetic log (recflow.data.stream) is written as parquet shards,
then the training DAG's stage functions run on it as Airflow would run them, each in its own
process (so each stage's peak RSS is its own): ingest, validate, features once per size, then
train, export and evaluate for each model. The recipe is the config defaults (recorded in the
results); ``--sasrec-epochs`` is the only override and is recorded when used.

Writes bench/results/scale.{json,md} (the record and its tables: scale_results.py): each
stage's wall time, peak RSS, events/s (training also examples/s), and the ratios between
consecutive sizes against the ratio of their inputs.
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
    host_costs,
    loadavg,
    results_header,
    same_host,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale_results import (  # noqa: E402 (bench/scale_results.py, same folder)
    DATA_STAGES,
    MODEL_STAGES,
    SIZES,
    finish,
    markdown,
    model_of,
)

DAG_ID = "recsys_training"
RUN_ID = "scale"
DEFAULT_SEED = 7
# every kind the goals name; EASE refuses the sizes its items x items matrix cannot hold
MODEL_KINDS = ("ranking_mlp", "two_stage", "sasrec", "ease")


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


def _seed_in(command: str) -> int:
    """The generator seed of a results file written before files recorded it: its command's."""
    words = command.split()
    return int(words[words.index("--seed") + 1]) if "--seed" in words else DEFAULT_SEED


def _carried_rows(earlier: dict[str, Any], models: list[str]) -> dict[str, dict[str, Any]]:
    """An earlier run's rows of the models this run does not train, each naming (``run``) the
    date of the run that measured it, which a row keeps however many merges carry it. Rows
    written before rows named their run are the earlier run's own only when it carried none;
    otherwise which run measured them is unknown, and they are refused."""
    rows = {k: v for k, v in earlier["stages"].items() if model_of(k) not in (None, *models)}
    untagged = sorted(k for k, v in rows.items() if "run" not in v)
    if untagged and earlier.get("carried_from"):
        raise ValueError(
            f"rows {', '.join(untagged)} do not name the run that measured them, and the file "
            "joins several runs; re-run those models (list them in --models) or write to "
            "another --out"
        )
    own = earlier.get("run", {}).get("date")
    return {k: v if "run" in v else {**v, "run": own} for k, v in rows.items()}


def _carry(earlier: dict[str, Any], size: dict[str, Any], models: list[str]) -> None:
    """Keep an earlier run's rows for the models this run does not train (same host, recipe
    and log, checked by the caller), so a size's models can run in separate sessions. The
    runs listed as carried are those whose rows are still in the file."""
    rows = _carried_rows(earlier, models)
    size["stages"].update(rows)
    runs = [earlier.get("run", {}), *earlier.get("carried_from", [])]
    size["carried_from"] = [
        {**run, "models": sorted({model_of(k) for k, v in rows.items() if v["run"] == date})}
        for run in runs
        if (date := run.get("date")) and any(v["run"] == date for v in rows.values())
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1M,5M,20M", help="names in SIZES (also smoke)")
    parser.add_argument("--models", default=",".join(MODEL_KINDS))
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
        finish(rendered)
        path.write_text(json.dumps(rendered, indent=2) + "\n")
        (Path(args.out) / "scale.md").write_text(markdown(rendered))
        return 0

    from recflow.config import TrainConfig
    from recflow.settings import flat_values

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
        **results_header("tensorflow"),
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
        if not same_host(old.get("machine_info"), doc["machine_info"]):
            # Growth ratios between sizes measured on different CPUs say nothing about growth.
            parser.error(
                f"--merge: {previous} was recorded on '{old.get('machine')}', this host is "
                f"'{doc['machine']}'; ratios between sizes are only meaningful from one host. "
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
        for name, earlier in carried.items():
            try:
                _carried_rows(earlier, models)
            except ValueError as err:
                parser.error(f"--merge: {previous} at {name}: {err}")
        doc["earlier_runs"] = [
            *old.get("earlier_runs", []),
            {k: old.get(k) for k in ("command", "date", "overrides") if k in old},
        ]
        doc["notes"] = [*old.get("notes", []), *(n for n in notes if n not in old["notes"])]

    root = Path(args.work).resolve()
    root.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        finish(doc)
        (out_dir / "scale.json").write_text(json.dumps(doc, indent=2) + "\n")
        (out_dir / "scale.md").write_text(markdown(doc))

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
            result["run"] = size["run"]["date"]
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
