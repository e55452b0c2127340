"""Stage 4: off-policy values (IPS, SNIPS, DR; bootstrap intervals) of every learned policy and
the logging policy's own value (its mean observed reward), on the held-out requests only.

``learn_policies`` split the log by request and learned from the other part, so nothing here
was fitted to these rounds: an estimate is not inflated by noise a policy memorised.
Metric names: ``<policy>.<estimator>.value|ci_low|ci_high`` (policy neural, linucb,
linear_ts), ``logging.value|ci_low|ci_high``, and the split sizes ``split.*`` (logged by learn).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

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
    from recflow.bandits.feedback import LoggedFeedback
    from recflow.registry import Registry


def held_out_values(
    cfg: PolicyConfig,
    held: LoggedFeedback,
    pis: Mapping[str, np.ndarray],
    q_hat: np.ndarray,
) -> dict[str, Any]:
    """Estimates of each policy ``pis[name]`` ([m, A] at each round's position) and of logging.

    With no held-out round there is nothing to estimate: ``policies`` is empty and ``logging``
    None, and the gate declines for lack of evidence.
    """
    from recflow.bandits.estimators import bootstrap_ci, estimate_policy_value

    result: dict[str, Any] = {"rounds": held.n_rounds, "policies": {}, "logging": None}
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


def run(cfg: PolicyConfig, ctx: RunContext, registry: Registry | None = None) -> dict[str, Any]:
    from recflow.bandits.feedback import read_feedback

    registry = registry or make_registry(cfg)
    mlflow_run = tracking_run(cfg, ctx, registry)
    fb, _ = read_feedback(feedback_dir(ctx))
    split = ctx.read_json(LEARN_JSON)["split"]
    with np.load(policies_dir(ctx) / PROBS_FILE) as z:
        held = fb.subset(z["holdout_index"])
        q_hat = z["q_hat"]
        pis = {name: z[f"pi_{name}"] for name in POLICIES}
    result = held_out_values(cfg, held, pis, q_hat)
    result |= {"candidate": cfg.candidate, "split": split}
    metrics: dict[str, float] = {}
    for name, per in result["policies"].items():
        for k, e in per.items():
            metrics |= {f"{name}.{k}.{part}": e[part] for part in ("value", "ci_low", "ci_high")}
    if result["logging"] is not None:
        metrics |= {f"logging.{part}": v for part, v in result["logging"].items()}
    registry.log_metrics(mlflow_run, metrics)
    registry.log_dict(mlflow_run, result, "estimates/values.json")
    ctx.write_json(ESTIMATES_JSON, result)
    say(
        f"estimate_values ({cfg.confidence:.0%} bootstrap intervals) on {held.n_rounds} held-out "
        f"slots ({split['holdout_requests']} requests); {split['learn_rounds']} slots were "
        "learned from and are not used here:"
    )
    if result["logging"] is None:
        say("  no held-out slots: nothing to estimate")
        return result
    log = result["logging"]
    say(
        f"  logging policy (on-policy)  {log['value']:.4f}  "
        f"[{log['ci_low']:.4f}, {log['ci_high']:.4f}]"
    )
    for name, per in result["policies"].items():
        mark = " (candidate)" if name == cfg.candidate else ""
        cells = "  ".join(
            f"{k} {e['value']:.4f} [{e['ci_low']:.4f}, {e['ci_high']:.4f}]" for k, e in per.items()
        )
        say(f"  {name + mark:<27} {cells}")
    return result
