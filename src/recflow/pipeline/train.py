"""Stage 4: fit the configured model on the training split (progress goes to the task log)."""

from __future__ import annotations

import time
from typing import Any

from recflow.config import PipelineConfig
from recflow.pipeline.context import RunContext, make_registry, say, tracking_run
from recflow.registry import Registry


def run(cfg: PipelineConfig, ctx: RunContext, registry: Registry | None = None) -> dict[str, Any]:
    from recflow.features import load_features

    registry = registry or make_registry(cfg)
    mlflow_run = tracking_run(cfg, ctx, registry)
    features = load_features(ctx.features_dir)
    if cfg.train.model == "popularity":
        say("train: popularity baseline needs no fitting")
        summary: dict[str, Any] = {"model": "popularity", "seconds": 0.0, "final_loss": None}
        ctx.write_json("train.json", summary)
        return summary

    from recflow.models import train_ranking_mlp

    say(
        f"train: {cfg.train.model}, {cfg.train.epochs} epochs, {features.n_users} users x "
        f"{features.n_items} items, {cfg.train.negatives_per_positive} negatives per positive"
    )
    started = time.perf_counter()
    trained = train_ranking_mlp(features, cfg.train, progress=say)
    seconds = time.perf_counter() - started
    ctx.keras_model_path.parent.mkdir(parents=True, exist_ok=True)
    trained.model.save(ctx.keras_model_path)
    for epoch, loss in enumerate(trained.history.get("loss", []), start=1):
        registry.log_metrics(mlflow_run, {"train.loss": float(loss)}, step=epoch)
    losses = trained.history.get("loss", [])
    summary = {
        "model": cfg.train.model,
        "seconds": round(seconds, 2),
        "final_loss": float(losses[-1]) if losses else None,
        "keras_model": str(ctx.keras_model_path),
    }
    registry.log_metrics(mlflow_run, {"train.seconds": seconds})
    ctx.write_json("train.json", summary)
    say(f"train: done in {seconds:.1f} s, final loss {summary['final_loss']}")
    return summary
