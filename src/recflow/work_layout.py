"""Where a pipeline keeps its files and finds its services (shared by every pipeline config).

Deployment defaults come from the environment: a container (docker-compose.yml) points the DAG
at its shared model volume, the tf-serving service and the MLflow server without DAG params;
explicit DAG params still win. Read when a config is built, never at import time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from recflow.errors import ConfigError
from recflow.settings import Settings, setting

ENV_SERVING_HOST = "RECFLOW_SERVING_HOST"
ENV_SERVING_PORT = "RECFLOW_SERVING_PORT"
ENV_MODEL_BASE_PATH = "RECFLOW_MODEL_BASE_PATH"
ENV_MODEL_CONFIG_FILE = "RECFLOW_MODEL_CONFIG_FILE"
ENV_TRACKING_URI = "RECFLOW_TRACKING_URI"
SERVING = "Registry and serving"
INFRA_SERVERS: tuple[str, ...] = ("tensorflow_model_server", "recflow-model-server")


def default_work_dir() -> Path:
    """Where runs, the MLflow store and the model base path live unless configured.

    ``RECFLOW_HOME`` wins; otherwise ``./var`` under the current directory.
    """
    return Path(os.environ.get("RECFLOW_HOME", "var")).resolve()


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
class RegistryConfig(Settings):
    """The MLflow tracking server and registered model."""

    FORM_SECTION: ClassVar[str] = SERVING

    tracking_uri: str = setting(
        title="MLflow tracking URI",
        help="Empty: $RECFLOW_TRACKING_URI or a SQLite store under the work folder.",
        factory=lambda: _env_str(ENV_TRACKING_URI, ""),
        null_default=True,
    )
    experiment: str = setting(
        "recflow-training",
        "MLflow experiment",
        "Experiment that holds one MLflow run per DAG run.",
        min_length=1,
    )
    model_name: str = setting(
        "recflow-recommender",
        "Registered model",
        "MLflow registered model (aliases challenger, champion, previous).",
        min_length=1,
        flat="registered_model_name",
    )


@dataclass(frozen=True)
class ServingConfig(Settings):
    """The model server (TF Serving or the local one) and infra validation."""

    FORM_SECTION: ClassVar[str] = SERVING

    model_name: str = setting(
        "recommender",
        "Serving model name",
        "Model name in TF Serving's model config (labels canary, stable).",
        min_length=1,
        flat="serving_model_name",
    )
    model_base_path: str = setting(
        title="Model base path",
        help="Folder that holds <model name>/<version>/ for TF Serving. Empty: under the work folder.",
        factory=lambda: _env_str(ENV_MODEL_BASE_PATH, ""),
        null_default=True,
    )
    model_config_file: str = setting(
        title="Model config file",
        help="TF Serving --model_config_file path. Empty: under the work folder.",
        factory=lambda: _env_str(ENV_MODEL_CONFIG_FILE, ""),
        null_default=True,
    )
    host: str = setting(
        title="Model server host",
        help="gRPC host of TF Serving or the local model server.",
        factory=lambda: _env_str(ENV_SERVING_HOST, "127.0.0.1"),
        flat="serving_host",
    )
    grpc_port: int = setting(
        title="Model server gRPC port",
        help="gRPC port (TF Serving's default is 8500).",
        factory=lambda: _env_int(ENV_SERVING_PORT, 8500),
        ge=1,
        le=65535,
        flat="serving_port",
    )
    timeout_seconds: float = setting(
        10.0,
        "Serving call timeout (s)",
        "gRPC deadline of one call to the model server.",
        gt=0,
        param=False,
    )
    load_timeout_seconds: float = setting(
        120.0,
        "Load timeout (s)",
        "How long a new version may take to become AVAILABLE.",
        gt=0,
        param=False,
    )
    reload_timeout_seconds: float = setting(
        300.0,
        "Reload deadline (s)",
        "Deadline of the model server's reload call that loads a version (TF Serving answers it once a new model is AVAILABLE; on a cold GPU that includes CUDA start-up and warmup). Other calls keep the ordinary timeout.",
        ge=1,
        le=3600,
        flat="reload_timeout",
    )
    answer_rtol: float = setting(
        5e-3,
        "Served-answer tolerance",
        "Canary check and infra validation: served scores may differ from the exported model's by this share of the row's largest score, and items this close may swap (5e-3 covers a GPU computing in TF32).",
        ge=0,
        le=0.1,
    )
    rpc_attempts: int = setting(
        4,
        "RPC attempts",
        "Calls retried on UNAVAILABLE within their deadline (idempotent calls only).",
        ge=1,
        param=False,
    )
    top_k: int = setting(
        20,
        "Served top K",
        "How many items the serving signature returns per user (>= K).",
        ge=1,
        le=1000,
    )
    infra_load_timeout_seconds: float = setting(
        120.0,
        "Infra validation load timeout (s)",
        "How long the sandboxed model server may take to load the candidate (AVAILABLE) before infra validation fails.",
        ge=1,
        le=3600,
        flat="infra_load_timeout",
    )
    infra_attempts: int = setting(
        2,
        "Infra validation attempts",
        "Sandbox start-ups tried when the infrastructure fails (port, start-up); a model that fails to load or answers wrongly is refused at once.",
        ge=1,
        le=5,
    )
    infra_server: str = setting(
        "",
        "Infra validation server",
        "Model server for the sandbox: empty picks tensorflow_model_server when it is on PATH, else recflow-model-server.",
        choices=INFRA_SERVERS,
        null_default=True,
    )


class WorkLayout:
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
