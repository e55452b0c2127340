"""Every DAG task maps verdicts to AirflowFailException; tasks that talk to MLflow or the model
server retry transient faults with exponential backoff (recflow.pipeline.retries)."""

from __future__ import annotations

import pytest

from recflow.pipeline.retries import retry_args

PROBE = r"""
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
out = {"errors": {k: str(v) for k, v in bag.import_errors.items()}, "dags": {}}
for dag_id, dag in bag.dags.items():
    out["dags"][dag_id] = {
        t.task_id: {
            "retries": t.retries,
            "backoff": t.retry_exponential_backoff,
            "delay": t.retry_delay.total_seconds(),
            "max_delay": t.max_retry_delay.total_seconds() if t.max_retry_delay else None,
            "fail_fast": bool(getattr(getattr(t, "python_callable", None), "recflow_fail_fast", False)),
        }
        for t in dag.tasks
    }
print("RESULT" + json.dumps(out))
"""


@pytest.fixture(scope="module")
def tasks(run_dag_probe) -> dict:
    parsed = run_dag_probe(PROBE)
    assert parsed["errors"] == {}
    return parsed["dags"]


@pytest.mark.parametrize("dag_id", ["recsys_training", "recsys_policy", "recsys_rollback"])
def test_tasks_that_reach_mlflow_or_the_server_retry_with_backoff(tasks, dag_id) -> None:
    want = retry_args()
    assert tasks[dag_id], dag_id
    for task_id, t in tasks[dag_id].items():
        assert t["retries"] == want["retries"] >= 1, task_id
        assert t["backoff"] == want["retry_exponential_backoff"] > 1, task_id
        assert t["delay"] == want["retry_delay"].total_seconds(), task_id
        assert t["max_delay"] == want["max_retry_delay"].total_seconds(), task_id


def test_every_task_fails_fast_on_verdicts(tasks) -> None:
    for dag_id, dag_tasks in tasks.items():
        for task_id, t in dag_tasks.items():
            assert t["fail_fast"], f"{dag_id}.{task_id} is not wrapped by fail_fast"


def test_landing_does_not_retry(tasks) -> None:
    # Landing reads files and writes the history; it talks to neither MLflow nor the server.
    assert {t["retries"] for t in tasks["recsys_ingest"].values()} == {0}
