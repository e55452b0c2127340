"""Stages 9-11: load the challenger as ``canary``, verify it over gRPC, move ``stable`` to it.

MLflow aliases follow the serving labels one to one: challenger <-> canary, champion <-> stable;
the champion being replaced keeps alias ``previous`` (and stays loaded) for rollback. The
steps are the shared ones (``recflow.pipeline.stages.Deployment``); verification sends known
users plus an unknown one, compared by the recommender contract (the promoter's default).
"""

from __future__ import annotations

import numpy as np

from recflow.config import PipelineConfig
from recflow.pipeline.context import RunContext
from recflow.pipeline.stages import Deployment, Verification

VERIFY_USERS = 16
UNKNOWN_USER = "__recflow_unknown_user__"


def verification(cfg: PipelineConfig, ctx: RunContext) -> Verification:
    from recflow.contract import INPUT_USER_ID
    from recflow.features import load_features
    from recflow.serving.compare import reference_answers

    features = load_features(ctx.features_dir)
    # Known users plus one the model never saw: the cold-start path must match too.
    users = [str(u) for u in features.user_ids[:VERIFY_USERS]] + [UNKNOWN_USER]
    requests = np.asarray(users, dtype=object)
    # Top-(K+m) in-process: a served swap of near-tied items at the K boundary is recognised.
    expected = reference_answers(ctx.saved_model_dir)(requests)
    return Verification(
        {INPUT_USER_ID: requests},
        expected,
        checked=f"{len(users)} users",
        summary={"users_checked": len(users)},
    )


DEPLOYMENT = Deployment(verification, already_stable={"users_checked": 0})
deploy_canary = DEPLOYMENT.deploy_canary
verify_canary = DEPLOYMENT.verify_canary
promote = DEPLOYMENT.promote
