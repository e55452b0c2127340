"""Stages of the policy DAG (``dags/recsys_policy.py``), one module per stage.

load -> validate -> learn -> estimate -> gate -> register -> deploy (deploy_canary,
verify_canary, promote). Each stage takes a ``PolicyConfig``, a ``RunContext`` and optionally a
registry, reads what earlier stages wrote under the run folder, and returns a small JSON-able
dict for XCom. All stages of a DAG run log into one MLflow run (``common.tracking_run``).
"""
