"""Pipeline configuration: frozen dataclasses, built once (from DAG params) and passed down."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from recflow.errors import ConfigError

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
MODELS: tuple[str, ...] = (
    "ranking_mlp",
    "popularity",
    "ease",
    "neumf",
    "sasrec",
    "sasrec_sqn",
    "multvae",
    "blend",
    "two_stage",
)


def default_work_dir() -> Path:
    """Where runs, the MLflow store and the model base path live unless configured.

    ``RECFLOW_HOME`` wins; otherwise ``./var`` under the current directory.
    """
    return Path(os.environ.get("RECFLOW_HOME", "var")).resolve()


# Deployment defaults from the environment: a container (docker-compose.yml) points the DAG at
# its shared model volume, the tf-serving service and the MLflow server without DAG params;
# explicit DAG params still win. Read when a config is built, never at import time.
ENV_SERVING_HOST = "RECFLOW_SERVING_HOST"
ENV_SERVING_PORT = "RECFLOW_SERVING_PORT"
ENV_MODEL_BASE_PATH = "RECFLOW_MODEL_BASE_PATH"
ENV_MODEL_CONFIG_FILE = "RECFLOW_MODEL_CONFIG_FILE"
ENV_TRACKING_URI = "RECFLOW_TRACKING_URI"
ENV_TRAIN_DISTRIBUTION = "RECFLOW_TRAIN_DISTRIBUTION"
ENV_TASK_RETRIES = "RECFLOW_TASK_RETRIES"
DISTRIBUTIONS: tuple[str, ...] = ("default", "mirrored", "multi_worker")


def _env_str(name: str, default: str) -> str:
    return os.environ.get(name, "") or default


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(
            f"environment variable {name}: expected an integer, found {raw!r}; fix or unset it"
        ) from None


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
    # Batches per call of the compiled train step (ranking_mlp, neumf): same batches and
    # updates, less per-step Python overhead (about 2x examples/s at batch 512 on 2 cores).
    steps_per_execution: int = 16
    # tf.distribute strategy the model is built and fitted under (see models/training.py):
    # "default" (one device), "mirrored" (all local GPUs), "multi_worker" (TF_CONFIG cluster).
    distribution: str = field(default_factory=lambda: _env_str(ENV_TRAIN_DISTRIBUTION, "default"))
    # EASE's L2 weight (lambda in B = I - P/diag(P), P = (X^T X + lambda I)^-1)
    ease_lambda: float = 250.0
    # SASRec / SQN (models/sasrec.py, models/sqn.py): own epochs/batch/lr, since a Transformer
    # over sequences wants other values than the ranking MLP.
    sasrec_epochs: int = 60
    sasrec_batch_size: int = 128
    sasrec_learning_rate: float = 0.001
    sasrec_max_len: int = 50
    sasrec_dim: int = 64
    sasrec_blocks: int = 2
    sasrec_heads: int = 1
    sasrec_dropout: float = 0.2
    sasrec_negatives: int = 0  # 0: full softmax over the catalogue; > 0: sampled softmax
    # With sasrec_negatives = 0, catalogues above this size train with sampled softmax over
    # sasrec_large_catalogue_negatives uniform negatives: the full softmax costs (and updates)
    # every item's embedding at every step.
    sasrec_full_softmax_max_items: int = 10_000
    sasrec_large_catalogue_negatives: int = 256
    sqn_gamma: float = 0.5
    sqn_negative_reward: float = 0.0  # reward of an event rated below 4 (explicit data)
    sqn_target_every: int = 100  # training steps between target-network updates
    sqn_tau: float = 1.0  # 1: copy at each update; < 1: Polyak averaging
    sqn_q_weight: float = 1.0  # weight of the Q loss next to the cross-entropy
    sqn_negatives: int = 0  # unlogged actions per state in the Q loss (SNQN); 0: SQN as published
    sqn_serve_head: str = "supervised"  # "supervised" | "q": head sasrec_sqn serves
    # Mult-VAE (models/multvae.py; Liang et al. 2018): the paper's [N-600-200-600-N] network,
    # input dropout 0.5, KL weight annealed to a cap; own epochs/batch/lr like SASRec.
    multvae_epochs: int = 200
    multvae_batch_size: int = 500
    multvae_learning_rate: float = 0.001
    multvae_hidden: int = 600
    multvae_latent: int = 200
    multvae_dropout: float = 0.5
    multvae_beta_max: float = 1.0  # the paper's 0.2 overfits ML-100K (bench/quality_history.md)
    multvae_anneal_epochs: int = 100  # epochs over which beta rises linearly from 0 to the cap
    multvae_members: int = 4  # networks trained side by side; served scores are their mean
    # blend (models/blend.py): standardised scores of item EASE (blend_item_lambda), user-side
    # EASE (blend_user_lambda) and Mult-VAE (multvae_*), weighted. These defaults come from an
    # earlier round whose grid was informed by test numbers; the choices made under
    # bench/PROTOCOL.md (inner folds only) are in bench/results/quality.json ("selection").
    blend_item_weight: float = 0.1
    blend_user_weight: float = 0.1
    blend_vae_weight: float = 0.8
    blend_item_lambda: float = 400.0
    blend_user_lambda: float = 800.0
    # DP-SGD for ranking_mlp (recflow.privacy_dp): per-example clipping to dp_l2_clip, Gaussian
    # noise of std dp_noise_multiplier * dp_l2_clip, epsilon reported at dp_delta (None: 1/rows).
    dp_enabled: bool = False
    dp_l2_clip: float = 1.0
    dp_noise_multiplier: float = 1.1
    dp_delta: float | None = None
    # two_stage (models/two_stage.py): the towers pick two_stage_candidates items per request
    # (brute-force dot product + top_k), the ranking MLP above (epochs, batch_size, ...) scores
    # only those. Towers: in-batch softmax with logQ correction, lazy Adam (models/two_tower.py).
    two_stage_candidates: int = 200
    two_stage_tower_dim: int = 32
    two_stage_tower_epochs: int = 10
    two_stage_tower_batch_size: int = 1024
    two_stage_tower_learning_rate: float = 0.01
    two_stage_tower_temperature: float = 0.2
    # Seconds between progress lines (examples/s, ETA) inside an epoch, an evaluation or a
    # large fit (recflow.progress); 0 turns them off.
    progress_seconds: float = 30.0


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
    # slice name (e.g. "activity:cold", "popularity:tail", "genre:Drama") -> floor on `metric`
    slice_floors: Mapping[str, float] = field(default_factory=dict)
    # paired bootstrap over users for the champion rule (used when per-user values exist)
    bootstrap_samples: int = 1000
    confidence: float = 0.95
    bootstrap_seed: int = 0
    # The champion comparison needs comparable catalogues: the candidate must know at least
    # this part of the champion's items (by id), else the gate declines (recflow.catalogue)...
    catalogue_min_overlap: float = 0.9
    # ...unless the trigger accepts the change knowingly (recorded in the gate result/MLflow).
    allow_catalogue_change: bool = False
    # model=two_stage: the retrieval stage's validation recall@N must reach this and the
    # recall@N of the N most popular unseen items (recflow.gate.retrieval_check). 0.25: the
    # ranking stage's HR@K can never exceed recall@N, so below it 3 in 4 held-out items are
    # lost before ranking. Measured (N=200): MovieLens-100K towers 0.77 (popularity 0.51);
    # 50k-item generated log 0.44 (popularity 0.39, the generator's own p(item|user) 0.48).
    min_retrieval_recall: float = 0.25


@dataclass(frozen=True)
class DriftConfig:
    """Limits of the drift and skew checks (recflow.drift) against the champion's training data.

    Jensen-Shannon divergences use log base 2, so they lie in [0, 1]; L-infinity is the largest
    absolute difference of two categorical distributions' probabilities (as TFDV uses).
    """

    # Measured on synthetic data (300 users x 200 items): a different generator seed, i.e. a
    # new popularity ranking, gives 0.16-0.18; a batch of only the 10 top items gives 0.85.
    max_item_popularity_jsd: float = 0.3
    max_user_activity_jsd: float = 0.15
    max_rating_linf: float = 0.15
    max_unseen_users: float = 0.5  # share of the batch's distinct users unknown to the champion
    max_unseen_items: float = 0.2  # share of the batch's distinct items unknown to the champion
    max_serving_unknown_users: float = 0.5  # share of served requests for untrained users
    max_serving_user_jsd: float = 0.5  # requested-user distribution vs training activity
    accept_drift: bool = False  # report the checks but do not block (operator release)
    serving_log_dir: str = ""  # empty: work_dir/serving/requests


@dataclass(frozen=True)
class RegistryConfig:
    # empty: sqlite under work_dir/mlflow
    tracking_uri: str = field(default_factory=lambda: _env_str(ENV_TRACKING_URI, ""))
    experiment: str = "recflow-training"
    model_name: str = "recflow-recommender"


@dataclass(frozen=True)
class ServingConfig:
    model_name: str = "recommender"
    # empty: work_dir/models
    model_base_path: str = field(default_factory=lambda: _env_str(ENV_MODEL_BASE_PATH, ""))
    # empty: work_dir/serving/models.config
    model_config_file: str = field(default_factory=lambda: _env_str(ENV_MODEL_CONFIG_FILE, ""))
    host: str = field(default_factory=lambda: _env_str(ENV_SERVING_HOST, "127.0.0.1"))
    grpc_port: int = field(default_factory=lambda: _env_int(ENV_SERVING_PORT, 8500))
    timeout_seconds: float = 10.0
    load_timeout_seconds: float = 120.0
    # HandleReloadConfigRequest that loads a version: TF Serving answers it only once a new
    # model name is AVAILABLE (server_core.cc), which on a cold GPU includes CUDA start-up and
    # the warmup replay; ordinary RPCs keep timeout_seconds.
    reload_timeout_seconds: float = 300.0
    # served vs exported answers (canary check, infra validation): relative to the row's
    # largest score; recflow.serving.compare explains why a TF32 GPU meets 5e-3.
    answer_rtol: float = 5e-3
    # calls retried on UNAVAILABLE within their deadline (idempotent calls only)
    rpc_attempts: int = 4
    top_k: int = 20  # K of the exported serving signature
    # Infra validation (sandboxed server before promotion): load timeout, start-up attempts,
    # and which server: "" picks tensorflow_model_server when on PATH, else the local one.
    infra_load_timeout_seconds: float = 120.0
    infra_attempts: int = 2
    infra_server: str = ""


@dataclass(frozen=True)
class RetryConfig:
    """Airflow retries of tasks that talk to MLflow or the model server (transient faults
    only: ``recflow.pipeline.retries``). Read when the DAG files are parsed, so the count
    comes from the environment, not from a run's params."""

    retries: int = field(default_factory=lambda: _env_int(ENV_TASK_RETRIES, 3))
    retry_delay_seconds: float = 30.0  # before the first retry
    backoff: float = 2.0  # each later wait multiplied by this (Airflow 3: a float; 0 = off)
    max_retry_delay_seconds: float = 600.0


