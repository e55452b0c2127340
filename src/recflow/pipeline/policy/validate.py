"""Stage 2: Great Expectations on the logged feedback; a failure fails the run with details.

A zero or missing propensity, an action outside the catalogue, a missing or non-binary reward
or a non-finite context would make every estimate downstream meaningless, so nothing is
learned from such a log.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from recflow.config import PolicyConfig
from recflow.jsontypes import JSONObject
from recflow.pipeline import stages
from recflow.pipeline.context import RunContext, make_registry, say, tracking_run
from recflow.pipeline.policy.common import feedback_dir

if TYPE_CHECKING:
    from recflow.registry import Registry


def run(cfg: PolicyConfig, ctx: RunContext, registry: Registry | None = None) -> JSONObject:
    from recflow.bandits.feedback import read_feedback
    from recflow.bandits.validate import validate_feedback

    registry = registry or make_registry(cfg)
    mlflow_run = tracking_run(cfg, ctx, registry)
    fb, _ = read_feedback(feedback_dir(ctx))
    say(f"validate_feedback: {fb.n_rounds} slots through the expectation suite")
    # Too few rounds is the gate's call (decline, collect more), not a data error.
    report = stages.record_validation(
        registry,
        mlflow_run,
        ctx,
        "validate_feedback",
        lambda: validate_feedback(
            fb, binary_reward=cfg.binary_reward, min_rounds=1, docs_dir=ctx.data_docs_dir
        ),
        lambda r: r,
    )
    say(f"validate_feedback: passed ({report['expectations_evaluated']} expectations)")
    return {"success": True, "rounds": report["rounds"]}
