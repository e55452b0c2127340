"""The DAGs' trigger forms, derived from the settings declarations (recflow.settings)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from recflow.settings import Settings, form_schemas, parse, setting

ROLLBACK = "Rollback"
# The rollback DAG only needs where the registry and the model server are.
ROLLBACK_KEYS = (
    "tracking_uri",
    "registered_model_name",
    "serving_model_name",
    "model_base_path",
    "model_config_file",
    "serving_host",
    "serving_port",
    "work_dir",
)


@dataclass(frozen=True)
class RollbackRequest(Settings):
    """The rollback DAG's own params, beside the registry and serving ones."""

    FORM_SECTION: ClassVar[str] = ROLLBACK

    target_version: int | None = setting(
        None,
        "Target version",
        "Registered model version to serve again. Empty: the version with MLflow alias 'previous' (the champion before the last promotion).",
        ge=1,
    )
    reason: str = setting(
        "",
        "Reason",
        "Why the rollback happens (incident, metric, ticket); recorded on the rolled-back version and the MLflow run.",
    )

    @classmethod
    def split(cls, params: dict[str, Any]) -> RollbackRequest:
        """Take this request's params out of ``params`` (the rest configure the pipeline)."""
        own: dict[str, Any] = {
            name: params.pop(name) for name in ("target_version", "reason") if name in params
        }
        request: RollbackRequest = parse(cls, own)
        return request


def _params(cfg: Any, names: tuple[str, ...] | None = None) -> dict[str, Any]:
    from airflow.sdk import Param

    return {name: Param(v, **schema) for name, (v, schema) in form_schemas(cfg, names).items()}


def training_params() -> dict[str, Any]:
    """Airflow Params of ``recsys_training``, grouped by section."""
    from recflow.config import PipelineConfig

    return _params(PipelineConfig())


def policy_params() -> dict[str, Any]:
    """Airflow Params of ``recsys_policy``, grouped by section."""
    from recflow.config import PolicyConfig

    return _params(PolicyConfig())


def rollback_params() -> dict[str, Any]:
    """Airflow Params of ``recsys_rollback``: target version, reason, registry and serving."""
    from recflow.config import PipelineConfig

    return {**_params(RollbackRequest()), **_params(PipelineConfig(), ROLLBACK_KEYS)}
