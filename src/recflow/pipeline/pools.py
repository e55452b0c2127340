"""The Airflow pool that serialises every task touching a model server's configuration.

``deploy_canary``, ``verify_canary`` and ``promote_stable`` of the training and policy DAGs,
``rollback``, and the training DAG's ``infra_validate`` declare ``pool=SERVING_POOL``. With one
slot, two runs (of one DAG or of different DAGs) never interleave their read-modify-write of the
shared ``models.config`` and reload RPCs, and at most one infra-validation sandbox server
(a second ``tensorflow_model_server`` process in a worker) runs at a time.

docker-compose.yml's ``airflow-init`` creates the pool (``airflow pools set``); the scheduler
would leave a task in a missing pool unscheduled. ``airflow dags test`` (the demo and the test
harness) runs such a task anyway: measured with Airflow 3.3.2, a task with
``pool="recflow_serving"`` ran and the run succeeded with no pool defined.
"""

from __future__ import annotations

SERVING_POOL = "recflow_serving"
SERVING_POOL_SLOTS = 1
SERVING_POOL_DESCRIPTION = (
    "recflow: one task at a time may change a model server's config (deploy, verify, promote, "
    "rollback, infra validation)"
)
