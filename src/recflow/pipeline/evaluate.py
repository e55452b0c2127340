"""Stage 6: full-ranking metrics for the candidate, the popularity baseline and the champion.

The champion is re-scored on this run's split (its recorded numbers came from other data),
through the same serving-contract scorer as the candidate.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from recflow.config import PipelineConfig
from recflow.pipeline.context import RunContext, make_registry, say, tracking_run
from recflow.registry import Registry

CHAMPION_ALIAS = "champion"
STAGES = ("validation", "test")


def _score_all(scorer: Any, split: Any, features: Any, k: int) -> dict[str, dict[str, float]]:
    from recflow.evaluation import evaluate_scorer

    return {stage: evaluate_scorer(scorer, split, features, k=k, stage=stage) for stage in STAGES}


def run(cfg: PipelineConfig, ctx: RunContext, registry: Registry | None = None) -> dict[str, Any]:
    from recflow.evaluation import popularity_scorer
    from recflow.features import load_features, load_split
    from recflow.models import load_scorer

    registry = registry or make_registry(cfg)
    mlflow_run = tracking_run(cfg, ctx, registry)
    features = load_features(ctx.features_dir)
    split = load_split(ctx.split_dir)
    k = cfg.eval_k

    result: dict[str, Any] = {"k": k}
    result["candidate"] = _score_all(load_scorer(ctx.saved_model_dir), split, features, k)
    result["popularity"] = _score_all(popularity_scorer(features), split, features, k)
    result["champion"] = None
    champion = registry.get_version_by_alias(cfg.registry.model_name, CHAMPION_ALIAS)
    if champion is not None:
        with tempfile.TemporaryDirectory(prefix="champion-") as tmp:
            path = registry.download_version(cfg.registry.model_name, champion.version, Path(tmp))
            result["champion"] = _score_all(load_scorer(path), split, features, k)
        result["champion_version"] = champion.version

    for who in ("candidate", "popularity", "champion"):
        if result[who] is None:
            continue
        for stage, metrics in result[who].items():
            registry.log_metrics(
                mlflow_run, {f"{who}.{stage}.{name}": float(v) for name, v in metrics.items()}
            )
    registry.log_dict(mlflow_run, result, "evaluation/metrics.json")
    ctx.write_json("evaluation.json", result)
    m = f"ndcg@{k}"
    line = (
        f"evaluate (validation {m}): candidate {result['candidate']['validation'][m]:.4f}, "
        f"popularity {result['popularity']['validation'][m]:.4f}"
    )
    if result["champion"] is not None:
        line += f", champion v{result['champion_version']} {result['champion']['validation'][m]:.4f}"
    say(line)
    return result
