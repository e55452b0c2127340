"""Stage 2: Great Expectations on the logged feedback; a failure fails the run with details.

A zero or missing propensity, an action outside the catalogue, a missing or non-binary reward
or a non-finite context would make every estimate downstream meaningless, so nothing is
learned from such a log.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from recflow.config import PolicyConfig
from recflow.errors import ValidationFailed
from recflow.pipeline.context import RunContext, say
from recflow.pipeline.policy.common import feedback_dir, make_registry, tracking_run

if TYPE_CHECKING:
    from recflow.registry import Registry


def run(cfg: PolicyConfig, ctx: RunContext, registry: Registry | None = None) -> dict[str, Any]:
    from recflow.bandits.feedback import read_feedback
    from recflow.bandits.validate import validate_feedback

    registry = registry or make_registry(cfg)
    mlflow_run = tracking_run(cfg, ctx, registry)
    fb, _ = read_feedback(feedback_dir(ctx))
    say(f"validate_feedback: {fb.n_rounds} slots through the expectation suite")
    try:
        # Too few rounds is the gate's call (decline, collect more), not a data error.
        report = validate_feedback(
            fb, binary_reward=cfg.binary_reward, min_rounds=1, docs_dir=ctx.data_docs_dir
        )
    except ValidationFailed as failure:
        if ctx.data_docs_dir.exists():
            registry.log_artifacts(mlflow_run, ctx.data_docs_dir, "data_docs")
        registry.log_dict(mlflow_run, {"failures": failure.failures}, "validation/failures.json")
        registry.set_tags(mlflow_run, {"validation": "failed", "decision": "failed"})
        registry.end_run(mlflow_run, "FAILED")
        say(f"validate_feedback: FAILED\n{failure}")
        raise
    if ctx.data_docs_dir.exists():
        registry.log_artifacts(mlflow_run, ctx.data_docs_dir, "data_docs")
    registry.log_dict(mlflow_run, report, "validation/report.json")
    registry.set_tags(mlflow_run, {"validation": "passed"})
    ctx.write_json("validation.json", report)
    say(f"validate_feedback: passed ({report['expectations_evaluated']} expectations)")
    return {"success": True, "rounds": report["rounds"]}
