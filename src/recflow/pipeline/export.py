"""Stage 5: export the SavedModel in the serving contract and check it in a fresh process.

Export comes before the gate so that every run's model is kept in MLflow, promoted or not,
and so that evaluation scores the exact artifact that would be served.
"""

from __future__ import annotations

from recflow.config import PipelineConfig
from recflow.jsontypes import JSONObject
from recflow.pipeline.context import RunContext, make_registry, say, tracking_run
from recflow.registry import Registry

MODEL_ARTIFACT_PATH = "model"
WARMUP_USERS = 8


def run(cfg: PipelineConfig, ctx: RunContext, registry: Registry | None = None) -> JSONObject:
    from recflow.features import load_features
    from recflow.models import check_contract
    from recflow.models.zoo import get_kind

    registry = registry or make_registry(cfg)
    mlflow_run = tracking_run(cfg, ctx, registry)
    features = load_features(ctx.features_dir)
    warmup_ids = [str(u) for u in features.user_ids[:WARMUP_USERS]]
    kind = get_kind(cfg.train.model)
    kind.export(ctx.train_dir, features, ctx.saved_model_dir, cfg.serving.top_k, warmup_ids)
    summary = check_contract(
        ctx.saved_model_dir, top_k=cfg.serving.top_k, sample_user_ids=warmup_ids[:2]
    )
    registry.log_artifacts(mlflow_run, ctx.saved_model_dir, MODEL_ARTIFACT_PATH)
    from recflow.faults import point

    point("export:logged")
    from recflow.contract import CONTRACT_VERSION

    registry.set_tags(mlflow_run, {"serving.contract_version": CONTRACT_VERSION})
    say(f"export: SavedModel meets serving contract {CONTRACT_VERSION} -> {ctx.saved_model_dir}")
    return {"saved_model": str(ctx.saved_model_dir), "contract": summary}
