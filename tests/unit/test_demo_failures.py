"""The demo names the task that failed and prints its error (issue 13: it blamed ingest)."""

from __future__ import annotations

from recflow.dev.demo import _DagLog

# Lines as `airflow dags test` (Airflow 3.3.2) printed them for a run whose validate task
# failed (trimmed: ids shortened, GX chatter and most traceback frames left out). The XCom
# push of the ingest task names task_id='ingest' after validate has not started yet.
LOG = """\
2026-12-01T01:54:31.756856Z [info     ] [DAG TEST] starting task_id=ingest map_index=-1 [airflow.sdk.definitions.dag] loc=dag.py:1501
[recflow] ingest: reading csv:/tmp/events.csv
2026-12-01T01:54:42.496069Z [info     ] Pushing xcom                   [task] loc=task_runner.py:2280 ti=RuntimeTaskInstance(id=UUID('01a2'), task_id='ingest', dag_id='recsys_training')
2026-12-01T01:54:42.558802Z [info     ] Task instance state updated    [airflow.api_fastapi.execution_api.routes.task_instances] loc=task_instances.py:485 new_state=success rows_affected=1
2026-12-01T01:54:42.597899Z [info     ] [DAG TEST] end task task_id=ingest map_index=-1 [airflow.sdk.definitions.dag] loc=dag.py:1563
2026-12-01T01:54:42.605220Z [info     ] [DAG TEST] starting task_id=validate map_index=-1 [airflow.sdk.definitions.dag] loc=dag.py:1501
[recflow] validate: running the expectation suites (Great Expectations)
[recflow] validate: FAILED
data validation failed: 1 expectation(s) not met
- interactions.rating: 50 values are not numbers, e.g. 'abc', 'five' (rows 0, 2, 4, 6, 8, ...)
2026-12-01T01:54:45.387406Z [error    ] Task failed with exception     [task] loc=task_runner.py:1676
Traceback (most recent call last):
  File "/venv/lib/python3.11/site-packages/airflow/sdk/execution_time/task_runner.py", line 1579, in _run_task_and_map_outcome
    result = _execute_task(context=context, ti=ti, log=log)
             ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "/repo/src/recflow/validation/run.py", line 90, in validate_dataset
    raise ValidationFailed(_message(failures, index), failures=failures, data_docs=str(index))
recflow.errors.ValidationFailed: data validation failed: 1 expectation(s) not met
- interactions.rating: 50 values are not numbers, e.g. 'abc', 'five' (rows 0, 2, 4, 6, 8, ...)
    bad row {'row': 0, 'user_id': 'p_f2644809f6f3096b7287cf3d', 'item_id': '9', 'rating': None}
Fix the source data, or relax the thresholds in the DAG params. Data Docs: /tmp/index.html
2026-12-01T01:54:45.389055Z [info     ] ::group::Post Execute          [task] loc=task_runner.py:1677
2026-12-01T01:54:45.415011Z [info     ] Task instance state updated    [airflow.api_fastapi.execution_api.routes.task_instances] loc=task_instances.py:485 new_state=failed rows_affected=1
2026-12-01T01:54:45.500582Z [info     ] [DAG TEST] end task task_id=validate map_index=-1 [airflow.sdk.definitions.dag] loc=dag.py:1563
"""


def _watch(text: str) -> _DagLog:
    log = _DagLog()
    for line in text.splitlines(keepends=True):
        log.feed(line)
    log.close()
    return log


def test_the_failed_task_is_named_with_its_error_message() -> None:
    log = _watch(LOG)
    assert list(log.failed) == ["validate"]
    report = log.failure_report()
    assert report.startswith("task validate failed:")
    assert "ingest" not in report
    assert "recflow.errors.ValidationFailed: data validation failed" in report
    assert "rating: 50 values are not numbers, e.g. 'abc', 'five'" in report
    assert "Fix the source data" in report
    assert "Post Execute" not in report and "File " not in report  # no traceback frames


