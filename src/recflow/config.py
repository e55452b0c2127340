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
from typing import Any, ClassVar, Literal

from recflow import settings as _settings
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
from recflow.settings import Settings, block, entry, setting
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
    RegistryConfig,
    ServingConfig,
    WorkLayout,
    default_work_dir,
)

__all__ = [
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

DataSource = Literal["synthetic", "movielens-100k", "movielens-1m", "csv", "parquet", "history"]
GateRule = Literal["non-inferiority", "superiority"]

# "history": every batch landed by the recsys_ingest DAG (recflow.data.history); data_path
# optional (default work_dir/history).
DATA_SOURCES: tuple[str, ...] = (
    "synthetic",
    "movielens-100k",
    "movielens-1m",
    "csv",
    "parquet",
    "history",
)
GATE_RULES: tuple[str, ...] = ("non-inferiority", "superiority")
GATE_METRICS: tuple[str, ...] = ("ndcg", "hr", "mrr")

DATA = "Data"
VALIDATION = "Validation"
GATE = "Evaluation and gate"
DRIFT = "Drift and skew"
SERVING = "Registry and serving"


# The synthetic generator holds several dense [users, items] float64 arrays (~40 bytes a cell).
SYNTHETIC_MAX_CELLS = 50_000_000


@dataclass(frozen=True)
class SyntheticConfig(Settings):
    """The seeded synthetic generator (recflow.data.synthetic)."""

    FORM_SECTION: ClassVar[str] = DATA
    FLAT_PREFIX: ClassVar[str] = "synthetic_"

    n_users: int = setting(
        400,
        "Synthetic users",
        "Number of users the synthetic generator creates.",
        ge=10,
        le=100000,
        flat="synthetic_users",
    )
    n_items: int = setting(
        250,
        "Synthetic items",
        "Catalogue size of the synthetic generator.",
        ge=10,
        le=50000,
        flat="synthetic_items",
    )
    n_genres: int = setting(
        8, "Synthetic genres", "Genres the generator plants.", ge=1, param=False
    )
    mean_events_per_user: int = setting(
        30, "Mean events per user", "Mean interactions per synthetic user.", ge=1, param=False
    )
    seed: int = setting(
        7,
        "Synthetic seed",
        "Seed of the synthetic generator; change it to get fresh data with the same structure.",
        ge=0,
    )

    def rules(self) -> list[str]:
        cells = self.n_users * self.n_items
        if cells <= SYNTHETIC_MAX_CELLS:
            return []
        return [
            f"expected users x items <= {SYNTHETIC_MAX_CELLS:,} (this generator builds dense "
            f"users x items arrays, ~{40 * cells / 2**30:.0f} GiB here), found "
            f"{self.n_users} x {self.n_items}; for large logs write parquet shards with "
            "recflow.data.stream (python -m recflow.data.stream) and read them with "
            "data_source=parquet"
        ]


@dataclass(frozen=True)
class DataConfig(Settings):
    """Where interactions come from."""

    FORM_SECTION: ClassVar[str] = DATA

    source: str = setting(
        "synthetic",
        "Data source",
        "Where interactions come from: the built-in seeded synthetic generator, MovieLens-100K/1M folders, or a generic CSV/Parquet file with a column mapping.",
        choices=DATA_SOURCES,
        flat="data_source",
    )
    path: str | None = setting(
        None,
        "Data path",
        "Folder (MovieLens) or interactions file (csv/parquet). Ignored for synthetic data.",
        flat="data_path",
    )
    items_path: str | None = setting(
        None,
        "Items file (csv/parquet)",
        "Item table with id, title and genres; required for csv/parquet sources.",
    )
    users_path: str | None = setting(
        None,
        "Users file (csv/parquet)",
        "Optional user attribute table.",
    )
    column_mapping: Mapping[str, str] = setting(
        title="Column mapping",
        help="csv/parquet only: canonical column (user_id, item_id, rating, timestamp, title, genres) -> column name in your files.",
        factory=dict,
    )
    synthetic: SyntheticConfig = block(SyntheticConfig)

    def rules(self) -> list[str]:
        out = []
        if self.source not in ("synthetic", "history") and not self.path:
            out.append(
                f"data_path is required for data_source={self.source!r}: give the folder (MovieLens) or file (csv/parquet) to read"
            )
        if self.source in ("csv", "parquet") and not self.items_path:
            out.append(
                f"items_path is required for data_source={self.source!r}: give a table with item_id, title and optionally genres"
            )
        return out


@dataclass(frozen=True)
class ValidationConfig(Settings):
    """Data validation limits (recflow.validation)."""

    FORM_SECTION: ClassVar[str] = VALIDATION

    min_users: int = setting(
        20,
        "Minimum users",
        "Validation fails with fewer distinct users.",
        ge=1,
    )
    min_items: int = setting(
        20,
        "Minimum items",
        "Validation fails with fewer distinct items.",
        ge=1,
    )
    min_interactions: int = setting(
        500,
        "Minimum interactions",
        "Validation fails with fewer interaction rows.",
        ge=1,
    )
    min_rating: float = setting(
        0.0,
        "Minimum rating",
        "Lowest valid rating (inclusive).",
    )
    max_rating: float = setting(
        5.0,
        "Maximum rating",
        "Highest valid rating (inclusive).",
    )
    min_events_per_user: int = setting(
        3,
        "Minimum events per user",
        "Leave-last-out needs train + validation + test.",
        ge=1,
        param=False,
    )
    earliest_timestamp: int = setting(
        631152000,
        "Earliest timestamp",
        "Timestamps before this (1990-01-01) are invalid.",
        param=False,
    )
    max_future_seconds: int = setting(
        86400,
        "Future tolerance (s)",
        "Timestamps may lie at most this far after now.",
        ge=0,
        param=False,
    )
    sample_rows: int = setting(5, "Sample rows", "Failing rows shown per check.", ge=0, param=False)

    def rules(self) -> list[str]:
        if self.min_rating > self.max_rating:
            return [f"min_rating {self.min_rating} exceeds max_rating {self.max_rating}"]
        return []


@dataclass(frozen=True)
class GateConfig(Settings):
    """The evaluation gate (recflow.gate): floors, lift over popularity, champion rule."""

    FORM_SECTION: ClassVar[str] = GATE

    metric: str = setting(
        "ndcg",
        "Gate metric",
        "Metric compared with popularity and the champion.",
        choices=GATE_METRICS,
        flat="gate_metric",
    )
    # absolute floors on validation metrics; a metric missing here is not floored
    floors: Mapping[str, float] = setting(
        title="Metric floors",
        help="Absolute floors on validation metrics; a metric missing here is not floored.",
        factory=lambda: {"ndcg": 0.02, "hr": 0.05},
        param=False,
        entries={
            "ndcg": entry(
                "NDCG@K floor", "Absolute minimum validation NDCG@K.", ge=0, le=1, flat="floor_ndcg"
            ),
            "hr": entry(
                "HR@K floor", "Absolute minimum validation HR@K.", ge=0, le=1, flat="floor_hr"
            ),
        },
    )
    min_lift_over_popularity: float = setting(
        0.1,
        "Lift over popularity",
        "The candidate must beat popularity by this relative margin (0.1 = 10%).",
        ge=0,
    )
    rule: str = setting(
        "non-inferiority",
        "Champion rule",
        "non-inferiority: no worse than the champion minus the tolerance (lets a model retrained on fresher data replace an equal one); superiority: strictly better by the minimum improvement.",
        choices=GATE_RULES,
        flat="gate_rule",
    )
    tolerance: float = setting(
        0.005,
        "Non-inferiority tolerance",
        "Absolute amount the gate metric may fall below the champion's.",
        ge=0,
        le=1,
    )
    min_improvement: float = setting(
        0.0,
        "Superiority margin",
        "Absolute improvement over the champion required by the superiority rule.",
        ge=0,
        le=1,
    )
    slice_floors: Mapping[str, float] = setting(
        title="Slice floors",
        help='Slice name -> floor on the gate metric for that slice, e.g. {"activity:cold": 0.02, "popularity:tail": 0.01, "genre:Drama": 0.03}. Slices: activity:cold|medium|heavy (terciles of training events), popularity:head|tail (top 20% items), genre:<name>.',
        factory=dict,
    )
    bootstrap_samples: int = setting(
        1000,
        "Bootstrap resamples",
        "Resamples of users for the paired bootstrap interval of candidate - champion NDCG.",
        ge=100,
        le=100000,
    )
    confidence: float = setting(
        0.95,
        "Bootstrap confidence",
        "Confidence level of the paired interval the champion rule is decided on (0.95 = 95%).",
        gt=0.5,
        lt=1,
    )
    # The champion comparison needs comparable catalogues (recflow.catalogue).
    catalogue_min_overlap: float = setting(
        0.9,
        "Catalogue overlap minimum",
        "The candidate must know at least this share of the champion's items (by id) for the champion comparison to mean something (0.9 = 90%); below it the gate declines.",
        ge=0,
        le=1,
    )
    allow_catalogue_change: bool = setting(
        False,
        "Allow a catalogue change",
        "Replace a champion that knows other items (a new data source or catalogue): the gate compares the two on the shared items only and records that the change was allowed.",
    )
    # 0.25: the ranking stage's HR@K can never exceed recall@N, so below it 3 in 4 held-out
    # items are lost before ranking. Measured (N=200): MovieLens-100K towers 0.77 (popularity
    # 0.51); 50k-item generated log 0.44 (popularity 0.39, the generator's p(item|user) 0.48).
    min_retrieval_recall: float = setting(
        0.25,
        "Two-stage: retrieval recall floor",
        "model=two_stage: the retrieval stage's validation recall@N must reach this and the recall@N of the N most popular unseen items.",
        ge=0,
        le=1,
    )
    bootstrap_seed: int = setting(
        0, "Bootstrap seed", "Seed of the paired bootstrap.", ge=0, param=False
    )


@dataclass(frozen=True)
class DriftConfig(Settings):
    """Limits of the drift and skew checks (recflow.drift) against the champion's training data.

    Jensen-Shannon divergences use log base 2, so they lie in [0, 1]; L-infinity is the largest
    absolute difference of two categorical distributions' probabilities (as TFDV uses).
    Measured on synthetic data (300 users x 200 items): a different generator seed gives an item
    popularity JSD of 0.16-0.18; a batch of only the 10 top items gives 0.85."""

    FORM_SECTION: ClassVar[str] = DRIFT
    FLAT_PREFIX: ClassVar[str] = "drift_"

    max_item_popularity_jsd: float = setting(
        0.3,
        "Item popularity drift limit (JSD)",
        "Largest Jensen-Shannon divergence (log2, 0..1) between the batch's item popularity and the champion's training data.",
        ge=0,
        le=1,
    )
    max_user_activity_jsd: float = setting(
        0.15,
        "User activity drift limit (JSD)",
        "Largest JSD between the events-per-user histograms of the batch and the champion's training data.",
        ge=0,
        le=1,
    )
    max_rating_linf: float = setting(
        0.15,
        "Rating drift limit (L-inf)",
        "Largest change of any rating value's share (L-infinity distance).",
        ge=0,
        le=1,
    )
    max_unseen_users: float = setting(
        0.5,
        "Unseen users limit",
        "Largest share of the batch's users the champion was not trained on.",
        ge=0,
        le=1,
    )
    max_unseen_items: float = setting(
        0.2,
        "Unseen items limit",
        "Largest share of the batch's items the champion was not trained on.",
        ge=0,
        le=1,
    )
    max_serving_unknown_users: float = setting(
        0.5,
        "Serving skew: unknown users limit",
        "Largest share of served requests (serving logs) for users the champion was not trained on.",
        ge=0,
        le=1,
        flat="skew_max_unknown_users",
    )
    max_serving_user_jsd: float = setting(
        0.5,
        "Serving skew: requested users limit (JSD)",
        "Largest JSD between users requested in serving logs and the champion's training users.",
        ge=0,
        le=1,
        flat="skew_max_user_jsd",
    )
    accept_drift: bool = setting(
        False,
        "Accept drift (release quarantine)",
        "Report the drift checks but do not stop the run: re-run a quarantined batch with this on to train on it.",
        flat="accept_drift",
    )
    serving_log_dir: str = setting(
        "",
        "Serving logs folder",
        "JSON-lines request logs for the skew checks. Empty: <work folder>/serving/requests.",
        flat="serving_log_dir",
        null_default=True,
    )


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
    return _settings.mlflow_params(cfg)


def train_config(base: TrainConfig | None = None, **params: Any) -> TrainConfig:
    """A TrainConfig from flat DAG-param names (``sasrec_epochs=3``), checked like a DAG run's.

    For code and tests that need training settings only; ``base`` keeps its other values.
    """
    cfg: TrainConfig = _settings.parse(TrainConfig, params, base)
    return cfg


def with_params(cfg: PipelineConfig, **params: Any) -> PipelineConfig:
    """``cfg`` with some flat DAG params changed, checked like a DAG run's."""
    return from_params(params, base=cfg)
