"""Stage 1: read the configured source into canonical tables under the run's folder."""

from __future__ import annotations

from typing import Any

from recflow import config as config_mod
from recflow.config import PipelineConfig
from recflow.pipeline.context import RunContext, make_registry, say, tracking_run
from recflow.registry import Registry


def run(cfg: PipelineConfig, ctx: RunContext, registry: Registry | None = None) -> dict[str, Any]:
    from recflow.data import dataset_digest, load_source, write_dataset
    from recflow.schema import ITEM_ID, USER_ID

    registry = registry or make_registry(cfg)
    mlflow_run = tracking_run(cfg, ctx, registry)
    registry.log_params(mlflow_run, config_mod.to_dict(cfg))

    source = cfg.data.source if cfg.data.source == "synthetic" else f"{cfg.data.source}:{cfg.data.path}"
    say(f"ingest: reading {source}")
    ds = load_source(cfg.data)
    write_dataset(ds, ctx.data_dir)
    digest = dataset_digest(ds)
    inter = ds.interactions
    summary = {
        "data_dir": str(ctx.data_dir),
        "digest": digest,
        "rows": int(len(inter)),
        "users": int(inter[USER_ID].nunique()),
        "items": int(inter[ITEM_ID].nunique()),
        "catalogue": int(len(ds.items)),
        "mlflow_run_id": mlflow_run,
    }
    registry.set_tags(mlflow_run, {"dataset.digest": digest, "dataset.source": source})
    registry.log_dataset(
        mlflow_run, inter, name="interactions", digest=digest, source=str(ctx.data_dir),
        context="training",
    )
    ctx.write_json("ingest.json", summary)
    say(
        f"ingest: {summary['rows']} interactions, {summary['users']} users, "
        f"{summary['items']} items -> {ctx.data_dir}"
    )
    return summary
