"""Stage 4: off-policy values (IPS, SNIPS, DR; bootstrap intervals) of every learned policy and
the logging policy's own value (its mean observed reward), on the held-out requests only.

``learn_policies`` split the log by request and learned from the other part, so nothing here
was fitted to these rounds: an estimate is not inflated by noise a policy memorised.
Metric names: ``<policy>.<estimator>.value|ci_low|ci_high`` (policy neural, linucb,
linear_ts), ``logging.value|ci_low|ci_high``, and the split sizes ``split.*`` (logged by learn).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, TypedDict

import numpy as np

from recflow.config import POLICY_ESTIMATORS, PolicyConfig
from recflow.pipeline.context import RunContext, make_registry, say, tracking_run
from recflow.pipeline.names import ESTIMATES_JSON, LEARN_JSON
from recflow.pipeline.policy.common import (
    feedback_dir,
    policies_dir,
)
from recflow.pipeline.policy.learn import POLICIES, PROBS_FILE

if TYPE_CHECKING:
    from recflow.bandits.estimators import EstimateRecord, Interval
    from recflow.bandits.feedback import LoggedFeedback
    from recflow.registry import Registry


class HeldOutValues(TypedDict):
    """Estimates per policy and estimator, and the logging policy's own value (None: no data)."""

    rounds: int
    policies: dict[str, dict[str, EstimateRecord]]
    logging: Interval | None


class Estimates(HeldOutValues):
    """What the stage returns and writes to ``ESTIMATES_JSON``."""

    candidate: str
    split: Mapping[str, int | float]  # the learn/holdout sizes learn_policies recorded


def held_out_values(
    cfg: PolicyConfig,
    held: LoggedFeedback,
    pis: Mapping[str, np.ndarray],
    q_hat: np.ndarray,
) -> HeldOutValues:
    """Estimates of each policy ``pis[name]`` ([m, A] at each round's position) and of logging.

    With no held-out round there is nothing to estimate: ``policies`` is empty and ``logging``
    None, and the gate declines for lack of evidence.
    """
    from recflow.bandits.estimators import bootstrap_ci, estimate_policy_value

    result: HeldOutValues = {"rounds": held.n_rounds, "policies": {}, "logging": None}
    if held.n_rounds == 0:
        return result
    alpha = 1.0 - cfg.confidence
    rows = np.arange(held.n_rounds)

    def at_positions(values: np.ndarray) -> np.ndarray:
        full = np.zeros((held.n_rounds, held.n_actions, held.len_list))
        full[rows, :, held.position] = values
        return full

    q_full = at_positions(q_hat)
    for name, pi in pis.items():
        estimates = estimate_policy_value(
            held,
            at_positions(pi),
            q_hat=q_full,
            estimators=POLICY_ESTIMATORS,
            n_boot=cfg.n_boot,
            seed=cfg.seed,
            alpha=alpha,
        )
        result["policies"][name] = {k: e.to_dict() for k, e in estimates.items()}
    low, high = bootstrap_ci(held.reward, cfg.n_boot, cfg.seed, alpha=alpha)
    result["logging"] = {"value": held.on_policy_value(), "ci_low": low, "ci_high": high}
    return result


def run(cfg: PolicyConfig, ctx: RunContext, registry: Registry | None = None) -> Estimates:
    from recflow.bandits.feedback import read_feedback

    registry = registry or make_registry(cfg)
    mlflow_run = tracking_run(cfg, ctx, registry)
    fb, _ = read_feedback(feedback_dir(ctx))
    split = ctx.read_json(LEARN_JSON)["split"]
    with np.load(policies_dir(ctx) / PROBS_FILE) as z:
        held = fb.subset(z["holdout_index"])
        q_hat = z["q_hat"]
        pis = {name: z[f"pi_{name}"] for name in POLICIES}
    values = held_out_values(cfg, held, pis, q_hat)
    metrics: dict[str, float] = {}
    for name, per in values["policies"].items():
        for k, e in per.items():
            metrics[f"{name}.{k}.value"] = e["value"]
            metrics[f"{name}.{k}.ci_low"] = e["ci_low"]
            metrics[f"{name}.{k}.ci_high"] = e["ci_high"]
    log = values["logging"]
    if log is not None:
        metrics["logging.value"] = log["value"]
        metrics["logging.ci_low"] = log["ci_low"]
        metrics["logging.ci_high"] = log["ci_high"]
    result: Estimates = {**values, "candidate": cfg.candidate, "split": split}
    registry.log_metrics(mlflow_run, metrics)
    registry.log_dict(mlflow_run, result, "estimates/values.json")
    ctx.write_json(ESTIMATES_JSON, result)
    say(
        f"estimate_values ({cfg.confidence:.0%} bootstrap intervals) on {held.n_rounds} held-out "
        f"slots ({split['holdout_requests']} requests); {split['learn_rounds']} slots were "
        "learned from and are not used here:"
    )
    if log is None:
        say("  no held-out slots: nothing to estimate")
        return result
    say(
        f"  logging policy (on-policy)  {log['value']:.4f}  "
        f"[{log['ci_low']:.4f}, {log['ci_high']:.4f}]"
    )
    for name, per in values["policies"].items():
        mark = " (candidate)" if name == cfg.candidate else ""
        cells = "  ".join(
            f"{k} {e['value']:.4f} [{e['ci_low']:.4f}, {e['ci_high']:.4f}]" for k, e in per.items()
        )
        say(f"  {name + mark:<27} {cells}")
    return result