class _WorkLayout:
    """Where a pipeline keeps its files and finds its services (shared by both pipelines).

    Not a dataclass: the configs that inherit it declare ``work_dir``, ``registry`` and
    ``serving`` as their own fields.
    """

    work_dir: Path
    registry: RegistryConfig
    serving: ServingConfig

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


@dataclass(frozen=True)
class PipelineConfig(_WorkLayout):
    work_dir: Path = field(default_factory=default_work_dir)
    data: DataConfig = field(default_factory=DataConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval_k: int = 10
    # Evaluate on a fixed random sample of this many users (0: every user); the same users
    # for candidate, popularity and champion, and metrics carry the sampling interval.
    eval_user_sample: int = 0
    gate: GateConfig = field(default_factory=GateConfig)
    drift: DriftConfig = field(default_factory=DriftConfig)
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    serving: ServingConfig = field(default_factory=ServingConfig)


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
    "steps_per_execution": ("train", "steps_per_execution"),
    "ease_lambda": ("train", "ease_lambda"),
    "sasrec_epochs": ("train", "sasrec_epochs"),
    "sasrec_batch_size": ("train", "sasrec_batch_size"),
    "sasrec_learning_rate": ("train", "sasrec_learning_rate"),
    "sasrec_max_len": ("train", "sasrec_max_len"),
    "sasrec_dim": ("train", "sasrec_dim"),
    "sasrec_blocks": ("train", "sasrec_blocks"),
    "sasrec_heads": ("train", "sasrec_heads"),
    "sasrec_dropout": ("train", "sasrec_dropout"),
    "sasrec_negatives": ("train", "sasrec_negatives"),
    "sasrec_full_softmax_max_items": ("train", "sasrec_full_softmax_max_items"),
    "sasrec_large_catalogue_negatives": ("train", "sasrec_large_catalogue_negatives"),
    "sqn_gamma": ("train", "sqn_gamma"),
    "sqn_negative_reward": ("train", "sqn_negative_reward"),
    "sqn_target_every": ("train", "sqn_target_every"),
    "sqn_tau": ("train", "sqn_tau"),
    "sqn_q_weight": ("train", "sqn_q_weight"),
    "sqn_negatives": ("train", "sqn_negatives"),
    "sqn_serve_head": ("train", "sqn_serve_head"),
    "multvae_epochs": ("train", "multvae_epochs"),
    "multvae_batch_size": ("train", "multvae_batch_size"),
    "multvae_learning_rate": ("train", "multvae_learning_rate"),
    "multvae_hidden": ("train", "multvae_hidden"),
    "multvae_latent": ("train", "multvae_latent"),
    "multvae_dropout": ("train", "multvae_dropout"),
    "multvae_beta_max": ("train", "multvae_beta_max"),
    "multvae_anneal_epochs": ("train", "multvae_anneal_epochs"),
    "multvae_members": ("train", "multvae_members"),
    "blend_item_weight": ("train", "blend_item_weight"),
    "blend_user_weight": ("train", "blend_user_weight"),
    "blend_vae_weight": ("train", "blend_vae_weight"),
    "blend_item_lambda": ("train", "blend_item_lambda"),
    "blend_user_lambda": ("train", "blend_user_lambda"),
    "dp_enabled": ("train", "dp_enabled"),
    "dp_l2_clip": ("train", "dp_l2_clip"),
    "dp_noise_multiplier": ("train", "dp_noise_multiplier"),
    "dp_delta": ("train", "dp_delta"),
    "two_stage_candidates": ("train", "two_stage_candidates"),
    "two_stage_tower_dim": ("train", "two_stage_tower_dim"),
    "two_stage_tower_epochs": ("train", "two_stage_tower_epochs"),
    "two_stage_tower_batch_size": ("train", "two_stage_tower_batch_size"),
    "two_stage_tower_learning_rate": ("train", "two_stage_tower_learning_rate"),
    "two_stage_tower_temperature": ("train", "two_stage_tower_temperature"),
    "min_retrieval_recall": ("gate", "min_retrieval_recall"),
    "progress_seconds": ("train", "progress_seconds"),
    "k": (None, "eval_k"),
    "eval_user_sample": (None, "eval_user_sample"),
    "gate_metric": ("gate", "metric"),
    "floor_ndcg": ("gate", "floors.ndcg"),
    "floor_hr": ("gate", "floors.hr"),
    "min_lift_over_popularity": ("gate", "min_lift_over_popularity"),
    "gate_rule": ("gate", "rule"),
    "tolerance": ("gate", "tolerance"),
    "min_improvement": ("gate", "min_improvement"),
    "slice_floors": ("gate", "slice_floors"),
    "bootstrap_samples": ("gate", "bootstrap_samples"),
    "confidence": ("gate", "confidence"),
    "catalogue_min_overlap": ("gate", "catalogue_min_overlap"),
    "allow_catalogue_change": ("gate", "allow_catalogue_change"),
    "drift_max_item_popularity_jsd": ("drift", "max_item_popularity_jsd"),
    "drift_max_user_activity_jsd": ("drift", "max_user_activity_jsd"),
    "drift_max_rating_linf": ("drift", "max_rating_linf"),
    "drift_max_unseen_users": ("drift", "max_unseen_users"),
    "drift_max_unseen_items": ("drift", "max_unseen_items"),
    "skew_max_unknown_users": ("drift", "max_serving_unknown_users"),
    "skew_max_user_jsd": ("drift", "max_serving_user_jsd"),
    "accept_drift": ("drift", "accept_drift"),
    "serving_log_dir": ("drift", "serving_log_dir"),
    "tracking_uri": ("registry", "tracking_uri"),
    "registered_model_name": ("registry", "model_name"),
    "serving_model_name": ("serving", "model_name"),
    "model_base_path": ("serving", "model_base_path"),
    "model_config_file": ("serving", "model_config_file"),
    "serving_host": ("serving", "host"),
    "serving_port": ("serving", "grpc_port"),
    "top_k": ("serving", "top_k"),
    "reload_timeout": ("serving", "reload_timeout_seconds"),
    "answer_rtol": ("serving", "answer_rtol"),
    "infra_load_timeout": ("serving", "infra_load_timeout_seconds"),
    "infra_attempts": ("serving", "infra_attempts"),
    "infra_server": ("serving", "infra_server"),
    "work_dir": (None, "work_dir"),
}


