"""The one pipeline core: a DAG run's folder and identity, its registry, tracking run, promoter.

Used by the training and policy pipelines and by rollback alike: each takes a config that
inherits :class:`recflow.work_layout.WorkLayout` (where files live, which MLflow and which
model server), so nothing here depends on which pipeline runs.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from recflow.pipeline.names import DAG_ID_TAG, DAG_RUN_TAG
from recflow.storage import atomic_write_text, safe_name
from recflow.work_layout import WorkLayout

if TYPE_CHECKING:
    from airflow.sdk import Context

    from recflow.promotion import Comparison, Promotion
    from recflow.registry import Registry

__all__ = [
    "DAG_ID_TAG",
    "DAG_RUN_TAG",
    "RunContext",
    "from_airflow",
    "make_promoter",
    "make_registry",
    "say",
    "tracking_run",
]

Cfg = TypeVar("Cfg", bound=WorkLayout)


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
    def create(cls, cfg: WorkLayout, dag_id: str, run_id: str) -> RunContext:
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

    def write_json(self, name: str, payload: object) -> Path:
        path = self.run_dir / name
        atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=True, default=str))
        return path

    def read_json(self, name: str) -> Any:
        return json.loads((self.run_dir / name).read_text(encoding="utf-8"))


def make_registry(cfg: WorkLayout) -> Registry:
    from recflow.registry import make_registry as _make

    return _make(cfg.tracking_uri, cfg.artifact_root)


def tracking_run(cfg: WorkLayout, ctx: RunContext, registry: Registry) -> str:
    """The one MLflow run of this DAG run: found by its tags, created on first use.

    Looking it up instead of passing it around keeps every task retry-safe. ``start_run``
    records the code version (git commit, recflow version) itself.
    """
    tags = {DAG_RUN_TAG: ctx.run_id, DAG_ID_TAG: ctx.dag_id}
    existing = registry.find_run(cfg.registry.experiment, tags)
    if existing:
        return existing
    tags = {**tags, "recflow.run_dir": str(ctx.run_dir)}
    return registry.start_run(cfg.registry.experiment, f"{ctx.dag_id}:{ctx.run_id}", tags)


def make_promoter(cfg: WorkLayout, compare: Comparison | None = None) -> Promotion:
    """A Promoter for the configured serving model name on the configured model server.

    ``compare``: what "the canary answers like the exported model" means for this model's
    serving contract (default: the recommender contract, within ``serving.answer_rtol``).
    """
    from functools import partial

    from recflow.promotion import Promoter, compare_recommendations
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
        compare=compare or partial(compare_recommendations, rtol=cfg.serving.answer_rtol),
    )


def from_airflow(
    context: Context, parse: Callable[[Mapping[str, Any]], Cfg] | None = None
) -> tuple[Cfg, RunContext]:
    """Config from the run's params (``parse``: the DAG's, default the training pipeline's)
    and the run's identity, inside an Airflow task."""
    if parse is None:
        from recflow.config import from_params

        parse = from_params  # type: ignore[assignment]
    assert parse is not None
    cfg = parse(dict(context["params"]))
    return cfg, RunContext.create(cfg, context["dag"].dag_id, context["run_id"])
