"""Pipeline configuration: frozen dataclasses, built once (from DAG params) and passed down.

Every setting is declared once, with :func:`recflow.settings.setting`: type, default, bounds or
choices, form title/help/section and flat DAG-param name. The trigger forms, the flat-name
mapping, coercion, bound checks, MLflow params and docs/settings.md are derived from the
declarations; bounds and cross-field ``rules`` are checked whenever a config is built, so the
CLI, the demo, benchmarks and tests get the same checks as a DAG run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from recflow import settings as _settings
from recflow import settings_views
from recflow.data_config import (
    DATA_SOURCES,
    SYNTHETIC_MAX_CELLS,
    DataConfig,
    DataSource,
    SyntheticConfig,
    ValidationConfig,
)
from recflow.gate_config import GATE, GATE_METRICS, GATE_RULES, DriftConfig, GateConfig, GateRule
from recflow.policy_config import (
    OBD_BEHAVIOR_POLICIES,
    OBD_CAMPAIGNS,
    POLICY_CANDIDATES,
    POLICY_ESTIMATORS,
    POLICY_REWARD_MODELS,
    POLICY_SOURCES,
    PolicyConfig,
    check_policy,
    from_policy_params,
    policy_param_names,
    policy_to_dict,
)
from recflow.settings import Settings, block, setting
from recflow.train_config import (
    DISTRIBUTIONS,
    ENV_TRAIN_DISTRIBUTION,
    BlendSettings,
    DpSettings,
    EaseSettings,
    MultvaeSettings,
    SasrecSettings,
    SqnSettings,
    TrainConfig,
    TwoStageSettings,
)
from recflow.work_layout import (
    ENV_MODEL_BASE_PATH,
    ENV_MODEL_CONFIG_FILE,
    ENV_SERVING_HOST,
    ENV_SERVING_PORT,
    ENV_TRACKING_URI,
    SERVING,
    RegistryConfig,
    ServingConfig,
    WorkLayout,
    default_work_dir,
)

__all__ = [
    "DATA_SOURCES",
    "GATE_METRICS",
    "GATE_RULES",
    "SYNTHETIC_MAX_CELLS",
    "DataConfig",
    "DataSource",
    "DriftConfig",
    "GateConfig",
    "GateRule",
    "SyntheticConfig",
    "ValidationConfig",
    "DISTRIBUTIONS",
    "ENV_MODEL_BASE_PATH",
    "ENV_MODEL_CONFIG_FILE",
    "ENV_SERVING_HOST",
    "ENV_SERVING_PORT",
    "ENV_TRACKING_URI",
    "ENV_TRAIN_DISTRIBUTION",
    "OBD_BEHAVIOR_POLICIES",
    "OBD_CAMPAIGNS",
    "POLICY_CANDIDATES",
    "POLICY_ESTIMATORS",
    "POLICY_REWARD_MODELS",
    "POLICY_SOURCES",
    "BlendSettings",
    "DpSettings",
    "EaseSettings",
    "MultvaeSettings",
    "PolicyConfig",
    "RegistryConfig",
    "SasrecSettings",
    "ServingConfig",
    "SqnSettings",
    "TrainConfig",
    "TwoStageSettings",
    "check_policy",
    "default_work_dir",
    "from_policy_params",
    "policy_param_names",
    "policy_to_dict",
]


@dataclass(frozen=True)
class PipelineConfig(WorkLayout, Settings):
    """The training pipeline (dags/recsys_training.py)."""

    FORM_SECTION: ClassVar[str] = GATE

    data: DataConfig = block(DataConfig)
    validation: ValidationConfig = block(ValidationConfig)
    train: TrainConfig = block(TrainConfig)
    eval_k: int = setting(
        10,
        "K (cut-off)",
        "Metrics are computed on the top K of a full ranking (HR@K, NDCG@K, MRR@K, coverage@K).",
        ge=1,
        le=100,
        flat="k",
    )
    # The same users for candidate, popularity and champion; metrics carry the sampling interval.
    eval_user_sample: int = setting(
        0,
        "Evaluation user sample",
        "0 = evaluate every user; N = a fixed random sample of N users (the same for candidate and champion); metrics then carry the interval the sampling implies.",
        ge=0,
    )
    gate: GateConfig = block(GateConfig)
    drift: DriftConfig = block(DriftConfig)
    registry: RegistryConfig = block(RegistryConfig, hide=("experiment",))
    serving: ServingConfig = block(ServingConfig)

    work_dir: Path = setting(
        title="Work folder",
        help="Where run data, the MLflow store and models live. Empty: $RECFLOW_HOME or ./var.",
        factory=default_work_dir,
        section=SERVING,
    )

    def rules(self) -> list[str]:
        if self.serving.top_k < self.eval_k:
            return [f"k: expected 1 <= k <= top_k ({self.serving.top_k}), found {self.eval_k}"]
        return []


ENV_TASK_RETRIES = "RECFLOW_TASK_RETRIES"


def _env_retries() -> int:
    from recflow.work_layout import _env_int

    return _env_int(ENV_TASK_RETRIES, 3)


@dataclass(frozen=True)
class RetryConfig(Settings):
    """Airflow retries of tasks that talk to MLflow or the model server (transient faults
    only: ``recflow.pipeline.retries``). Read when the DAG files are parsed, so the count
    comes from the environment, not from a run's params."""

    retries: int = setting(
        title="Task retries",
        help=f"From ${ENV_TASK_RETRIES} (default 3).",
        factory=_env_retries,
        ge=0,
        param=False,
    )
    retry_delay_seconds: float = setting(
        30.0, "Retry delay (s)", "Wait before the first retry.", ge=0, param=False
    )
    backoff: float = setting(
        2.0,
        "Retry backoff",
        "Each later wait multiplied by this (Airflow 3: a float; 0 = off).",
        ge=0,
        param=False,
    )
    max_retry_delay_seconds: float = setting(
        600.0, "Longest retry delay (s)", "Upper bound of a retry's wait.", ge=0, param=False
    )


