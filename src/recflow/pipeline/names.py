"""Names both pipelines (and rollback) share: MLflow aliases and tags, and stage record files.

The stage records are the small JSON files each stage leaves in the run folder
(``RunContext.write_json``) for the stages after it; MLflow aliases follow the serving labels
(challenger <-> canary, champion <-> stable, previous: the champion before the last promotion).
"""

from __future__ import annotations

# MLflow aliases of registered versions
CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS = "previous"
ROLLED_BACK = "rolled_back"

# MLflow run tags that find a DAG run's one tracking run
DAG_RUN_TAG = "airflow.dag_run_id"
DAG_ID_TAG = "airflow.dag_id"

# Stage records in the run folder
INGEST_JSON = "ingest.json"
LANDING_JSON = "landing.json"
VALIDATION_JSON = "validation.json"
DRIFT_JSON = "drift.json"
FEATURES_JSON = "features.json"
TRAIN_JSON = "train.json"
EVALUATION_JSON = "evaluation.json"
GATE_JSON = "gate.json"
REGISTER_JSON = "register.json"
INFRA_VALIDATION_JSON = "infra_validation.json"
REPORT_JSON = "report.json"
FEEDBACK_JSON = "feedback.json"
LEARN_JSON = "learn.json"
ESTIMATES_JSON = "estimates.json"
