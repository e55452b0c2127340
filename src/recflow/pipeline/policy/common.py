"""What the policy stages share beyond the pipeline core (recflow.pipeline.context): their
folders in the run folder, the split metrics, and the exported policy's own answers."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from recflow.pipeline.context import RunContext

if TYPE_CHECKING:
    import numpy as np

POLICY_ARTIFACT_PATH = "policy"
# split summary key -> MLflow metric: the sizes of both parts, recorded by learn_policies
SPLIT_METRICS = {
    "learn_rounds": "split.learn_rounds",
    "holdout_rounds": "split.holdout_rounds",
    "learn_requests": "split.learn_requests",
    "holdout_requests": "split.holdout_requests",
}


def feedback_dir(ctx: RunContext) -> Path:
    return ctx.run_dir / "feedback"


def policies_dir(ctx: RunContext) -> Path:
    return ctx.run_dir / "policies"


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