def param_names() -> tuple[str, ...]:
    return tuple(_FLAT_PARAMS)


def _coerce(value: Any, current: Any, name: str) -> Any:
    if value is None:
        return current
    try:
        if isinstance(current, bool):
            if isinstance(value, str):
                lowered = value.strip().lower()
                if lowered not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                return lowered in ("true", "1", "yes")
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
        raise ConfigError(f"unknown params {unknown}; expected some of {sorted(_FLAT_PARAMS)}")
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
        drift=apply(cfg.drift, "drift"),
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
    if cfg.data.source not in ("synthetic", "history") and not cfg.data.path:
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
    if cfg.train.distribution not in DISTRIBUTIONS:
        raise ConfigError(
            f"distribution ({ENV_TRAIN_DISTRIBUTION}): expected one of {DISTRIBUTIONS}, "
            f"found {cfg.train.distribution!r}"
        )
    if cfg.gate.rule not in GATE_RULES:
        raise ConfigError(f"gate_rule: expected one of {GATE_RULES}, found {cfg.gate.rule!r}")
    if not 0.0 <= cfg.gate.catalogue_min_overlap <= 1.0:
        raise ConfigError(
            "catalogue_min_overlap: expected a share between 0 and 1, found "
            f"{cfg.gate.catalogue_min_overlap}"
        )
    if cfg.train.epochs < 1:
        raise ConfigError(f"epochs: expected >= 1, found {cfg.train.epochs}")
    if cfg.train.steps_per_execution < 1:
        raise ConfigError(
            f"steps_per_execution: expected >= 1, found {cfg.train.steps_per_execution}"
        )
    if cfg.train.dp_enabled and cfg.train.model != "ranking_mlp":
        # Only the ranking network has a DP-SGD step; a silent non-private fit would mislead.
        raise ConfigError(
            f"dp_enabled: DP-SGD exists for model 'ranking_mlp' only, found {cfg.train.model!r}"
        )
    if cfg.train.dp_enabled and not cfg.train.dp_noise_multiplier > 0:
        raise ConfigError(
            "dp_noise_multiplier: expected > 0 with dp_enabled (without noise epsilon is "
            f"infinite), found {cfg.train.dp_noise_multiplier}"
        )
    if cfg.eval_k < 1 or cfg.serving.top_k < cfg.eval_k:
        raise ConfigError(f"k: expected 1 <= k <= top_k ({cfg.serving.top_k}), found {cfg.eval_k}")
    if cfg.validation.min_rating > cfg.validation.max_rating:
        raise ConfigError(
            f"min_rating {cfg.validation.min_rating} exceeds max_rating {cfg.validation.max_rating}"
        )


