"""The training DAG imports cleanly, cheaply, and wires the steps in the documented order."""

from __future__ import annotations

from pathlib import Path

import pytest

from recflow.dev.airflow_env import DAGS_FOLDER

PROBE = r"""
import json, sys, time
t0 = time.perf_counter()
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
seconds = time.perf_counter() - t0
out = {"errors": {k: str(v) for k, v in bag.import_errors.items()}, "seconds": seconds,
       "heavy": sorted(m for m in ("tensorflow", "keras", "great_expectations", "mlflow", "pandas")
                       if m in sys.modules)}
dag = bag.dags.get("recsys_training")
if dag is not None:
    out["tasks"] = {t.task_id: sorted(t.downstream_task_ids) for t in dag.tasks}
    out["params"] = {k: {**dag.params.get_param(k).schema, "description": dag.params.get_param(k).description} for k in dag.params.keys()}
    out["doc_md"] = bool(dag.doc_md)
    out["trigger_rules"] = {t.task_id: getattr(t.trigger_rule, "value", str(t.trigger_rule)) for t in dag.tasks}
    out["upstream"] = {t.task_id: sorted(t.upstream_task_ids) for t in dag.tasks}
    out["leaves"] = sorted(t.task_id for t in dag.leaves)
    out["short_circuits"] = {d.dag_id: sorted(t.task_id for t in d.tasks if "ShortCircuit" in type(t).__name__) for d in bag.dags.values()}
out["pools"] = {d.dag_id: {t.task_id: t.pool for t in d.tasks} for d in bag.dags.values()}
print("RESULT" + json.dumps(out))
"""

EXPECTED_EDGES = {
    "ingest": ["validate"],
    "validate": ["check_drift"],
    "check_drift": ["build_features"],
    "build_features": ["train"],
    "train": ["export_model"],
    "export_model": ["evaluate"],
    "evaluate": ["gate", "report_run"],
    "gate": ["register", "report_run"],
    "register": ["infra_validate", "report_run"],
    "infra_validate": ["deploy_canary"],
    "deploy_canary": ["verify_canary"],
    "verify_canary": ["promote_stable"],
    "promote_stable": [],
    "report_run": [],
}


@pytest.fixture(scope="module")
def parsed(run_dag_probe) -> dict:
    return run_dag_probe(PROBE)


def test_no_import_errors(parsed):
    assert parsed["errors"] == {}


def test_tasks_and_edges(parsed):
    assert parsed["tasks"] == EXPECTED_EDGES


def test_a_decline_fails_the_run_and_still_reports(parsed):
    # A decline fails the gate task (GateDeclined -> AirflowFailException), nothing is skipped
    # by a short-circuit: register and the promotion steps are upstream_failed (all_success).
    assert parsed["short_circuits"]["recsys_training"] == []
    assert parsed["short_circuits"]["recsys_policy"] == []
    for task in ("register", "infra_validate", "deploy_canary", "verify_canary", "promote_stable"):
        assert parsed["trigger_rules"][task] == "all_success", task
    # report_run runs once the gate decided, if evaluate succeeded (a decline: evaluate success,
    # gate failed, register upstream_failed); after an earlier failure all three are
    # upstream_failed and so is report_run (Airflow's all_done_min_one_success).
    assert parsed["trigger_rules"]["report_run"] == "all_done_min_one_success"
    assert parsed["upstream"]["report_run"] == ["evaluate", "gate", "register"]
    # promote_stable is a leaf: a decline or a failed promotion fails the run even though
    # report_run, the other leaf, succeeds (a run's state comes from its leaves).
    assert parsed["leaves"] == ["promote_stable", "report_run"]


# Every task that changes a model server's config, in every DAG, and the sandbox of the
# training DAG: one slot, so runs never interleave their reloads (recflow.pipeline.pools).
SERVING_TASKS = {
    "recsys_training": {"infra_validate", "deploy_canary", "verify_canary", "promote_stable"},
    "recsys_policy": {"deploy_canary", "verify_canary", "promote_stable"},
    "recsys_rollback": {"rollback"},
}


def test_serving_tasks_share_the_one_slot_pool(parsed):
    from recflow.pipeline.pools import SERVING_POOL

    for dag_id, tasks in SERVING_TASKS.items():
        pools = parsed["pools"][dag_id]
        in_pool = {t for t, pool in pools.items() if pool == SERVING_POOL}
        assert in_pool == tasks, dag_id
        assert all(pools[t] == "default_pool" for t in set(pools) - tasks), dag_id


def test_a_candidate_refused_by_infra_validation_is_never_deployed(parsed):
    # deploy_canary (the only step that copies into the model base path) runs only after
    # infra_validate succeeded; infra_validate itself works in a temporary sandbox.
    upstream = {t for t, down in parsed["tasks"].items() if "deploy_canary" in down}
    assert upstream == {"infra_validate"}
    assert parsed["trigger_rules"]["deploy_canary"] == "all_success"


def test_parse_does_not_import_heavy_libraries(parsed):
    assert parsed["heavy"] == [], "heavy imports belong inside tasks"


def test_params_have_titles_descriptions_and_sections(parsed):
    assert parsed["doc_md"]
    for name, schema in parsed["params"].items():
        assert schema.get("title"), name
        assert schema.get("description"), name
        assert schema.get("section"), name


def test_dag_folder_is_only_wiring():
    source = (Path(DAGS_FOLDER) / "recsys_training.py").read_text()
    assert "import tensorflow" not in source and "import pandas" not in source
