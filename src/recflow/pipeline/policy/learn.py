"""Stage 3: learn the neural policy (TF/Keras, doubly robust objective) and two baselines.

The logged requests are first split (``recflow.bandits.split``, seeded, whole requests): the
policies and reward models see the learning part only, the estimate stage reads the held-out
part only. Evaluated on its own learning rounds a policy is credited with the noise it fitted:
on the Open Bandit sample (random/all, seed 0) the neural policy's DR estimate on its learning
rounds was 0.043 against a logging value of 0.0034 (~13x); on the held-out 30% it is 0.0019
[0.0003, 0.0042] against 0.0047, and the gate declines.

A reward model cross-fitted on the learning part gives the neural policy's DR pseudo-rewards;
one fitted on the whole learning part predicts q_hat for the held-out DR estimates. Each
policy is turned into the distribution it would serve at the configured epsilon, slate by
slate (``recflow.bandits.slates``), at each held-out slot's position; the estimate stage needs
nothing else. The candidate (neural or LinUCB; Thompson sampling is offline-only) is exported
as a SavedModel and checked to answer like the Python policy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from recflow.config import PolicyConfig
from recflow.errors import ContractError
from recflow.jsontypes import JSONObject
from recflow.pipeline.context import RunContext, make_registry, say, tracking_run
from recflow.pipeline.names import LEARN_JSON
from recflow.pipeline.policy.common import (
    POLICY_ARTIFACT_PATH,
    SPLIT_METRICS,
    exported_outputs,
    feedback_dir,
    policies_dir,
)

if TYPE_CHECKING:
    from recflow.bandits.feedback import LoggedFeedback
    from recflow.bandits.policies import Policy
    from recflow.registry import Registry

POLICIES = ("neural", "linucb", "linear_ts")
PROBS_FILE = "probs.npz"
WARMUP_CONTEXTS = 16
CHECK_CONTEXTS = 8


def _check_export(policy: Policy, ctx: RunContext, context: np.ndarray, epsilon: float) -> None:
    """The SavedModel's action_probs equal the Python policy's (catches export drift early)."""
    x = context[:CHECK_CONTEXTS].astype(np.float32)
    eps = np.full(x.shape[0], epsilon, dtype=np.float32)
    out = exported_outputs(ctx.saved_model_dir, x, eps)
    index = {a: i for i, a in enumerate(policy.action_ids)}
    ids = np.vectorize(lambda v: index[v.decode()])(out["action_ids"])
    want = np.take_along_axis(policy.action_probs(x.astype(np.float64), eps), ids, axis=1)
    if not np.allclose(out["action_probs"], want, atol=1e-4):
        raise ContractError(
            f"the exported policy's action_probs differ from the trained policy's by up to "
            f"{np.abs(out['action_probs'] - want).max():.2e} on {x.shape[0]} contexts; "
            "the export is broken: do not serve it"
        )


def slot_distributions(policy: Policy, fb: LoggedFeedback, epsilon: float) -> np.ndarray:
    """[n, A]: the policy's probability of each action at each round's own logged position."""
    from recflow.bandits.slates import marginals_by_context

    if fb.n_rounds == 0:
        return np.zeros((0, fb.n_actions))
    marginals, inverse = marginals_by_context(
        lambda x: policy.action_probs(x, epsilon), fb.context, fb.len_list
    )
    # The distribution at each slot's own position: what position-wise estimators read.
    return np.asarray(marginals[inverse, :, fb.position])


def held_out_q_hat(learning: LoggedFeedback, held: LoggedFeedback, kind: str) -> np.ndarray:
    """[m, A]: q_hat at the held-out slots' positions, from a model fitted on learning only."""
    from recflow.bandits.estimators import fit_predict_reward_model

    if held.n_rounds == 0:
        return np.zeros((0, held.n_actions))
    q = fit_predict_reward_model(learning, held.context, kind=kind)
    return np.asarray(q[np.arange(held.n_rounds), :, held.position])


