"""Stage 2: Great Expectations checks; a failure stops the run before anything is trained."""

from __future__ import annotations

import time
from typing import Any

from recflow.config import PipelineConfig
from recflow.errors import ValidationFailed
from recflow.pipeline.context import RunContext, make_registry, say, tracking_run
from recflow.registry import Registry


def run(cfg: PipelineConfig, ctx: RunContext, registry: Registry | None = None) -> dict[str, Any]:
    from recflow.data import read_dataset
    from recflow.validation import validate_dataset

    registry = registry or make_registry(cfg)
    mlflow_run = tracking_run(cfg, ctx, registry)
    ds = read_dataset(ctx.data_dir)
    say("validate: running the expectation suites (Great Expectations)")
    try:
        report = validate_dataset(ds, cfg.validation, ctx.data_docs_dir, now=int(time.time()))
    except ValidationFailed as failure:
        # Keep the evidence with the run, then fail loudly: nothing downstream may run.
        if ctx.data_docs_dir.exists():
            registry.log_artifacts(mlflow_run, ctx.data_docs_dir, "data_docs")
        registry.log_dict(mlflow_run, {"failures": failure.failures}, "validation/failures.json")
        registry.set_tags(mlflow_run, {"validation": "failed", "decision": "failed"})
        registry.end_run(mlflow_run, "FAILED")
        say(f"validate: FAILED\n{failure}")
        raise
    registry.log_artifacts(mlflow_run, ctx.data_docs_dir, "data_docs")
    summary = report.to_dict()
    registry.log_dict(mlflow_run, summary, "validation/report.json")
    registry.set_tags(mlflow_run, {"validation": "passed"})
    ctx.write_json("validation.json", summary)
    say(f"validate: passed; Data Docs at {report.data_docs_index}")
    return {"success": True, "data_docs": str(report.data_docs_index)}
