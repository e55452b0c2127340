"""Training pipeline: raw interaction logs -> validated data -> model -> gate -> MLflow -> serving.

This file only wires tasks; each step's logic lives in ``recflow.pipeline.<stage>``.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, get_current_context, task

from recflow.pipeline.params import training_params

DOC_MD = """
# Recommender training pipeline

Takes user-behaviour logs to a recommender served over gRPC, with every step validated, gated
and recorded in MLflow.

| step | what it does |
|---|---|
| `ingest` | reads the data source (synthetic, MovieLens-100K/1M, CSV/Parquet) into canonical tables under the run's folder |
| `validate` | Great Expectations suites: schema, nulls, rating range, duplicates, timestamps, item references, minimum counts; Data Docs are logged to MLflow. **A failure stops the run.** |
| `build_features` | chronological leave-last-out split (ties broken by log order), user and item profiles from training data only |
| `train` | fits the chosen model (epoch progress in the task log) |
| `export_model` | writes a SavedModel in the serving contract (`serving_default`: `user_id` -> top-K `item_ids`, `scores`, `titles`) with warmup requests, checked in a fresh TensorFlow-only process |
| `evaluate` | full-ranking HR/NDCG/MRR/coverage@K on validation and test for the candidate, popularity and the current champion (re-scored on this split) |
| `gate` | absolute floors, lift over popularity, and the champion rule (non-inferiority or superiority). **Declining skips the steps below; the run still succeeds and the reasons are in the log and in MLflow.** |
| `register` | MLflow model version with alias `challenger` |
| `deploy_canary` | copies the version into the model base path and loads it under TF Serving label `canary` |
| `verify_canary` | gRPC Predict through `canary` must equal the exported model's answers |
| `promote_stable` | label `stable` and alias `champion` move to it; the old champion becomes `previous` |

Params are grouped in the trigger form: data, validation, model, gate, registry and serving.
"""


def _stage():
    from recflow.pipeline.context import from_airflow

    return from_airflow(get_current_context())


@dag(
    dag_id="recsys_training",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    params=training_params(),
    doc_md=DOC_MD,
    tags=["recflow", "training"],
)
def recsys_training():
    @task
    def ingest() -> dict:
        from recflow.pipeline import ingest as stage

        return stage.run(*_stage())

    @task
    def validate(_: dict) -> dict:
        from recflow.pipeline import validate as stage

        return stage.run(*_stage())

    @task
    def build_features(_: dict) -> dict:
        from recflow.pipeline import features as stage

        return stage.run(*_stage())

    @task
    def train(_: dict) -> dict:
        from recflow.pipeline import train as stage

        return stage.run(*_stage())

    @task
    def export_model(_: dict) -> dict:
        from recflow.pipeline import export as stage

        return stage.run(*_stage())

    @task
    def evaluate(_: dict) -> dict:
        from recflow.pipeline import evaluate as stage

        return stage.run(*_stage())

    @task.short_circuit
    def gate(_: dict) -> bool:
        from recflow.pipeline import gate as stage

        return bool(stage.run(*_stage())["passed"])

    @task
    def register() -> dict:
        from recflow.pipeline import register as stage

        return stage.run(*_stage())

    @task
    def deploy_canary(_: dict) -> dict:
        from recflow.pipeline import deploy

        return deploy.deploy_canary(*_stage())

    @task
    def verify_canary(_: dict) -> dict:
        from recflow.pipeline import deploy

        return deploy.verify_canary(*_stage())

    @task
    def promote_stable(_: dict) -> dict:
        from recflow.pipeline import deploy

        return deploy.promote(*_stage())

    evaluated = evaluate(export_model(train(build_features(validate(ingest())))))
    registered = register()
    gate(evaluated) >> registered
    promote_stable(verify_canary(deploy_canary(registered)))


recsys_training()
