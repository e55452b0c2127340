"""Stage 5: promote only a candidate whose held-out lower confidence bound beats the logging
policy's held-out value.

Both values come from the requests ``learn_policies`` held out (``estimate_values``), never
from the rounds the candidate was fitted to. Too few held-out slots (``min_rounds``) is a
decline too: an interval from a handful of requests is not evidence. A decline is a
decision: the reasons go to the task log and to MLflow (tags ``gate``, ``gate.reasons``;
artifact ``gate/decision.json``), then the DAG's task fails with them
(``stages.raise_if_declined``) and the promotion steps do not run. When
the logs came from the champion, beating the logging policy is beating the champion.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from recflow.config import PolicyConfig
from recflow.pipeline import stages
from recflow.pipeline.context import RunContext, make_registry, tracking_run
from recflow.pipeline.names import CHAMPION, ESTIMATES_JSON

if TYPE_CHECKING:
    from recflow.bandits.gate import PolicyGateDecision
    from recflow.registry import Registry


def decide(cfg: PolicyConfig, values: Mapping[str, Any]) -> PolicyGateDecision:
    """The gate's decision on ``estimate_values``' output (held-out estimates and split sizes)."""
    from recflow.bandits.estimators import Estimate
    from recflow.bandits.gate import PolicyGateConfig, PolicyGateDecision, decide_policy

    split = values["split"]
    held_out = int(split["holdout_rounds"])
    short: list[str] = []
    if held_out < cfg.min_rounds:
        short.append(
            f"only {held_out} held-out slots ({split['holdout_requests']} requests, "
            f"holdout_fraction {split['holdout_fraction']:g} of "
            f"{held_out + int(split['learn_rounds'])} logged slots), expected at least "
            f"{cfg.min_rounds} (min_rounds): collect more feedback or hold out a larger share "
            "before deciding"
        )
    per = values["policies"].get(cfg.candidate, {})
    if values["logging"] is None or not per:
        return PolicyGateDecision(
            False,
            short or [f"no held-out estimate of the {cfg.candidate} policy to decide on"],
            cfg.gate_estimator,
            float("nan"),
            None,
            {"split": dict(split)},
        )
    candidate = {
        k: Estimate(
            d["estimator"],
            d["value"],
            d["ci_low"],
            d["ci_high"],
            d["n_rounds"],
            1 - d["confidence"],
        )
        for k, d in per.items()
    }
    # The held-out minimum is checked above with the split in the reason; 1 disables the
    # generic (logged-rounds) check so a short log gets one reason, not two.
    decision = decide_policy(
        candidate,
        float(values["logging"]["value"]),
        PolicyGateConfig(estimator=cfg.gate_estimator, margin=cfg.margin, min_rounds=1),
    )
    details = {**decision.details, "split": dict(split)}
    if not short:
        where = f" on {held_out} held-out slots ({split['holdout_requests']} requests)"
        return dataclasses.replace(
            decision, reasons=[r + where for r in decision.reasons], details=details
        )
    bound_reasons = [] if decision.passed else decision.reasons
    return dataclasses.replace(
        decision, passed=False, reasons=short + bound_reasons, details=details
    )


def run(cfg: PolicyConfig, ctx: RunContext, registry: Registry | None = None) -> dict[str, object]:
    registry = registry or make_registry(cfg)
    mlflow_run = tracking_run(cfg, ctx, registry)
    decision = decide(cfg, ctx.read_json(ESTIMATES_JSON))
    record = decision.to_dict()
    record["candidate"] = cfg.candidate
    champion = registry.get_version_by_alias(cfg.registry.model_name, CHAMPION)
    record["champion_version"] = champion.version if champion else None
    return stages.record_gate(
        registry,
        mlflow_run,
        ctx,
        record,
        step="gate_policy",
        headline=f" ({cfg.candidate} policy)",
        keeps_serving="the champion policy",
    )
