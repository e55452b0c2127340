"""Rollback: put the previous champion back on the serving label `stable`.

This file only wires the task; the logic lives in ``recflow.pipeline.rollback``.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, get_current_context, task

from recflow.pipeline.params import rollback_params
from recflow.pipeline.pools import SERVING_POOL
from recflow.pipeline.retries import fail_fast, retry_args

DOC_MD = """
# Roll back the served recommender

Use when the current `stable` version misbehaves in production. One task, `rollback`:

1. picks the target: `target_version` if given, else the version with MLflow alias `previous`
   (the champion replaced by the last promotion);
2. re-installs it under the model base path from the registry if its folder is gone;
3. lists it in the model config beside the current stable version and waits until the server
   reports it AVAILABLE (a label may only point at a loaded version);
4. moves label `stable` to it, then stops serving the rolled-back version;
5. in MLflow: alias `champion` goes back to the target, the rolled-back version gets alias
   `rolled_back`, tags `serving=rolled_back` and `rollback.reason`; the step is recorded as an
   MLflow run with the reason.

Requests by label `stable` keep being answered throughout. Rolling forward again is a normal
training run (or this DAG with `target_version`).
"""


@dag(
    dag_id="recsys_rollback",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    # transient faults (MLflow, model server) retried with backoff; verdicts fail at once
    default_args=retry_args(),
    params=rollback_params(),
    doc_md=DOC_MD,
    tags=["recflow", "serving", "rollback"],
)
def recsys_rollback():
    @task(pool=SERVING_POOL)
    @fail_fast
    def rollback() -> dict:
        from recflow.config import from_rollback_params
        from recflow.pipeline import rollback as stage
        from recflow.pipeline.context import from_airflow

        cfg, ctx = from_airflow(get_current_context(), from_rollback_params)
        request = cfg.rollback
        return stage.run(cfg, ctx, target_version=request.target_version, reason=request.reason)

    rollback()


recsys_rollback()
