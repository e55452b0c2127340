"""Pipeline configuration: frozen dataclasses, built once (from DAG params) and passed down."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from recflow.errors import ConfigError

DataSource = Literal["synthetic", "movielens-100k", "movielens-1m", "csv", "parquet"]
GateRule = Literal["non-inferiority", "superiority"]

DATA_SOURCES: tuple[str, ...] = ("synthetic", "movielens-100k", "movielens-1m", "csv", "parquet")
GATE_RULES: tuple[str, ...] = ("non-inferiority", "superiority")
MODELS: tuple[str, ...] = ("ranking_mlp", "popularity")


def default_work_dir() -> Path:
    """Where runs, the MLflow store and the model base path live unless configured.

    ``RECFLOW_HOME`` wins; otherwise ``./var`` under the current directory.
    """
    return Path(os.environ.get("RECFLOW_HOME", "var")).resolve()


@dataclass(frozen=True)
class SyntheticConfig:
    n_users: int = 400
    n_items: int = 250
    n_genres: int = 8
    mean_events_per_user: int = 30
    seed: int = 7


@dataclass(frozen=True)
class DataConfig:
    source: str = "synthetic"
    path: str | None = None  # folder (MovieLens) or file (csv/parquet)
    items_path: str | None = None  # csv/parquet: item table file
    users_path: str | None = None  # csv/parquet: optional user table file
    # csv/parquet: canonical column -> column name in the file
    column_mapping: Mapping[str, str] = field(default_factory=dict)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


@dataclass(frozen=True)
class ValidationConfig:
    min_rating: float = 0.0
    max_rating: float = 5.0
    min_users: int = 20
    min_items: int = 20
    min_interactions: int = 500
    min_events_per_user: int = 3  # leave-last-out needs train + validation + test
    # Timestamps must lie in [earliest_timestamp, now + max_future_seconds].
    earliest_timestamp: int = 631152000  # 1990-01-01
    max_future_seconds: int = 86400
    sample_rows: int = 5


@dataclass(frozen=True)
class TrainConfig:
    model: str = "ranking_mlp"
    epochs: int = 5
    batch_size: int = 512
    embedding_dim: int = 32
    learning_rate: float = 0.002
    negatives_per_positive: int = 4
    seed: int = 42


@dataclass(frozen=True)
class GateConfig:
    # metric names without "@k": the gate reads f"{name}@{eval_k}" from the evaluation
    metric: str = "ndcg"
    # absolute floors on validation metrics; a metric missing here is not floored
    floors: Mapping[str, float] = field(default_factory=lambda: {"ndcg": 0.02, "hr": 0.05})
    # candidate[metric] must be >= popularity[metric] * (1 + min_lift_over_popularity)
    min_lift_over_popularity: float = 0.1
    rule: str = "non-inferiority"
    # non-inferiority: candidate >= champion - tolerance (absolute, on `metric`)
    # superiority:     candidate >= champion + min_improvement
    tolerance: float = 0.005
    min_improvement: float = 0.0


@dataclass(frozen=True)
class RegistryConfig:
    tracking_uri: str = ""  # empty: sqlite under work_dir/mlflow
    experiment: str = "recflow-training"
    model_name: str = "recflow-recommender"


@dataclass(frozen=True)
class ServingConfig:
    model_name: str = "recommender"
    model_base_path: str = ""  # empty: work_dir/models
    model_config_file: str = ""  # empty: work_dir/serving/models.config
    host: str = "127.0.0.1"
    grpc_port: int = 8500
    timeout_seconds: float = 10.0
    load_timeout_seconds: float = 120.0
    top_k: int = 20  # K of the exported serving signature


@dataclass(frozen=True)
class PipelineConfig:
    work_dir: Path = field(default_factory=default_work_dir)
    data: DataConfig = field(default_factory=DataConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval_k: int = 10
    gate: GateConfig = field(default_factory=GateConfig)
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    serving: ServingConfig = field(default_factory=ServingConfig)

    @property
    def runs_dir(self) -> Path:
        return self.work_dir / "runs"

    @property
    def tracking_uri(self) -> str:
        return self.registry.tracking_uri or f"sqlite:///{self.work_dir / 'mlflow' / 'mlflow.db'}"

    @property
    def artifact_root(self) -> Path:
        return self.work_dir / "mlflow" / "artifacts"

    @property
    def model_base_path(self) -> Path:
        return Path(self.serving.model_base_path or self.work_dir / "models")

    @property
    def model_config_file(self) -> Path:
        return Path(self.serving.model_config_file or self.work_dir / "serving" / "models.config")

    @property
    def server_address(self) -> str:
        return f"{self.serving.host}:{self.serving.grpc_port}"


# ---------------------------------------------------------------------------------------------
# Building from flat DAG params

# flat param name -> (section, field); a section of None means a PipelineConfig field.
_FLAT_PARAMS: dict[str, tuple[str | None, str]] = {
    "data_source": ("data", "source"),
    "data_path": ("data", "path"),
    "items_path": ("data", "items_path"),
    "users_path": ("data", "users_path"),
    "column_mapping": ("data", "column_mapping"),
    "synthetic_users": ("data.synthetic", "n_users"),
    "synthetic_items": ("data.synthetic", "n_items"),
    "synthetic_seed": ("data.synthetic", "seed"),
    "min_users": ("validation", "min_users"),
    "min_items": ("validation", "min_items"),
    "min_interactions": ("validation", "min_interactions"),
    "min_rating": ("validation", "min_rating"),
    "max_rating": ("validation", "max_rating"),
    "model": ("train", "model"),
    "epochs": ("train", "epochs"),
    "batch_size": ("train", "batch_size"),
    "embedding_dim": ("train", "embedding_dim"),
    "learning_rate": ("train", "learning_rate"),
    "negatives": ("train", "negatives_per_positive"),
    "seed": ("train", "seed"),
    "k": (None, "eval_k"),
    "gate_metric": ("gate", "metric"),
    "floor_ndcg": ("gate", "floors.ndcg"),
    "floor_hr": ("gate", "floors.hr"),
    "min_lift_over_popularity": ("gate", "min_lift_over_popularity"),
    "gate_rule": ("gate", "rule"),
    "tolerance": ("gate", "tolerance"),
    "min_improvement": ("gate", "min_improvement"),
    "tracking_uri": ("registry", "tracking_uri"),
    "registered_model_name": ("registry", "model_name"),
    "serving_model_name": ("serving", "model_name"),
    "model_base_path": ("serving", "model_base_path"),
    "model_config_file": ("serving", "model_config_file"),
    "serving_host": ("serving", "host"),
    "serving_port": ("serving", "grpc_port"),
    "top_k": ("serving", "top_k"),
    "work_dir": (None, "work_dir"),
}


def param_names() -> tuple[str, ...]:
    return tuple(_FLAT_PARAMS)


def _coerce(value: Any, current: Any, name: str) -> Any:
    if value is None:
        return current
    try:
        if isinstance(current, bool):
            return bool(value)
        if isinstance(current, int):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if isinstance(current, float):
            return float(value)
        if isinstance(current, Path):
            return Path(value).resolve()
    except (TypeError, ValueError):
        raise ConfigError(
            f"param {name!r}: expected a {type(current).__name__}, found {value!r}"
        ) from None
    return value


def from_params(params: Mapping[str, Any], base: PipelineConfig | None = None) -> PipelineConfig:
    """Build a config from flat DAG params; unknown names and bad values raise ConfigError."""
    cfg = base or PipelineConfig()
    unknown = sorted(set(params) - set(_FLAT_PARAMS))
    if unknown:
        raise ConfigError(
            f"unknown params {unknown}; expected some of {sorted(_FLAT_PARAMS)}"
        )
    sections: dict[str, dict[str, Any]] = {}
    top: dict[str, Any] = {}
    for name, value in params.items():
        if value is None or value == "":
            continue
        section, fld = _FLAT_PARAMS[name]
        if section is None:
            top[fld] = _coerce(value, getattr(cfg, fld), name)
        else:
            sections.setdefault(section, {})[fld] = (name, value)

    def apply(obj: Any, path: str) -> Any:
        changes: dict[str, Any] = {}
        for fld, (name, value) in sections.get(path, {}).items():
            if "." in fld:  # mapping entry, e.g. floors.ndcg
                key, sub = fld.split(".", 1)
                mapping = dict(changes.get(key, getattr(obj, key)))
                mapping[sub] = _coerce(value, 0.0, name)
                changes[key] = mapping
            else:
                changes[fld] = _coerce(value, getattr(obj, fld), name)
        return dataclasses.replace(obj, **changes) if changes else obj

    data = apply(cfg.data, "data")
    data = dataclasses.replace(data, synthetic=apply(data.synthetic, "data.synthetic"))
    cfg = dataclasses.replace(
        cfg,
        data=data,
        validation=apply(cfg.validation, "validation"),
        train=apply(cfg.train, "train"),
        gate=apply(cfg.gate, "gate"),
        registry=apply(cfg.registry, "registry"),
        serving=apply(cfg.serving, "serving"),
        **top,
    )
    check(cfg)
    return cfg


def check(cfg: PipelineConfig) -> None:
    """Raise ConfigError naming the first inconsistent value."""
    if cfg.data.source not in DATA_SOURCES:
        raise ConfigError(f"data_source: expected one of {DATA_SOURCES}, found {cfg.data.source!r}")
    if cfg.data.source != "synthetic" and not cfg.data.path:
        raise ConfigError(
            f"data_path is required for data_source={cfg.data.source!r}: "
            "give the folder (MovieLens) or file (csv/parquet) to read"
        )
    if cfg.data.source in ("csv", "parquet") and not cfg.data.items_path:
        raise ConfigError(
            f"items_path is required for data_source={cfg.data.source!r}: "
            "give a table with item_id, title and optionally genres"
        )
    if cfg.train.model not in MODELS:
        raise ConfigError(f"model: expected one of {MODELS}, found {cfg.train.model!r}")
    if cfg.gate.rule not in GATE_RULES:
        raise ConfigError(f"gate_rule: expected one of {GATE_RULES}, found {cfg.gate.rule!r}")
    if cfg.train.epochs < 1:
        raise ConfigError(f"epochs: expected >= 1, found {cfg.train.epochs}")
    if cfg.eval_k < 1 or cfg.serving.top_k < cfg.eval_k:
        raise ConfigError(
            f"k: expected 1 <= k <= top_k ({cfg.serving.top_k}), found {cfg.eval_k}"
        )
    if cfg.validation.min_rating > cfg.validation.max_rating:
        raise ConfigError(
            f"min_rating {cfg.validation.min_rating} exceeds max_rating {cfg.validation.max_rating}"
        )


def to_dict(cfg: PipelineConfig) -> dict[str, Any]:
    """A JSON-friendly view, for logging as MLflow params."""
    out = dataclasses.asdict(cfg)
    out["work_dir"] = str(cfg.work_dir)
    return out
