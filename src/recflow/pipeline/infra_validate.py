"""Stage 8b: infra validation of the registered challenger, before anything reaches serving.

The exported SavedModel (the one ``deploy_canary`` would install) is loaded in a sandboxed
model server and its served answers are compared with the in-process ones
(``recflow.infra_validation``). A refused model is never promoted: the reason goes to the
model version tag ``infra_validation`` and the MLflow run, the ``challenger`` alias is removed,
the run ends FAILED, and the task fails with the reason.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from recflow.config import PipelineConfig
from recflow.errors import ModelLoadFailed, ServerUnavailable, VerificationFailed
from recflow.jsontypes import JSONObject
from recflow.pipeline.context import RunContext, make_registry, say, tracking_run
from recflow.pipeline.names import CHALLENGER, INFRA_VALIDATION_JSON, REGISTER_JSON
from recflow.registry import Registry

if TYPE_CHECKING:
    from recflow.infra_validation import InfraValidationConfig

TAG = "infra_validation"
RESULT_FILE = INFRA_VALIDATION_JSON


def run(
    cfg: PipelineConfig,
    ctx: RunContext,
    registry: Registry | None = None,
    *,
    validation: InfraValidationConfig | None = None,
) -> JSONObject:
    """``validation`` overrides ``InfraValidationConfig`` (tests); by default from ``cfg``."""
    from recflow.infra_validation import InfraValidationConfig, validate_model

    registry = registry or make_registry(cfg)
    name = cfg.registry.model_name
    version = int(ctx.read_json(REGISTER_JSON)["version"])
    options = validation or InfraValidationConfig(
        load_timeout_seconds=cfg.serving.infra_load_timeout_seconds,
        attempts=cfg.serving.infra_attempts,
        server=cfg.serving.infra_server or None,
        rtol=cfg.serving.answer_rtol,
    )
    say(f"infra_validate: loading version {version} in a sandboxed model server")
    result = validate_model(ctx.saved_model_dir, options, work_dir=ctx.run_dir)
    ctx.write_json(RESULT_FILE, {"version": version, **result.to_dict()})
    mlflow_run = tracking_run(cfg, ctx, registry)
    if result.passed:
        registry.set_version_tag(name, version, TAG, "passed")
        registry.set_tags(mlflow_run, {TAG: "passed", f"{TAG}.server": result.server})
        say(f"infra_validate: PASSED: {result.reason}")
        return {"version": version, "passed": True, "reason": result.reason}
    if result.infrastructure:
        # No verdict on the model: Airflow retries the task (recflow.pipeline.retries).
        say(f"infra_validate: the sandbox failed, to be retried: {result.reason}")
        raise ServerUnavailable(
            f"infra validation of {name} version {version} could not run: {result.reason}"
        )
    registry.set_version_tag(name, version, TAG, f"failed: {result.reason}")
    registry.set_tags(
        mlflow_run,
        {
            TAG: "failed",
            f"{TAG}.reason": result.reason,
            f"{TAG}.server": result.server,
            "decision": "infra validation failed",
        },
    )
    # Only drop the alias if it still names this version (a retried task may find it gone).
    current = registry.get_version_by_alias(name, CHALLENGER)
    if current is not None and current.version == version:
        registry.delete_alias(name, CHALLENGER)
    registry.end_run(mlflow_run, "FAILED")
    say(f"infra_validate: FAILED: {result.reason}")
    message = (
        f"infra validation refused {name} version {version}: {result.reason}. It will not be "
        f"deployed; the serving stable version is unchanged. Fix the model and re-run the DAG "
        f"(details in {ctx.run_dir / RESULT_FILE})"
    )
    if result.load_seconds is None:
        raise ModelLoadFailed(message)
    raise VerificationFailed(message)
