"""Stages 7-9: load the challenger policy as ``canary``, verify it over gRPC, make it ``stable``.

Same moves as the recommender (``recflow.promotion.Promoter``) under the policy's own serving
model name; MLflow aliases follow the labels (challenger <-> canary, champion <-> stable, the
replaced champion becomes ``previous`` and stays loaded for rollback). Verification sends
sample logged contexts with several epsilons through the ``canary`` label and requires the
served action ids, scores and probabilities to equal the exported SavedModel's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from recflow.config import PolicyConfig
from recflow.pipeline.context import RunContext, make_promoter
from recflow.pipeline.policy.common import exported_outputs, feedback_dir
from recflow.pipeline.stages import Deployment, Verification

if TYPE_CHECKING:
    from recflow.promotion import Promotion

VERIFY_CONTEXTS = 16
VERIFY_EPSILONS = (0.0, 0.05, 0.5, 1.0)  # plus the serving epsilon


def verification_inputs(cfg: PolicyConfig, ctx: RunContext) -> tuple[np.ndarray, np.ndarray]:
    """Sample logged contexts (float32, as a client sends them) and a spread of epsilons."""
    from recflow.bandits.feedback import read_feedback

    fb, _ = read_feedback(feedback_dir(ctx))
    contexts = np.unique(fb.context, axis=0)[:VERIFY_CONTEXTS].astype(np.float32)
    eps = np.resize(np.asarray((cfg.epsilon, *VERIFY_EPSILONS), np.float32), contexts.shape[0])
    return contexts, eps


def compare_outputs(
    served: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray]
) -> list[str]:
    """The policy contract: same action ids, scores and probabilities (within float noise),
    probabilities summing to 1. Empty: identical."""
    problems = []
    got_ids = np.vectorize(lambda v: v.decode() if isinstance(v, bytes) else str(v))(
        np.asarray(served.get("action_ids", np.empty((0, 0), object)))
    )
    want_ids = np.vectorize(lambda v: v.decode() if isinstance(v, bytes) else str(v))(
        expected["action_ids"]
    )
    if got_ids.shape != want_ids.shape or not np.array_equal(got_ids, want_ids):
        problems.append("action_ids differ")
    for name, atol in (("action_scores", 1e-5), ("action_probs", 1e-6)):
        got = np.asarray(served.get(name, np.empty(0)), dtype=np.float64)
        want = np.asarray(expected[name], dtype=np.float64)
        if got.shape != want.shape or not np.allclose(got, want, atol=atol, rtol=1e-4):
            problems.append(f"{name} differ")
    probs = np.asarray(served.get("action_probs", np.empty((0, 0))), dtype=np.float64)
    if probs.size and not np.allclose(probs.sum(axis=1), 1.0, atol=1e-4):
        problems.append("action_probs rows do not sum to 1")
    return problems


def verification(cfg: PolicyConfig, ctx: RunContext) -> Verification:
    from recflow.bandits.export import INPUT_CONTEXT, INPUT_EPSILON

    contexts, eps = verification_inputs(cfg, ctx)
    expected = exported_outputs(ctx.saved_model_dir, contexts, eps)
    epsilons = sorted({round(float(e), 6) for e in eps})
    return Verification(
        {INPUT_CONTEXT: contexts, INPUT_EPSILON: eps},
        expected,
        checked=f"{len(contexts)} contexts x epsilons {epsilons}",
        summary={"contexts_checked": int(len(contexts))},
    )


def policy_promoter(cfg: PolicyConfig) -> Promotion:
    """A promoter that compares served and exported answers by the policy contract."""
    return make_promoter(cfg, compare=compare_outputs)


DEPLOYMENT = Deployment(
    verification,
    promoter=policy_promoter,
    already_stable={"contexts_checked": 0},
    noun="policy version",
    deploy_step="deploy_canary",
    verify_step="verify_canary",
    promote_step="promote_stable",
)
deploy_canary = DEPLOYMENT.deploy_canary
verify_canary = DEPLOYMENT.verify_canary
promote = DEPLOYMENT.promote
