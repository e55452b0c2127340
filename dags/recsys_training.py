"""Training pipeline: raw interaction logs -> validated data -> model -> gate -> MLflow -> serving.

This file only wires tasks; each step's logic lives in ``recflow.pipeline.<stage>``.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Asset, dag, get_current_context, task

from recflow.pipeline.landing import HISTORY_ASSET_URI
from recflow.pipeline.params import training_params
from recflow.pipeline.pools import SERVING_POOL
from recflow.pipeline.retries import fail_fast, retry_args

DOC_MD = """
# Recommender training pipeline

Takes user-behaviour logs to a recommender served over gRPC, with every step validated, gated
and recorded in MLflow.

| step | what it does |
|---|---|
| `ingest` | reads the data source (synthetic, MovieLens-100K/1M, CSV/Parquet) into canonical tables under the run's folder |
| `validate` | Great Expectations suites: schema, nulls, rating range, duplicates, timestamps, item references, minimum counts; Data Docs are logged to MLflow. **A failure stops the run.** |
| `check_drift` | drift and training/serving skew against the champion's training data (item popularity, user activity, ratings, unseen users/items, requested users in serving logs). **A batch beyond the limits is quarantined and the run stops**; `accept_drift: true` releases it. |
| `build_features` | chronological leave-last-out split (ties broken by log order), user and item profiles from training data only |
| `train` | fits the chosen model (epoch progress in the task log) |
| `export_model` | writes a SavedModel in the serving contract (`serving_default`: `user_id` -> top-K `item_ids`, `scores`, `titles`) with warmup requests, checked in a fresh TensorFlow-only process |
| `evaluate` | full-ranking HR/NDCG/MRR/coverage@K on validation and test for the candidate, popularity and the current champion (re-scored on this split) |
| `gate` | absolute floors, lift over popularity, and the champion rule (non-inferiority or superiority). **A decline is recorded (log, MLflow tags and `gate/decision.json`), then the task fails (`AirflowFailException`, never retried): the promotion steps below do not run, the champion keeps serving, and the run is marked failed.** |
| `register` | MLflow model version with alias `challenger` |
| `infra_validate` | loads the version in a sandboxed model server (free port, temporary base path), waits for AVAILABLE, replays the model's warmup requests over gRPC and compares the answers with the offline model (same comparison as `verify_canary`). **A model that fails to load or answers differently is refused: tag `infra_validation`, alias `challenger` removed, run FAILED.** |
| `deploy_canary` | copies the version into the model base path and loads it under TF Serving label `canary` |
| `verify_canary` | gRPC Predict through `canary` must match the exported model's answers: same items in the same order up to near-ties, scores within a tolerance a GPU in TF32 meets (`answer_rtol`) |
| `promote_stable` | label `stable` and alias `champion` move to it; the old champion becomes `previous` |
| `report_run` | once the gate has decided (after `register` when it passed): logs plots (training curves, candidate vs popularity vs champion, metrics per slice, long-tail coverage by item-popularity decile) and `report/summary.md` (data, decision and reasons, metrics with deltas vs champion) to the run in MLflow, for promoted and declined candidates alike |

Params are grouped in the trigger form by section (data, validation, model and training, evaluation and gate, drift and skew, registry and serving); each field says what it does and its bounds.
"""


def _stage():
    from recflow.pipeline.context import from_airflow

    return from_airflow(get_current_context())


@dag(
    dag_id="recsys_training",
    # New history landed by recsys_ingest starts a run (on data_source "history"); manual
    # triggers work as before.
    schedule=[Asset(HISTORY_ASSET_URI)],
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    # transient faults (MLflow, model server) retried with backoff; verdicts fail at once
    default_args=retry_args(),
    params=training_params(),
    doc_md=DOC_MD,
    tags=["recflow", "training"],
)
def recsys_training():
    @task
    @fail_fast
    def ingest() -> dict:
        from recflow.pipeline import ingest as stage

        asset_run = bool(get_current_context().get("triggering_asset_events"))
        return stage.run(*_stage(), triggered_by_asset=asset_run)

    @task
    @fail_fast
    def validate(_: dict) -> dict:
        from recflow.pipeline import validate as stage

        return stage.run(*_stage())

    @task
    @fail_fast
    def check_drift(_: dict) -> dict:
        from recflow.pipeline import drift as stage

        return stage.run(*_stage())

    @task
    @fail_fast
    def build_features(_: dict) -> dict:
        from recflow.pipeline import features as stage

        return stage.run(*_stage())

    @task
    @fail_fast
    def train(_: dict) -> dict:
        from recflow.pipeline import train as stage

        return stage.run(*_stage())

    @task
    @fail_fast
    def export_model(_: dict) -> dict:
        from recflow.pipeline import export as stage

        return stage.run(*_stage())

    @task
    @fail_fast
    def evaluate(_: dict) -> dict:
        from recflow.pipeline import evaluate as stage

        return stage.run(*_stage())

    # A decline is recorded, then fails the task (GateDeclined -> AirflowFailException): the
    # promotion steps are upstream_failed; report_run still runs.
    @task
    @fail_fast
    def gate(_: dict) -> dict:
        from recflow.pipeline import gate as stage
        from recflow.pipeline.stages import raise_if_declined

        return raise_if_declined(stage.run(*_stage()), step="gate")

    @task
    @fail_fast
    def register() -> dict:
        from recflow.pipeline import register as stage

        return stage.run(*_stage())

    @task(pool=SERVING_POOL)
    @fail_fast
    def infra_validate(_: dict) -> dict:
        from recflow.pipeline import infra_validate as stage

        return stage.run(*_stage())

    @task(pool=SERVING_POOL)
    @fail_fast
    def deploy_canary(_: dict) -> dict:
        from recflow.pipeline import deploy

        return deploy.deploy_canary(*_stage())

    @task(pool=SERVING_POOL)
    @fail_fast
    def verify_canary(_: dict) -> dict:
        from recflow.pipeline import deploy

        return deploy.verify_canary(*_stage())

    @task(pool=SERVING_POOL)
    @fail_fast
    def promote_stable(_: dict) -> dict:
        from recflow.pipeline import deploy

        return deploy.promote(*_stage())

    # Plots and a summary in MLflow for promoted and declined candidates alike: it runs once
    # the gate has decided (and register has run or cannot), when evaluate succeeded; a run
    # that failed before evaluation (e.g. validation) leaves it upstream_failed. Not after the
    # promotion steps: promote_stable stays a leaf, so a decline or a failed deploy fails the run.
    @task(trigger_rule="all_done_min_one_success")
    @fail_fast
    def report_run() -> dict:
        from recflow.pipeline import reporting

        return reporting.log_run_report(*_stage())

    evaluated = evaluate(export_model(train(build_features(check_drift(validate(ingest()))))))
    registered = register()
    gated = gate(evaluated)
    gated >> registered
    promote_stable(verify_canary(deploy_canary(infra_validate(registered))))
    [evaluated, gated, registered] >> report_run()


recsys_training()
