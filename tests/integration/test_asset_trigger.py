"""An asset update from the ingest DAG makes the real scheduler start the training DAG.

test_data_trust.py stops at the queue row the asset event leaves; this test runs the piece that
consumes it: `airflow scheduler` in a subprocess against the same metadata DB. The scheduler
alone creates the asset-triggered DagRun (it reads serialised DAGs and the asset queue); the
tasks of that run would need the execution API of an `airflow api-server`, which this test does
not start, so the execution API URL points at a closed local port and the test stops the
scheduler as soon as the run exists. About a minute here (most of it is `dags test`).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from recflow.dev.airflow_env import airflow_env
from recflow.net import free_port

pytestmark = pytest.mark.slow

DAG = "recsys_training"
SCHEDULER_WAIT_S = 90.0


def _airflow(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["airflow", *args], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"airflow {' '.join(args)}:\n{(proc.stdout + proc.stderr)[-4000:]}"
    return proc


def _training_runs(db: Path) -> list[tuple[str, str, str | None]]:
    con = sqlite3.connect(db)
    try:
        rows = con.execute(
            "SELECT run_id, run_type, triggered_by FROM dag_run WHERE dag_id = ?", (DAG,)
        ).fetchall()
    finally:
        con.close()
    return [(str(r[0]), str(r[1]), r[2]) for r in rows]


def _stop(proc: subprocess.Popen[bytes]) -> None:
    # The scheduler forks executor workers: signal its whole process group (its own session).
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def test_asset_update_makes_the_scheduler_start_the_training_dag(tmp_path: Path) -> None:
    from recflow.config import SyntheticConfig
    from recflow.data import generate_synthetic
    from recflow.pipeline.landing import HISTORY_ASSET_URI

    work = tmp_path / "work"
    batch = tmp_path / "landing"
    batch.mkdir()
    ds = generate_synthetic(SyntheticConfig(n_users=60, n_items=40, seed=5))
    ds.interactions.to_csv(batch / "week1.csv", index=False)
    ds.items.to_csv(batch / "items.csv", index=False)

    env = airflow_env(work)
    # Nothing listens there: task runners fail fast instead of reaching some other Airflow's
    # api-server on the default localhost:8080.
    env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] = f"http://127.0.0.1:{free_port()}/execution/"
    db = work / "airflow" / "airflow.db"
    _airflow(env, "db", "migrate")
    _airflow(env, "dags", "reserialize")
    _airflow(env, "dags", "unpause", DAG)
    conf = {
        "work_dir": str(work),
        "data_path": str(batch / "week1.csv"),
        "min_users": 10,
        "min_items": 10,
        "min_interactions": 100,
    }
    _airflow(env, "dags", "test", "recsys_ingest", "-c", json.dumps(conf))
    assert _training_runs(db) == [], "landing alone must not start training; the scheduler does"

    log_path = tmp_path / "scheduler.log"
    with log_path.open("wb") as log:
        scheduler = subprocess.Popen(
            ["airflow", "scheduler"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    runs: list[tuple[str, str, str | None]] = []
    try:
        deadline = time.monotonic() + SCHEDULER_WAIT_S
        while time.monotonic() < deadline and not runs:
            if scheduler.poll() is not None:
                break
            time.sleep(1.0)
            runs = _training_runs(db)
    finally:
        _stop(scheduler)
    log_text = log_path.read_text(errors="replace")
    assert runs, (
        f"no {DAG} run within {SCHEDULER_WAIT_S:.0f} s (scheduler exit code "
        f"{scheduler.returncode}):\n{log_text[-4000:]}"
    )
    [(run_id, run_type, triggered_by)] = runs
    assert run_type == "asset_triggered" and run_id.startswith("asset_triggered__")
    assert triggered_by == "ASSET"

    con = sqlite3.connect(db)
    try:
        consumed = con.execute(
            "SELECT a.uri, e.source_dag_id, e.source_task_id FROM dagrun_asset_event l "
            "JOIN dag_run r ON r.id = l.dag_run_id JOIN asset_event e ON e.id = l.event_id "
            "JOIN asset a ON a.id = e.asset_id WHERE r.run_id = ?",
            (run_id,),
        ).fetchall()
        queued = con.execute("SELECT count(*) FROM asset_dag_run_queue").fetchone()[0]
    finally:
        con.close()
    # The run consumed exactly the ingest DAG's event, and the queue row it came from is gone.
    assert consumed == [(HISTORY_ASSET_URI, "recsys_ingest", "publish_history")]
    assert queued == 0

    # The same run as Airflow's own CLI reports it (the JSON list is the last line printed).
    listed = _airflow(env, "dags", "list-runs", DAG, "-o", "json").stdout
    payload = next(line for line in reversed(listed.splitlines()) if line.startswith("["))
    assert [r["run_id"] for r in json.loads(payload)] == [run_id]
