"""Stage 4: fit the configured model on the training split (progress goes to the task log)."""

from __future__ import annotations

import time

from recflow.config import PipelineConfig
from recflow.jsontypes import JSONObject
from recflow.pipeline.context import RunContext, make_registry, say, tracking_run
from recflow.pipeline.names import TRAIN_JSON
from recflow.registry import Registry


def run(cfg: PipelineConfig, ctx: RunContext, registry: Registry | None = None) -> JSONObject:
    from recflow.features import load_features, load_split
    from recflow.models.zoo import get_kind

    registry = registry or make_registry(cfg)
    mlflow_run = tracking_run(cfg, ctx, registry)
    kind = get_kind(cfg.train.model)
    features = load_features(ctx.features_dir)
    split = load_split(ctx.split_dir)
    say(
        f"train: {kind.name} ({kind.description}); {features.n_users} users x "
        f"{features.n_items} items, {len(features.train_user_idx)} training events"
    )
    started = time.perf_counter()
    summary = kind.fit(features, split, cfg.train, say, ctx.train_dir)
    seconds = time.perf_counter() - started
    history = summary.get("history", {})
    for name, values in history.items():
        for epoch, value in enumerate(values, start=1):
            registry.log_metrics(mlflow_run, {f"train.{name}": float(value)}, step=epoch)
    # One-off numbers a kind measures while fitting (e.g. two_stage's retrieval recall@N).
    fit_metrics = {k: float(v) for k, v in summary.get("metrics", {}).items()}
    if fit_metrics:
        registry.log_metrics(mlflow_run, {f"train.{k}": v for k, v in fit_metrics.items()})
    losses = history.get("loss", [])
    result = {
        "model": kind.name,
        "seconds": round(seconds, 2),
        "final_loss": float(losses[-1]) if losses else None,
        "history": history,
        "metrics": fit_metrics,
        "train_dir": str(ctx.train_dir),
    }
    registry.log_metrics(mlflow_run, {"train.seconds": seconds})
    notes = [str(n) for n in summary.get("notes", [])]
    if notes:  # e.g. a blend part dropped for scale: MLflow and the model card say so
        result["notes"] = notes
        registry.set_tags(mlflow_run, {"train.notes": " | ".join(notes)[:4900]})
    ctx.write_json(TRAIN_JSON, result)
    say(f"train: done in {seconds:.1f} s" + (f", final loss {losses[-1]:.4f}" if losses else ""))
    return {k: v for k, v in result.items() if k != "history"}