@dataclass(frozen=True)
class RollbackRequest(Settings):
    """What the rollback DAG (dags/recsys_rollback.py) is asked to do."""

    FORM_SECTION: ClassVar[str] = "Rollback"

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


@dataclass(frozen=True)
class RollbackConfig(PipelineConfig):
    """The training pipeline's registry and serving, plus the rollback request."""

    rollback: RollbackRequest = block(RollbackRequest)


def from_rollback_params(params: Mapping[str, Any]) -> RollbackConfig:
    """A RollbackConfig from the rollback DAG's flat params (checked like the others)."""
    cfg: RollbackConfig = _settings.parse(RollbackConfig, params)
    return cfg


# ---------------------------------------------------------------------------------------------
# Building from flat DAG params (the one path every entry point takes)


def param_names() -> tuple[str, ...]:
    """The training DAG's flat param names."""
    return tuple(_settings.param_map(PipelineConfig))


def from_params(params: Mapping[str, Any], base: PipelineConfig | None = None) -> PipelineConfig:
    """Build a config from flat DAG params; unknown names and bad values raise ConfigError.

    Every bad value is named in one message (name, bound, value); None or "" keeps the default.
    """
    cfg: PipelineConfig = _settings.parse(PipelineConfig, params, base)
    return cfg


def check(cfg: PipelineConfig) -> None:
    """Raise ConfigError for a config whose values break their bounds or rules.

    Construction already checks each block; this re-checks a whole config (e.g. one built
    with ``object.__new__`` or unpickled) against the same declarations.
    """
    _settings.parse(PipelineConfig, _settings.flat_values(cfg))
    for section in (cfg.data, cfg.validation, cfg.train, cfg.gate, cfg.drift, cfg.serving):
        section.__post_init__()
    cfg.__post_init__()


def to_dict(cfg: PipelineConfig) -> dict[str, Any]:
    """A JSON-friendly view, for logging as MLflow params (dotted config paths)."""
    return settings_views.mlflow_params(cfg)


def train_config(base: TrainConfig | None = None, **params: Any) -> TrainConfig:
    """A TrainConfig from flat DAG-param names (``sasrec_epochs=3``), checked like a DAG run's.

    For code and tests that need training settings only; ``base`` keeps its other values.
    """
    cfg: TrainConfig = _settings.parse(TrainConfig, params, base)
    return cfg


def with_params(cfg: PipelineConfig, **params: Any) -> PipelineConfig:
    """``cfg`` with some flat DAG params changed, checked like a DAG run's."""
    return from_params(params, base=cfg)
