"""Stages 7-9: load the challenger policy as ``canary``, verify it over gRPC, make it ``stable``.

Same moves as the recommender (``recflow.promotion.Promoter``) under the policy's own serving
model name; MLflow aliases follow the labels (challenger <-> canary, champion <-> stable, the
replaced champion becomes ``previous`` and stays loaded for rollback). Verification sends
sample logged contexts with several epsilons through the ``canary`` label and requires the
served action ids, scores and probabilities to equal the exported SavedModel's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from recflow.config import PolicyConfig
from recflow.errors import RecflowError, VerificationFailed, is_transient
from recflow.pipeline.context import RunContext, say
from recflow.pipeline.deploy import promote_version, record_serving_failure
from recflow.pipeline.policy.common import (
    exported_outputs,
    feedback_dir,
    make_promoter,
    make_registry,
    tracking_run,
)
from recflow.promotion import CANARY

if TYPE_CHECKING:
    from recflow.registry import Registry

VERIFY_CONTEXTS = 16
VERIFY_EPSILONS = (0.0, 0.05, 0.5, 1.0)  # plus the serving epsilon


def _version(ctx: RunContext) -> int:
    return int(ctx.read_json("register.json")["version"])


def _fail(
    cfg: PolicyConfig,
    ctx: RunContext,
    registry: Registry,
    version: int,
    step: str,
    error: Exception,
) -> None:
    if is_transient(error):  # retried by Airflow: record nothing a retry must undo
        say(f"{step}: transient failure, to be retried: {error}")
        return
    run = tracking_run(cfg, ctx, registry)
    record_serving_failure(registry, cfg.registry.model_name, run, version, step, error)


def deploy_canary(
    cfg: PolicyConfig, ctx: RunContext, registry: Registry | None = None, promoter: Any = None
) -> dict[str, Any]:
    registry = registry or make_registry(cfg)
    promoter = promoter or make_promoter(cfg)
    version = _version(ctx)
    say(f"deploy_canary: installing policy v{version} into {promoter.model_dir} as canary")
    try:
        deployed = promoter.deploy_canary(ctx.saved_model_dir, version)
    except RecflowError as error:
        _fail(cfg, ctx, registry, version, "deploy_canary", error)
        raise
    if not deployed:
        say(f"deploy_canary: policy v{version} is already stable: nothing to do")
        return {"version": version}
    registry.set_version_tag(cfg.registry.model_name, version, "serving", "canary")
    say(f"deploy_canary: policy v{version} is AVAILABLE under label canary")
    return {"version": version}


def verification_inputs(cfg: PolicyConfig, ctx: RunContext) -> tuple[np.ndarray, np.ndarray]:
    """Sample logged contexts (float32, as a client sends them) and a spread of epsilons."""
    from recflow.bandits.feedback import read_feedback

    fb, _ = read_feedback(feedback_dir(ctx))
    contexts = np.unique(fb.context, axis=0)[:VERIFY_CONTEXTS].astype(np.float32)
    eps = np.resize(np.asarray((cfg.epsilon, *VERIFY_EPSILONS), np.float32), contexts.shape[0])
    return contexts, eps


def compare_outputs(served: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> list[str]:
    """What differs between served and exported answers (empty: identical within float noise)."""
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


def verify_canary(
    cfg: PolicyConfig, ctx: RunContext, registry: Registry | None = None, promoter: Any = None
) -> dict[str, Any]:
    registry = registry or make_registry(cfg)
    promoter = promoter or make_promoter(cfg)
    version = _version(ctx)
    contexts, eps = verification_inputs(cfg, ctx)
    expected = exported_outputs(ctx.saved_model_dir, contexts, eps)
    try:
        if promoter.label(CANARY) != version:
            raise VerificationFailed(
                f"label canary points at {promoter.label(CANARY)}, expected version {version}"
            )
        served = promoter.server.predict(
            cfg.serving.model_name, {"context": contexts, "epsilon": eps}, label=CANARY
        )
        problems = compare_outputs(served, expected)
        if problems:
            promoter.abort_canary(version)
            raise VerificationFailed(
                f"canary policy v{version} answered {len(contexts)} requests unlike the exported "
                f"model ({'; '.join(problems)}); it was withdrawn, stable keeps serving"
            )
    except RecflowError as error:
        _fail(cfg, ctx, registry, version, "verify_canary", error)
        raise
    registry.set_version_tag(cfg.registry.model_name, version, "serving.verified", "true")
    say(
        f"verify_canary: canary v{version} answered {len(contexts)} contexts x epsilons "
        f"{sorted({round(float(e), 6) for e in eps})} exactly as the exported model"
    )
    return {"version": version, "contexts_checked": int(len(contexts))}


def promote(
    cfg: PolicyConfig, ctx: RunContext, registry: Registry | None = None, promoter: Any = None
) -> dict[str, Any]:
    registry = registry or make_registry(cfg)
    promoter = promoter or make_promoter(cfg)
    mlflow_run = tracking_run(cfg, ctx, registry)
    version = _version(ctx)
    previous_stable = promote_version(cfg, registry, promoter, mlflow_run, version)
    say(
        f"promote_stable: policy v{version} is now stable and champion"
        + (f"; v{previous_stable} kept loaded as previous" if previous_stable else "")
    )
    return {"version": version, "previous": previous_stable}