def to_dict(cfg: PipelineConfig) -> dict[str, Any]:
    """A JSON-friendly view, for logging as MLflow params."""
    out = dataclasses.asdict(cfg)
    out["work_dir"] = str(cfg.work_dir)
    return out


# ---------------------------------------------------------------------------------------------
# The policy pipeline (dags/recsys_policy.py): logged bandit feedback -> policy -> serving.
# A section of its own rather than more PipelineConfig fields: the two DAGs share only the
# registry and serving shapes, with their own names (a policy is not a recommender).

POLICY_SOURCES: tuple[str, ...] = ("serving_log", "obd")
POLICY_CANDIDATES: tuple[str, ...] = ("neural", "linucb")  # exportable; Thompson is a baseline
POLICY_ESTIMATORS: tuple[str, ...] = ("ips", "snips", "dr")
POLICY_REWARD_MODELS: tuple[str, ...] = ("logistic", "ridge")
OBD_BEHAVIOR_POLICIES: tuple[str, ...] = ("random", "bts")
OBD_CAMPAIGNS: tuple[str, ...] = ("all", "men", "women")


@dataclass(frozen=True)
class PolicyConfig(_WorkLayout):
    work_dir: Path = field(default_factory=default_work_dir)
    # feedback: a folder of serving-log JSON-lines files, or the Open Bandit Dataset root
    source: str = "serving_log"
    data_path: str = ""
    log_glob: str = "*.jsonl"
    catalogue: tuple[str, ...] = ()  # serving log: every action id; empty: the logged ones
    fill_missing_rewards: bool = True  # a reward never reported counts as missing_reward
    missing_reward: float = 0.0
    obd_behavior_policy: str = "random"
    obd_campaign: str = "all"
    # validation
    binary_reward: bool = True
    min_rounds: int = 1000  # the gate's minimum of held-out slots (the estimate's evidence)
    # learning: the candidate is exported and served with exploration rate `epsilon`
    candidate: str = "neural"
    epsilon: float = 0.1
    epochs: int = 20
    hidden_units: int = 64
    learning_rate: float = 0.003
    linucb_alpha: float = 0.5
    ts_scale: float = 0.25
    reward_model: str = "logistic"
    seed: int = 0
    # estimation and gate: whole requests held out (seeded) and estimated on, never learned from
    holdout_fraction: float = 0.3
    n_boot: int = 2000
    confidence: float = 0.95
    gate_estimator: str = "dr"
    margin: float = 0.0  # relative: the lower bound must beat logging value x (1 + margin)
    registry: RegistryConfig = field(
        default_factory=lambda: RegistryConfig(
            experiment="recflow-policy", model_name="recflow-policy"
        )
    )
    serving: ServingConfig = field(default_factory=lambda: ServingConfig(model_name="policy"))


