"""Stage 5: promote only a candidate whose lower confidence bound beats the logging policy.

Declining is a decision, not a failure: the run succeeds, the reasons go to the task log and
to MLflow (tags ``gate``, ``gate.reasons``; artifact ``gate/decision.json``), and the
promotion steps are skipped. When the logs came from the champion, beating the logging policy
is beating the champion.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from recflow.config import PolicyConfig
from recflow.pipeline.context import RunContext, say
from recflow.pipeline.policy.common import CHAMPION, make_registry, tracking_run

if TYPE_CHECKING:
    from recflow.registry import Registry


def run(cfg: PolicyConfig, ctx: RunContext, registry: Registry | None = None) -> dict[str, Any]:
    from recflow.bandits.estimators import Estimate
    from recflow.bandits.gate import PolicyGateConfig, decide_policy

    registry = registry or make_registry(cfg)
    mlflow_run = tracking_run(cfg, ctx, registry)
    values = ctx.read_json("estimates.json")
    candidate = {
        k: Estimate(
            d["estimator"],
            d["value"],
            d["ci_low"],
            d["ci_high"],
            d["n_rounds"],
            1 - d["confidence"],
        )
        for k, d in values["policies"][cfg.candidate].items()
    }
    decision = decide_policy(
        candidate,
        float(values["logging"]["value"]),
        PolicyGateConfig(
            estimator=cfg.gate_estimator, margin=cfg.margin, min_rounds=cfg.min_rounds
        ),
    )
    record = decision.to_dict()
    record["candidate"] = cfg.candidate
    champion = registry.get_version_by_alias(cfg.registry.model_name, CHAMPION)
    record["champion_version"] = champion.version if champion else None
    registry.log_dict(mlflow_run, record, "gate/decision.json")
    registry.set_tags(
        mlflow_run,
        {
            "gate": "passed" if decision.passed else "declined",
            "gate.reasons": "; ".join(decision.reasons)[:4900],
        },
    )
    ctx.write_json("gate.json", record)
    say(f"gate_policy: {'PASSED' if decision.passed else 'DECLINED'} ({cfg.candidate} policy)")
    for reason in decision.reasons:
        say(f"gate_policy:   - {reason}")
    if not decision.passed:
        registry.set_tags(mlflow_run, {"decision": "declined"})
        registry.end_run(mlflow_run, "FINISHED")
        say("gate_policy: the champion policy keeps serving; promotion steps are skipped")
    return record
