"""Rollback: serving label ``stable`` and MLflow alias ``champion`` go back to an earlier version.

The target is the version with alias ``previous`` unless one is given. It is re-installed
from the registry if its folder left the model base path, loaded beside the current stable
version, and only then does ``stable`` move (``Promoter.rollback``). In the registry the target
becomes ``champion`` again; the rolled-back version gets alias ``rolled_back`` and tags
``serving=rolled_back`` and ``rollback.reason``; the whole step is an MLflow run of its own.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from recflow.config import PipelineConfig
from recflow.errors import PromotionError, RecflowError, is_transient
from recflow.jsontypes import JSONObject
from recflow.pipeline.context import RunContext, make_promoter, make_registry, say, tracking_run
from recflow.pipeline.names import CHAMPION, PREVIOUS, ROLLED_BACK
from recflow.registry import Registry
from recflow.registry.base import check_complete

if TYPE_CHECKING:
    from recflow.promotion import Promotion


def run(
    cfg: PipelineConfig,
    ctx: RunContext,
    registry: Registry | None = None,
    promoter: Promotion | None = None,
    *,
    target_version: int | None = None,
    reason: str = "",
) -> JSONObject:
    from recflow.promotion import STABLE, install_version

    registry = registry or make_registry(cfg)
    promoter = promoter or make_promoter(cfg)
    name = cfg.registry.model_name
    reason = reason.strip() or "no reason given"
    mlflow_run = tracking_run(cfg, ctx, registry)
    # A retried task finds the target it chose in its run (alias previous is gone by then).
    done_before = registry.get_run(mlflow_run).tags.get("rollback.to_version")
    registry.set_tags(mlflow_run, {"rollback.reason": reason, "decision": "rollback"})
    try:
        if target_version is None and done_before:
            target_version = int(done_before)
        if target_version is None:
            previous = registry.get_version_by_alias(name, PREVIOUS)
            if previous is None:
                raise PromotionError(
                    f"no version of {name} has alias {PREVIOUS!r}: nothing to roll back to; "
                    "pass target_version explicitly"
                )
            target_version = previous.version
        target = int(target_version)
        # raises RegistryError for an unknown version, or one whose registration never finished
        check_complete(registry.get_version(name, target), f"roll back to {name} v{target}")
        current = promoter.label(STABLE)
        if current is None:
            raise PromotionError(
                f"label {STABLE} is not set in {promoter.config_file}: nothing is being served "
                "to roll back from"
            )
        if not (promoter.model_dir / str(target) / "saved_model.pb").is_file():
            say(f"rollback: version {target} is not under {promoter.model_dir}; fetching it")
            with tempfile.TemporaryDirectory(prefix="recflow-rollback-") as tmp:
                fetched = registry.download_version(name, target, Path(tmp) / "model")
                install_version(fetched, promoter.model_dir, target)
        say(f"rollback: moving {STABLE} from version {current} back to {target} ({reason})")
        rolled_back = promoter.rollback(target)
    except RecflowError as error:
        if is_transient(error):  # Airflow retries it: record nothing a retry must undo
            say(f"rollback: transient failure, to be retried: {error}")
            raise
        registry.set_tags(mlflow_run, {"rollback.error": str(error)})
        registry.end_run(mlflow_run, "FAILED")
        say(f"rollback: FAILED: {error}")
        raise
    registry.set_alias(name, CHAMPION, target)
    registry.set_version_tag(name, target, "serving", "stable")
    if rolled_back != target:
        registry.set_alias(name, ROLLED_BACK, rolled_back)
        registry.set_version_tag(name, rolled_back, "serving", ROLLED_BACK)
        registry.set_version_tag(name, rolled_back, "rollback.reason", reason)
    prev = registry.get_version_by_alias(name, PREVIOUS)
    if prev is not None and prev.version == target:
        registry.delete_alias(name, PREVIOUS)  # it is the champion again, not a fallback
    registry.set_tags(
        mlflow_run,
        {"rollback.from_version": str(rolled_back), "rollback.to_version": str(target)},
    )
    registry.end_run(mlflow_run, "FINISHED")
    say(f"rollback: version {target} is stable and champion again; v{rolled_back} rolled back")
    return {"version": target, "rolled_back": rolled_back, "reason": reason}
