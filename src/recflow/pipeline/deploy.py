"""Stages 9-11: load the challenger as ``canary``, verify it over gRPC, move ``stable`` to it.

MLflow aliases follow the serving labels one to one: challenger <-> canary, champion <-> stable;
the champion being replaced keeps alias ``previous`` (and stays loaded) for rollback.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from recflow.config import PipelineConfig
from recflow.errors import RecflowError, is_transient
from recflow.pipeline.context import (
    RunContext,
    make_promoter,
    make_registry,
    say,
    tracking_run,
)
from recflow.registry import Registry
from recflow.registry.base import check_complete

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS = "previous"
VERIFY_USERS = 16
UNKNOWN_USER = "__recflow_unknown_user__"


def record_serving_failure(
    registry: Registry, model_name: str, mlflow_run: str, version: int, step: str, error: Exception
) -> None:
    """A failed deploy/verify step: the version says so, loses ``challenger``, the run fails."""
    registry.set_version_tag(model_name, version, "serving", f"{step} failed")
    registry.delete_alias(model_name, CHALLENGER)
    registry.set_tags(
        mlflow_run, {"decision": f"{step} failed", "serving.error": str(error)[:4900]}
    )
    registry.end_run(mlflow_run, "FAILED")
    say(f"{step}: FAILED: {error}")


def _fail(
    cfg: PipelineConfig,
    ctx: RunContext,
    registry: Registry,
    version: int,
    step: str,
    error: Exception,
) -> None:
    if is_transient(error):
        # Airflow retries it (recflow.pipeline.retries): record nothing a retry must undo.
        say(f"{step}: transient failure, to be retried: {error}")
        return
    run = tracking_run(cfg, ctx, registry)
    record_serving_failure(registry, cfg.registry.model_name, run, version, step, error)


def deploy_canary(
    cfg: PipelineConfig, ctx: RunContext, registry: Registry | None = None, promoter: Any = None
) -> dict[str, Any]:
    registry = registry or make_registry(cfg)
    promoter = promoter or make_promoter(cfg)
    version = int(ctx.read_json("register.json")["version"])
    # Nothing reaches serving whose registration did not complete (registry.base).
    check_complete(registry.get_version(cfg.registry.model_name, version), "deploy_canary")
    say(f"deploy: copying version {version} into {promoter.model_dir} and loading it as canary")
    try:
        deployed = promoter.deploy_canary(ctx.saved_model_dir, version)
    except RecflowError as error:
        _fail(cfg, ctx, registry, version, "deploy_canary", error)
        raise
    if not deployed:
        say(f"deploy: version {version} is already stable: nothing to do")
        return {"version": version}
    registry.set_version_tag(cfg.registry.model_name, version, "serving", "canary")
    say(f"deploy: version {version} is AVAILABLE under label canary")
    return {"version": version}


def verify_canary(
    cfg: PipelineConfig, ctx: RunContext, registry: Registry | None = None, promoter: Any = None
) -> dict[str, Any]:
    from recflow.features import load_features
    from recflow.serving.compare import reference_answers

    registry = registry or make_registry(cfg)
    promoter = promoter or make_promoter(cfg)
    version = int(ctx.read_json("register.json")["version"])
    if promoter.label("stable") == version:  # a re-run after promotion: verified before
        say(f"verify: version {version} is already stable: nothing to do")
        return {"users_checked": 0, "version": version}
    features = load_features(ctx.features_dir)
    # Known users plus one the model never saw: the cold-start path must match too.
    users = [str(u) for u in features.user_ids[:VERIFY_USERS]] + [UNKNOWN_USER]
    # Top-(K+m) in-process: a served swap of near-tied items at the K boundary is recognised.
    expected = reference_answers(ctx.saved_model_dir)(np.asarray(users, dtype=object))
    try:
        result = promoter.verify_canary(version, users, expected, rtol=cfg.serving.answer_rtol)
    except RecflowError as error:
        _fail(cfg, ctx, registry, version, "verify_canary", error)
        raise
    registry.set_version_tag(cfg.registry.model_name, version, "serving.verified", "true")
    say(f"verify: canary v{version} answered {len(users)} users as the exported model does")
    return result


def promote(
    cfg: PipelineConfig, ctx: RunContext, registry: Registry | None = None, promoter: Any = None
) -> dict[str, Any]:
    registry = registry or make_registry(cfg)
    promoter = promoter or make_promoter(cfg)
    mlflow_run = tracking_run(cfg, ctx, registry)
    version = int(ctx.read_json("register.json")["version"])
    previous_stable = promote_version(cfg, registry, promoter, mlflow_run, version)
    say(
        f"promote: version {version} is now stable and champion"
        + (f"; v{previous_stable} kept loaded as previous" if previous_stable else "")
    )
    return {"version": version, "previous": previous_stable}


def promote_version(
    cfg: Any, registry: Registry, promoter: Any, mlflow_run: str, version: int
) -> int | None:
    """Move label ``stable`` and alias ``champion`` to a verified canary (both pipelines).

    The champion being replaced keeps alias ``previous``; the MLflow run ends FINISHED.
    Returns the version that was stable before, if any.
    """
    name = cfg.registry.model_name
    check_complete(registry.get_version(name, version), f"promote {name} v{version}")
    old_champion = registry.get_version_by_alias(name, CHAMPION)
    previous_stable: int | None = promoter.promote_stable(version)
    if old_champion is not None and old_champion.version == version:
        # A re-run of a finished promotion: serving and aliases are in place already.
        registry.set_tags(mlflow_run, {"decision": "promoted"})
        registry.end_run(mlflow_run, "FINISHED")
        return previous_stable
    if old_champion is not None:
        registry.set_alias(name, PREVIOUS, old_champion.version)
        registry.set_version_tag(name, old_champion.version, "serving", "previous")
    registry.set_alias(name, CHAMPION, version)
    registry.delete_alias(name, CHALLENGER)
    registry.set_version_tag(name, version, "serving", "stable")
    info = registry.get_version(name, version)
    registry.update_description(
        name,
        version,
        (info.description or "")
        + " Promoted: verified as canary over gRPC, now serving as stable"
        + (f" (replacing v{previous_stable})." if previous_stable else "."),
    )
    registry.set_tags(mlflow_run, {"decision": "promoted"})
    registry.end_run(mlflow_run, "FINISHED")
    return previous_stable