# flat param name -> field; "registry." / "serving." prefixes name the nested sections.
_POLICY_PARAMS: dict[str, str] = {
    **{
        f.name: f.name
        for f in dataclasses.fields(PolicyConfig)
        if f.name not in ("registry", "serving")
    },
    "tracking_uri": "registry.tracking_uri",
    "registered_model_name": "registry.model_name",
    "experiment": "registry.experiment",
    "serving_model_name": "serving.model_name",
    "model_base_path": "serving.model_base_path",
    "model_config_file": "serving.model_config_file",
    "serving_host": "serving.host",
    "serving_port": "serving.grpc_port",
}


def policy_param_names() -> tuple[str, ...]:
    return tuple(_POLICY_PARAMS)


def from_policy_params(params: Mapping[str, Any], base: PolicyConfig | None = None) -> PolicyConfig:
    """A PolicyConfig from the policy DAG's flat params; unknown names and bad values raise."""
    cfg = base or PolicyConfig()
    unknown = sorted(set(params) - set(_POLICY_PARAMS))
    if unknown:
        raise ConfigError(
            f"unknown policy params {unknown}; expected some of {sorted(_POLICY_PARAMS)}"
        )
    top: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {"registry": {}, "serving": {}}
    for name, value in params.items():
        if value is None or (value == "" and name != "data_path"):
            continue
        section, _, fld = _POLICY_PARAMS[name].rpartition(".")
        obj = getattr(cfg, section) if section else cfg
        if fld == "catalogue":
            if isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            if not isinstance(value, list | tuple):
                raise ConfigError(f"param 'catalogue': expected a list of ids, found {value!r}")
            coerced: Any = tuple(str(v) for v in value)
        else:
            coerced = _coerce(value, getattr(obj, fld), name)
        (nested[section] if section else top)[fld] = coerced
    cfg = dataclasses.replace(
        cfg,
        registry=dataclasses.replace(cfg.registry, **nested["registry"]),
        serving=dataclasses.replace(cfg.serving, **nested["serving"]),
        **top,
    )
    check_policy(cfg)
    return cfg


