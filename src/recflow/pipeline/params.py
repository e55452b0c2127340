"""The DAGs' trigger forms, derived from the settings declarations (recflow.settings)."""

from __future__ import annotations

from typing import Any

from recflow.settings import form_schemas

# The rollback DAG: its own request, and where the registry and the model server are.
ROLLBACK_KEYS = (
    "target_version",
    "reason",
    "tracking_uri",
    "registered_model_name",
    "serving_model_name",
    "model_base_path",
    "model_config_file",
    "serving_host",
    "serving_port",
    "work_dir",
)


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
    from recflow.config import RollbackConfig

    return _params(RollbackConfig(), ROLLBACK_KEYS)
