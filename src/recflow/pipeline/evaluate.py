"""Stage 6: full-ranking metrics for the candidate, the popularity baseline and the champion.

The champion is re-scored on this run's split (its recorded numbers came from other data),
through the same serving-contract scorer as the candidate. Besides the metrics, evaluate
writes the candidate's validation metrics per slice (``slices``) and the per-user validation
NDCG@k of candidate, popularity and champion (same users, same order) to
``per_user_ndcg.npz`` under the run folder, for the gate's paired bootstrap.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from recflow.config import PipelineConfig
from recflow.pipeline.context import RunContext, make_registry, say, tracking_run
from recflow.registry import Registry

CHAMPION_ALIAS = "champion"
STAGES = ("validation", "test")
PER_USER_FILE = "per_user_ndcg.npz"


class _Scored:
    """Metrics per stage plus the validation ranking, kept for per-user values and slices."""

    def __init__(self, scorer: Any, split: Any, features: Any, k: int) -> None:
        from recflow.evaluation.slices import rank_users

        ranked = {s: rank_users(scorer, split, features, k=k, stage=s) for s in STAGES}
        self.metrics = {s: r.metrics(features.n_items) for s, r in ranked.items()}
        self.validation = ranked["validation"]


def _score_all(scorer: Any, split: Any, features: Any, k: int) -> _Scored:
    return _Scored(scorer, split, features, k)


def run(cfg: PipelineConfig, ctx: RunContext, registry: Registry | None = None) -> dict[str, Any]:
    from recflow.evaluation import popularity_scorer
    from recflow.features import load_features, load_split
    from recflow.models import load_scorer

    registry = registry or make_registry(cfg)
    mlflow_run = tracking_run(cfg, ctx, registry)
    features = load_features(ctx.features_dir)
    split = load_split(ctx.split_dir)
    k = cfg.eval_k

    from recflow.evaluation.slices import sliced_metrics
    from recflow.storage import atomic_directory

    result: dict[str, Any] = {"k": k}
    candidate = _score_all(load_scorer(ctx.saved_model_dir), split, features, k)
    popularity = _score_all(popularity_scorer(features), split, features, k)
    result["candidate"] = candidate.metrics
    result["popularity"] = popularity.metrics
    result["champion"] = None
    per_user = {
        "user_ids": features.user_ids[candidate.validation.users].astype(str),
        "candidate": candidate.validation.per_user_ndcg(),
        "popularity": popularity.validation.per_user_ndcg(),
    }
    champion = registry.get_version_by_alias(cfg.registry.model_name, CHAMPION_ALIAS)
    if champion is not None:
        with tempfile.TemporaryDirectory(prefix="champion-") as tmp:
            path = registry.download_version(cfg.registry.model_name, champion.version, Path(tmp))
            scored = _score_all(load_scorer(path), split, features, k)
        result["champion"] = scored.metrics
        result["champion_version"] = champion.version
        per_user["champion"] = scored.validation.per_user_ndcg()
    result["slices"] = {"candidate": sliced_metrics(candidate.validation, features)}
    # np.savez appends ".npz" to names without it; write into a scratch folder, then move.
    with atomic_directory(ctx.run_dir / "per_user") as scratch:
        np.savez(scratch / PER_USER_FILE, **per_user)
    result["per_user_file"] = str(ctx.run_dir / "per_user" / PER_USER_FILE)

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
        line += (
            f", champion v{result['champion_version']} {result['champion']['validation'][m]:.4f}"
        )
    say(line)
    return result
