"""Where a DAG run keeps its files, and how stages reach the tracking run and the registry."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recflow.storage import atomic_write_text, safe_name

if TYPE_CHECKING:
    from recflow.config import PipelineConfig
    from recflow.registry import Registry

DAG_RUN_TAG = "airflow.dag_run_id"
DAG_ID_TAG = "airflow.dag_id"


def say(message: str) -> None:
    """One progress line; Airflow puts stdout in the task log and the demo echoes these."""
    print(f"[recflow] {message}", file=sys.stdout, flush=True)


@dataclass(frozen=True)
class RunContext:
    """Identity and folder of one DAG run. Every file a run writes lives under ``run_dir``."""

    dag_id: str
    run_id: str
    run_dir: Path

    @classmethod
    def create(cls, cfg: PipelineConfig, dag_id: str, run_id: str) -> RunContext:
        run_dir = cfg.runs_dir / safe_name(dag_id) / safe_name(run_id)
        return cls(dag_id=dag_id, run_id=run_id, run_dir=run_dir)

    @property
    def data_dir(self) -> Path:
        return self.run_dir / "data"

    @property
    def data_docs_dir(self) -> Path:
        return self.run_dir / "data_docs"

    @property
    def features_dir(self) -> Path:
        return self.run_dir / "features"

    @property
    def split_dir(self) -> Path:
        return self.run_dir / "split"

    @property
    def train_dir(self) -> Path:
        return self.run_dir / "train"

    @property
    def saved_model_dir(self) -> Path:
        return self.run_dir / "saved_model"

    def write_json(self, name: str, payload: Any) -> Path:
        path = self.run_dir / name
        atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=True, default=str))
        return path

    def read_json(self, name: str) -> Any:
        return json.loads((self.run_dir / name).read_text(encoding="utf-8"))


def make_registry(cfg: PipelineConfig) -> Registry:
    from recflow.registry import make_registry as _make

    return _make(cfg.tracking_uri, cfg.artifact_root)


def tracking_run(cfg: PipelineConfig, ctx: RunContext, registry: Registry) -> str:
    """The one MLflow run of this DAG run: found by its tags, created on first use.

    Looking it up instead of passing it around keeps every task retry-safe.
    """
    tags = {DAG_RUN_TAG: ctx.run_id, DAG_ID_TAG: ctx.dag_id}
    existing = registry.find_run(cfg.registry.experiment, tags)
    if existing:
        return existing
    # start_run records the code version (git commit, recflow version) itself.
    tags = {**tags, "recflow.run_dir": str(ctx.run_dir)}
    run_name = f"{ctx.dag_id}:{ctx.run_id}"
    return registry.start_run(cfg.registry.experiment, run_name, tags)


def make_promoter(cfg: PipelineConfig) -> Any:
    """A Promoter talking to the configured model server (TF Serving or the local one)."""
    from recflow.promotion import Promoter
    from recflow.serving.client import ServingClient

    client = ServingClient(
        cfg.server_address,
        timeout=cfg.serving.timeout_seconds,
        reload_timeout=cfg.serving.reload_timeout_seconds,
        attempts=cfg.serving.rpc_attempts,
    )
    return Promoter(
        client,
        cfg.model_config_file,
        cfg.serving.model_name,
        cfg.model_base_path,
        load_timeout=cfg.serving.load_timeout_seconds,
    )


def from_airflow(context: Mapping[str, Any]) -> tuple[PipelineConfig, RunContext]:
    """Config from the run's params and the run's identity, inside an Airflow task."""
    from recflow.config import from_params

    cfg = from_params(dict(context["params"]))
    ctx = RunContext.create(cfg, context["dag"].dag_id, context["run_id"])
    return cfg, ctx