def test_chained_exceptions_report_the_last_one() -> None:
    chained = """\
2026-12-01T01:00:00.000000Z [info     ] [DAG TEST] starting task_id=deploy_canary map_index=-1 [x]
Traceback (most recent call last):
  File "a.py", line 1, in f
grpc.RpcError: <_InactiveRpcError of RPC that terminated with status = UNAVAILABLE>

The above exception was the direct cause of the following exception:

Traceback (most recent call last):
  File "b.py", line 2, in g
recflow.errors.ModelNotReady: model server at 127.0.0.1:8500 is not reachable; start it
2026-12-01T01:00:01.000000Z [info     ] Task instance state updated    [x] new_state=failed rows_affected=1
"""
    log = _watch(chained)
    assert log.failed == {
        "deploy_canary": "recflow.errors.ModelNotReady: model server at 127.0.0.1:8500 is not "
        "reachable; start it"
    }


def test_a_successful_run_reports_nothing() -> None:
    ok = LOG.split("2026-12-01T01:54:42.605220Z")[0] + (
        "2026-12-01T01:55:00.000000Z [info     ] DagRun Finished: dag_id=recsys_training, "
        "logical_date=None, run_id=manual__1, run_start_date=x, state=success, run_type=manual\n"
    )
    log = _watch(ok)
    assert log.failed == {} and log.failure_report() == ""
    assert (log.run_id, log.state) == ("manual__1", "success")


# A run whose gate declined (Airflow 3.3.2 `dags test` lines, trimmed): the gate records the
# decision, then fails on purpose with GateDeclined as AirflowFailException; report_run runs.
DECLINED = """\
2026-12-01T05:40:00.000000Z [info     ] [DAG TEST] starting task_id=gate map_index=-1 [airflow.sdk.definitions.dag] loc=dag.py:1501
[recflow] gate: DECLINED
[recflow] gate:   - ndcg@10 0.0100 is below the floor 0.0200
[recflow] gate: the champion keeps serving; the promotion steps do not run
2026-12-01T05:40:01.000000Z [error    ] Task failed with exception     [task] loc=task_runner.py:1639
Traceback (most recent call last):
  File "/repo/src/recflow/pipeline/retries.py", line 54, in wrapper
    return fn(*args, **kwargs)
recflow.errors.GateDeclined: gate: gate DECLINED the candidate: ndcg@10 0.0100 is below the floor 0.0200. The decision is recorded

The above exception was the direct cause of the following exception:

Traceback (most recent call last):
  File "/venv/lib/python3.11/site-packages/airflow/sdk/execution_time/task_runner.py", line 1579, in _run_task_and_map_outcome
    result = _execute_task(context=context, ti=ti, log=log)
airflow.sdk.exceptions.AirflowFailException: gate: gate DECLINED the candidate: ndcg@10 0.0100 is below the floor 0.0200. The decision is recorded [GateDeclined: a verdict, not a transient fault; not retried]
2026-12-01T05:40:01.100000Z [info     ] ::group::Post Execute          [task] loc=task_runner.py:1640
2026-12-01T05:40:01.200000Z [info     ] Task instance state updated    [airflow.api_fastapi.execution_api.routes.task_instances] loc=task_instances.py:485 new_state=failed rows_affected=1
2026-12-01T05:40:01.300000Z [info     ] [DAG TEST] starting task_id=report_run map_index=-1 [airflow.sdk.definitions.dag] loc=dag.py:1501
[recflow] report: logged 5 plots and report/summary.md to MLflow run abc
2026-12-01T05:40:05.000000Z [info     ] Task instance state updated    [airflow.api_fastapi.execution_api.routes.task_instances] loc=task_instances.py:485 new_state=success rows_affected=1
2026-12-01T05:40:05.100000Z [info     ] DagRun Finished: dag_id=recsys_training, logical_date=None, run_id=manual__2, run_start_date=x, state=failed, run_type=manual
"""


class _Said:
    task = ""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def say(self, text: str) -> None:
        self.lines.append(text)


def test_a_decline_is_reported_as_a_gate_decision_not_as_a_crash() -> None:
    said = _Said()
    log = _DagLog(said)  # type: ignore[arg-type]
    for line in DECLINED.splitlines(keepends=True):
        log.feed(line)
    log.close()
    assert (log.run_id, log.state) == ("manual__2", "failed")
    assert log.declined and log.only_declined
    assert "[recflow] gate: DECLINED" in said.lines
    assert "gate declined the candidate: the promotion steps do not run" in said.lines
    assert not any(line.startswith("task gate: failed") for line in said.lines)
    # a validation failure is still a failure: not a decline
    assert not _watch(LOG).declined and not _watch(LOG).only_declined
