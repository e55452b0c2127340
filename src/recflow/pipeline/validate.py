"""Stage 2: Great Expectations checks; a failure stops the run before anything is trained."""

from __future__ import annotations

import time

from recflow.config import PipelineConfig
from recflow.jsontypes import JSONObject
from recflow.pipeline import stages
from recflow.pipeline.context import RunContext, make_registry, say, tracking_run
from recflow.registry import Registry


def run(cfg: PipelineConfig, ctx: RunContext, registry: Registry | None = None) -> JSONObject:
    from recflow.data import read_dataset
    from recflow.validation import validate_dataset

    registry = registry or make_registry(cfg)
    mlflow_run = tracking_run(cfg, ctx, registry)
    ds = read_dataset(ctx.data_dir)
    say("validate: running the expectation suites (Great Expectations)")
    report = stages.record_validation(
        registry,
        mlflow_run,
        ctx,
        "validate",
        lambda: validate_dataset(ds, cfg.validation, ctx.data_docs_dir, now=int(time.time())),
        lambda r: r.to_dict(),
    )
    say(f"validate: passed; Data Docs at {report.data_docs_index}")
    return {"success": True, "data_docs": str(report.data_docs_index)}