def run(cfg: PolicyConfig, ctx: RunContext, registry: Registry | None = None) -> JSONObject:
    from recflow.bandits.estimators import fit_reward_model
    from recflow.bandits.export import export_policy
    from recflow.bandits.feedback import read_feedback
    from recflow.bandits.policies import LinearTS, LinUCB, NeuralPolicy
    from recflow.bandits.split import split_by_request
    from recflow.storage import atomic_directory

    registry = registry or make_registry(cfg)
    mlflow_run = tracking_run(cfg, ctx, registry)
    all_fb, _ = read_feedback(feedback_dir(ctx))
    split = split_by_request(all_fb, cfg.holdout_fraction, seed=cfg.seed)
    fb, held = all_fb.subset(split.learn), all_fb.subset(split.holdout)
    sizes = split.summary()
    registry.log_metrics(mlflow_run, {SPLIT_METRICS[k]: float(sizes[k]) for k in SPLIT_METRICS})
    registry.log_dict(mlflow_run, sizes, "feedback/split.json")
    say(
        f"learn_policies: learning from {fb.n_rounds} slots ({split.learn_requests} requests); "
        f"{held.n_rounds} slots ({split.holdout_requests} requests, holdout_fraction "
        f"{cfg.holdout_fraction:g}, seed {cfg.seed}) held out for estimation only"
    )
    say(f"learn_policies: cross-fitting the {cfg.reward_model} reward model")
    q_hat = fit_reward_model(fb, kind=cfg.reward_model, seed=cfg.seed)
    say(f"learn_policies: training the neural policy ({cfg.epochs} epochs, DR objective)")
    neural = NeuralPolicy.fit(
        fb,
        q_hat=q_hat,
        objective="dr",
        hidden=(cfg.hidden_units,),
        epochs=cfg.epochs,
        learning_rate=cfg.learning_rate,
        seed=cfg.seed,
    )
    for epoch, value in enumerate(neural.history):
        registry.log_metrics(mlflow_run, {"neural.train_objective": value}, step=epoch)
    policies: dict[str, Policy] = {
        "neural": neural,
        "linucb": LinUCB.fit(fb, alpha=cfg.linucb_alpha),
        "linear_ts": LinearTS.fit(fb, scale=cfg.ts_scale, seed=cfg.seed),
    }
    arrays = {
        "learn_index": split.learn,
        "holdout_index": split.holdout,
        "q_hat": held_out_q_hat(fb, held, cfg.reward_model),
    }
    for name, policy in policies.items():
        arrays[f"pi_{name}"] = slot_distributions(policy, held, cfg.epsilon)
    with atomic_directory(policies_dir(ctx)) as scratch:
        np.savez(scratch / PROBS_FILE, **arrays)  # type: ignore[arg-type]

    candidate = policies[cfg.candidate]
    say(f"learn_policies: exporting the {cfg.candidate} policy (epsilon {cfg.epsilon})")
    export_policy(
        candidate,
        ctx.saved_model_dir,
        warmup_contexts=fb.context[:WARMUP_CONTEXTS],
        warmup_epsilon=cfg.epsilon,
    )
    _check_export(candidate, ctx, fb.context, cfg.epsilon)
    registry.log_artifacts(mlflow_run, ctx.saved_model_dir, POLICY_ARTIFACT_PATH)
    from recflow.bandits.export import POLICY_CONTRACT_VERSION

    registry.set_tags(
        mlflow_run,
        {"policy.candidate": cfg.candidate, "serving.contract_version": POLICY_CONTRACT_VERSION},
    )
    summary: JSONObject = {
        "policies": list(POLICIES),
        "candidate": cfg.candidate,
        "epsilon": cfg.epsilon,
        "neural_objective": neural.history[-1],
        "saved_model": str(ctx.saved_model_dir),
        "dim_context": fb.dim_context,
        "actions": fb.n_actions,
        "split": sizes,
    }
    ctx.write_json(LEARN_JSON, summary)
    say(
        f"learn_policies: neural objective {neural.history[0]:.4f} -> {neural.history[-1]:.4f}; "
        f"LinUCB (alpha {cfg.linucb_alpha}) and Thompson (scale {cfg.ts_scale}) fitted"
    )
    return summary
