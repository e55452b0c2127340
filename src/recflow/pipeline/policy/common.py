"""What every policy stage shares: the run folder layout, the MLflow run, the promoter."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recflow.pipeline.context import DAG_ID_TAG, DAG_RUN_TAG, RunContext
from recflow.storage import safe_name

if TYPE_CHECKING:
    import numpy as np

    from recflow.config import PolicyConfig
    from recflow.registry import Registry

POLICY_ARTIFACT_PATH = "policy"
CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS = "previous"
# split summary key -> MLflow metric: the sizes of both parts, recorded by learn_policies
SPLIT_METRICS = {
    "learn_rounds": "split.learn_rounds",
    "holdout_rounds": "split.holdout_rounds",
    "learn_requests": "split.learn_requests",
    "holdout_requests": "split.holdout_requests",
}


def run_context(cfg: PolicyConfig, dag_id: str, run_id: str) -> RunContext:
    return RunContext(dag_id, run_id, cfg.runs_dir / safe_name(dag_id) / safe_name(run_id))


def feedback_dir(ctx: RunContext) -> Path:
    return ctx.run_dir / "feedback"


def policies_dir(ctx: RunContext) -> Path:
    return ctx.run_dir / "policies"


def from_airflow(context: Mapping[str, Any]) -> tuple[PolicyConfig, RunContext]:
    """Config from the run's params and the run's identity, inside an Airflow task."""
    from recflow.config import from_policy_params

    cfg = from_policy_params(dict(context["params"]))
    return cfg, run_context(cfg, context["dag"].dag_id, context["run_id"])


def make_registry(cfg: PolicyConfig) -> Registry:
    from recflow.registry import make_registry as _make

    return _make(cfg.tracking_uri, cfg.artifact_root)


def tracking_run(cfg: PolicyConfig, ctx: RunContext, registry: Registry) -> str:
    """The one MLflow run of this DAG run, found by its tags (retry-safe), created on first use.

    Same tags as the training pipeline's (``recflow.pipeline.context.tracking_run``), in the
    policy experiment.
    """
    tags = {DAG_RUN_TAG: ctx.run_id, DAG_ID_TAG: ctx.dag_id}
    existing = registry.find_run(cfg.registry.experiment, tags)
    if existing:
        return existing
    from recflow.registry import code_version

    version = code_version()
    tags = {
        **tags,
        "mlflow.source.git.commit": str(version.get("mlflow.source.git.commit", "unknown")),
        "recflow.version": str(version.get("recflow.version", "unknown")),
        "recflow.run_dir": str(ctx.run_dir),
    }
    return registry.start_run(cfg.registry.experiment, f"{ctx.dag_id}:{ctx.run_id}", tags)


def make_promoter(cfg: PolicyConfig) -> Any:
    """A Promoter for the policy's serving model name, on the configured model server."""
    from recflow.promotion import Promoter
    from recflow.serving.client import ServingClient

    client = ServingClient(
        cfg.server_address,
        timeout=cfg.serving.timeout_seconds,
        reload_timeout=cfg.serving.reload_timeout_seconds,
        attempts=cfg.serving.rpc_attempts,
    )
    return Promoter(
        client,
        cfg.model_config_file,
        cfg.serving.model_name,
        cfg.model_base_path,
        load_timeout=cfg.serving.load_timeout_seconds,
    )


def exported_outputs(
    saved_model_dir: Path, context: np.ndarray, epsilon: np.ndarray
) -> dict[str, np.ndarray]:
    """The exported SavedModel's ``serving_default`` answers, in this process (TF only)."""
    import numpy as np
    import tensorflow as tf

    from recflow.bandits.export import INPUT_CONTEXT, INPUT_EPSILON

    module = tf.saved_model.load(str(saved_model_dir))
    fn = module.signatures["serving_default"]
    out = fn(
        **{
            INPUT_CONTEXT: tf.constant(np.asarray(context, dtype=np.float32)),
            INPUT_EPSILON: tf.constant(np.asarray(epsilon, dtype=np.float32)),
        }
    )
    return {k: v.numpy() for k, v in out.items()}
