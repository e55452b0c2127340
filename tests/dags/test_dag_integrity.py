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
    out["gate_skips_all"] = getattr(dag.get_task("gate"), "ignore_downstream_trigger_rules", None)
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
    "gate": ["register"],
    "register": ["infra_validate"],
    "infra_validate": ["deploy_canary"],
    "deploy_canary": ["verify_canary"],
    "verify_canary": ["promote_stable"],
    "promote_stable": ["report_run"],
    "report_run": [],
}


@pytest.fixture(scope="module")
def parsed(run_dag_probe) -> dict:
    return run_dag_probe(PROBE)


def test_no_import_errors(parsed):
    assert parsed["errors"] == {}


def test_tasks_and_edges(parsed):
    assert parsed["tasks"] == EXPECTED_EDGES


def test_report_runs_for_declined_candidates_but_not_after_failures(parsed):
    # The gate skips only its direct downstream; report_run runs when promotion was skipped
    # (declined) or succeeded, and is upstream_failed when an earlier step failed.
    assert parsed["gate_skips_all"] is False
    assert parsed["trigger_rules"]["report_run"] == "none_failed_min_one_success"
    assert parsed["trigger_rules"]["deploy_canary"] == "all_success"


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
