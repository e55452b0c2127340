"""Stage 4: off-policy values (IPS, SNIPS, DR; bootstrap intervals) of every learned policy and
the logging policy's own value (its mean observed reward), logged to MLflow as metrics.

Metric names: ``<policy>.<estimator>.value|ci_low|ci_high`` (policy neural, linucb,
linear_ts) and ``logging.value|ci_low|ci_high``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from recflow.config import POLICY_ESTIMATORS, PolicyConfig
from recflow.pipeline.context import RunContext, say
from recflow.pipeline.policy.common import (
    feedback_dir,
    make_registry,
    policies_dir,
    tracking_run,
)
from recflow.pipeline.policy.learn import POLICIES, PROBS_FILE

if TYPE_CHECKING:
    from recflow.registry import Registry


def run(cfg: PolicyConfig, ctx: RunContext, registry: Registry | None = None) -> dict[str, Any]:
    from recflow.bandits.estimators import bootstrap_ci, estimate_policy_value
    from recflow.bandits.feedback import read_feedback

    registry = registry or make_registry(cfg)
    mlflow_run = tracking_run(cfg, ctx, registry)
    fb, _ = read_feedback(feedback_dir(ctx))
    alpha = 1.0 - cfg.confidence
    rows = np.arange(fb.n_rounds)

    def at_positions(values: np.ndarray) -> np.ndarray:
        full = np.zeros((fb.n_rounds, fb.n_actions, fb.len_list))
        full[rows, :, fb.position] = values
        return full

    with np.load(policies_dir(ctx) / PROBS_FILE) as z:
        q_hat = at_positions(z["q_hat"])
        pis = {name: at_positions(z[f"pi_{name}"]) for name in POLICIES}
    result: dict[str, Any] = {"candidate": cfg.candidate, "rounds": fb.n_rounds, "policies": {}}
    metrics: dict[str, float] = {}
    for name, pi in pis.items():
        estimates = estimate_policy_value(
            fb,
            pi,
            q_hat=q_hat,
            estimators=POLICY_ESTIMATORS,
            n_boot=cfg.n_boot,
            seed=cfg.seed,
            alpha=alpha,
        )
        result["policies"][name] = {k: e.to_dict() for k, e in estimates.items()}
        for k, e in estimates.items():
            metrics |= {
                f"{name}.{k}.value": e.value,
                f"{name}.{k}.ci_low": e.ci_low,
                f"{name}.{k}.ci_high": e.ci_high,
            }
    low, high = bootstrap_ci(fb.reward, cfg.n_boot, cfg.seed, alpha=alpha)
    value = fb.on_policy_value()
    result["logging"] = {"value": value, "ci_low": low, "ci_high": high}
    metrics |= {"logging.value": value, "logging.ci_low": low, "logging.ci_high": high}
    registry.log_metrics(mlflow_run, metrics)
    registry.log_dict(mlflow_run, result, "estimates/values.json")
    ctx.write_json("estimates.json", result)
    say(f"estimate_values ({cfg.confidence:.0%} bootstrap intervals, {fb.n_rounds} slots):")
    say(f"  logging policy (on-policy)  {value:.4f}  [{low:.4f}, {high:.4f}]")
    for name, per in result["policies"].items():
        mark = " (candidate)" if name == cfg.candidate else ""
        cells = "  ".join(
            f"{k} {e['value']:.4f} [{e['ci_low']:.4f}, {e['ci_high']:.4f}]" for k, e in per.items()
        )
        say(f"  {name + mark:<27} {cells}")
    return result
