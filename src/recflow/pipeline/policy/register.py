"""Stage 6: the blessed policy becomes a registered model version with alias ``challenger``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from recflow.config import PolicyConfig
from recflow.jsontypes import JSONObject
from recflow.pipeline import stages
from recflow.pipeline.context import RunContext
from recflow.pipeline.names import DAG_RUN_TAG, ESTIMATES_JSON, FEEDBACK_JSON, GATE_JSON
from recflow.pipeline.policy.common import POLICY_ARTIFACT_PATH

if TYPE_CHECKING:
    from recflow.registry import Registry


def run(cfg: PolicyConfig, ctx: RunContext, registry: Registry | None = None) -> JSONObject:
    from recflow.bandits.export import POLICY_CONTRACT_VERSION

    registry, mlflow_run = stages.open_run(cfg, ctx, registry)
    gate, feedback, values = stages.records(ctx, GATE_JSON, FEEDBACK_JSON, ESTIMATES_JSON)
    est = values["policies"][cfg.candidate][cfg.gate_estimator]
    split = values["split"]
    tags = {
        "gate": "passed",
        "policy.kind": cfg.candidate,
        "policy.epsilon": cfg.epsilon,
        "dataset.digest": feedback["digest"],
        "serving.contract_version": POLICY_CONTRACT_VERSION,
        DAG_RUN_TAG: ctx.run_id,
        f"ope.{cfg.gate_estimator}.value": f"{est['value']:.6g}",
        f"ope.{cfg.gate_estimator}.ci_low": f"{est['ci_low']:.6g}",
        "ope.logging_value": f"{values['logging']['value']:.6g}",
        "ope.holdout_rounds": str(split["holdout_rounds"]),
        "ope.holdout_fraction": f"{split['holdout_fraction']:g}",
    }
    description = (
        f"{cfg.candidate} policy learned by DAG run {ctx.run_id} from {split['learn_rounds']} of "
        f"{feedback['rounds']} logged slots ({feedback['source']}, digest "
        f"{feedback['digest'][:12]}), estimated on the other {split['holdout_rounds']} "
        f"(held-out requests), served with epsilon {cfg.epsilon}. Gate passed: "
        + "; ".join(gate["reasons"])
    )
    if gate.get("champion_version") is not None:
        description += f". Challenges champion v{gate['champion_version']}."
    version = stages.register(
        cfg,
        ctx,
        registry,
        mlflow_run,
        POLICY_ARTIFACT_PATH,
        tags,
        description,
        step="register_policy",
    )
    return {"version": version}
