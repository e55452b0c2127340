"""The DAGs' trigger forms, derived from the settings declarations (recflow.settings)."""

from __future__ import annotations

from recflow.settings import Settings
from recflow.settings_views import form_schemas

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


def _params(cfg: Settings, names: tuple[str, ...] | None = None) -> dict[str, object]:
    from airflow.sdk import Param

    return {
        # The JSON-schema keywords become Param's keyword arguments, as Airflow documents.
        name: Param(v, **schema)  # type: ignore[arg-type]
        for name, (v, schema) in form_schemas(cfg, names).items()
    }


def training_params() -> dict[str, object]:
    """Airflow Params of ``recsys_training``, grouped by section."""
    from recflow.config import PipelineConfig

    return _params(PipelineConfig())


def policy_params() -> dict[str, object]:
    """Airflow Params of ``recsys_policy``, grouped by section."""
    from recflow.config import PolicyConfig

    return _params(PolicyConfig())


def rollback_params() -> dict[str, object]:
    """Airflow Params of ``recsys_rollback``: target version, reason, registry and serving."""
    from recflow.config import RollbackConfig

    return _params(RollbackConfig(), ROLLBACK_KEYS)