def check_policy(cfg: PolicyConfig) -> None:
    """Raise ConfigError naming the first inconsistent policy-pipeline value."""
    choices = {
        "source": (cfg.source, POLICY_SOURCES),
        "candidate": (cfg.candidate, POLICY_CANDIDATES),
        "gate_estimator": (cfg.gate_estimator, POLICY_ESTIMATORS),
        "reward_model": (cfg.reward_model, POLICY_REWARD_MODELS),
        "obd_behavior_policy": (cfg.obd_behavior_policy, OBD_BEHAVIOR_POLICIES),
        "obd_campaign": (cfg.obd_campaign, OBD_CAMPAIGNS),
    }
    for name, (value, allowed) in choices.items():
        if value not in allowed:
            raise ConfigError(f"{name}: expected one of {allowed}, found {value!r}")
    if not cfg.data_path:
        raise ConfigError(
            f"data_path is required for source={cfg.source!r}: give the serving-log folder "
            "(JSON-lines files) or the Open Bandit Dataset folder that holds random/ and bts/"
        )
    # epsilon 0 would log zero propensities for every non-greedy action: the next policy
    # could then not be evaluated from what this one serves.
    if not 0.0 < cfg.epsilon <= 1.0:
        raise ConfigError(f"epsilon: expected 0 < epsilon <= 1, found {cfg.epsilon}")
    if not 0.0 < cfg.confidence < 1.0:
        raise ConfigError(f"confidence: expected a level in (0, 1), found {cfg.confidence}")
    # 0 would evaluate on the learning rounds (optimistic); 1 would leave nothing to learn from.
    if not 0.0 < cfg.holdout_fraction < 1.0:
        raise ConfigError(
            f"holdout_fraction: expected a share of requests in (0, 1), found "
            f"{cfg.holdout_fraction}"
        )
    for name in ("min_rounds", "epochs", "hidden_units", "n_boot"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"{name}: expected >= 1, found {getattr(cfg, name)}")
    if cfg.margin <= -1.0:
        raise ConfigError(
            f"margin: expected > -1 (relative to the logging value), found {cfg.margin}"
        )


def policy_to_dict(cfg: PolicyConfig) -> dict[str, Any]:
    """A JSON-friendly view, for logging as MLflow params."""
    out = dataclasses.asdict(cfg)
    out["work_dir"] = str(cfg.work_dir)
    out["catalogue"] = ",".join(cfg.catalogue)
    return out
