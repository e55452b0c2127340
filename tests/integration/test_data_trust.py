"""Data trust end to end: `airflow dags test`, real MLflow (SQLite), real gRPC model server.

In order (three DAG runs, about a minute and a half):
1. a csv batch with planted raw user ids ("canary-user-7f3a9c-...") is trained, registered with a
   model card and promoted; an application holding the key gets reasons over gRPC that name
   items from the user's own training history;
2. a batch with planted drift is quarantined and the champion keeps serving;
3. no raw user id is anywhere under the work folder (artifact store, model base path, run
   folders, Airflow logs and database, serving logs) nor in the `dags test` output;
4. the ingest DAG lands a batch once (a second landing changes nothing) and its asset update
   queues a run of the asset-scheduled training DAG.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

import pytest

from recflow.dev.airflow_env import airflow_env
from recflow.net import free_port
from recflow.serving.server_process import ModelServerProcess

pytestmark = pytest.mark.slow

MARK = "canary-user-7f3a9c"
REGISTERED = "trust-recommender"
SERVED = "trust"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from recflow.config import SyntheticConfig
    from recflow.data import generate_synthetic

    work = tmp_path_factory.mktemp("work")
    inputs = tmp_path_factory.mktemp("inputs")
    ds = generate_synthetic(SyntheticConfig(n_users=200, n_items=120, seed=5))
    inter = ds.interactions.astype(object).copy()
    inter["user_id"] = [f"{MARK}-{u}" for u in inter["user_id"]]
    inter.to_csv(inputs / "events.csv", index=False)
    ds.items.to_csv(inputs / "items.csv", index=False)
    top = inter["item_id"].value_counts().index[:15]
    inter[inter["item_id"].isin(top)].to_csv(inputs / "drifted.csv", index=False)

    port = free_port()
    server = ModelServerProcess(
        work / "serving" / "models.config",
        port=port,
        log_file=work / "logs" / "server.log",
        poll_seconds=0.5,
    ).start()
    e = airflow_env(work)
    e.pop("RECFLOW_PSEUDONYM_KEY", None)  # exercise the generated demo key
    subprocess.run(["airflow", "db", "migrate"], env=e, check=True, capture_output=True)
    base = {
        "work_dir": str(work),
        "data_source": "csv",
        "data_path": str(inputs / "events.csv"),
        "items_path": str(inputs / "items.csv"),
        "min_users": 10,
        "min_items": 10,
        "min_interactions": 100,
        "epochs": 3,
        "min_lift_over_popularity": 0.0,
        "serving_port": port,
        "registered_model_name": REGISTERED,
        "serving_model_name": SERVED,
    }
    yield {"work": work, "inputs": inputs, "env": e, "port": port, "base": base, "outputs": []}
    server.stop()


def airflow(env: dict, *args: str, conf: dict | None = None) -> subprocess.CompletedProcess:
    cmd = ["airflow", *args] + (["-c", json.dumps(conf)] if conf is not None else [])
    proc = subprocess.run(cmd, env=env["env"], capture_output=True, text=True, timeout=900)
    env["outputs"].append(proc.stdout + proc.stderr)
    return proc


def champion(env: dict) -> int | None:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=f"sqlite:///{env['work'] / 'mlflow' / 'mlflow.db'}")
    try:
        return int(client.get_model_version_by_alias(REGISTERED, "champion").version)
    except MlflowException:
        return None


def test_promoted_model_has_card_and_reasons_from_the_users_history(env):
    from mlflow import MlflowClient

    from recflow.features import load_split
    from recflow.privacy import load_key, pseudonymise_one
    from recflow.serving.client import ServingClient
    from recflow.serving.recommender import RecommenderClient

    proc = airflow(env, "dags", "test", "recsys_training", conf=env["base"])
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "drift: skipped (no champion yet" in out
    assert champion(env) == 1
    client = MlflowClient(tracking_uri=f"sqlite:///{env['work'] / 'mlflow' / 'mlflow.db'}")
    run_id = client.get_model_version(REGISTERED, "1").run_id
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"model_card.md", "reference_stats.json"} <= artifacts
    card = Path(client.download_artifacts(run_id, "model_card.md")).read_text()
    assert "## Known limits" in card and "## Gate" in card

    key = load_key(env["work"], create=False)
    raw = f"{MARK}-3"
    with RecommenderClient(
        ServingClient(f"127.0.0.1:{env['port']}"),
        pseudonym_key=key,
        request_log=env["work"] / "serving" / "requests",
    ) as c:
        [rec] = c.recommend(SERVED, [raw], k=10)
        [cold] = c.recommend(SERVED, ["someone-new"], k=3)
    [run_dir] = (env["work"] / "runs" / "recsys_training").iterdir()
    split = load_split(run_dir / "split")
    train = split.train[split.train["user_id"] == pseudonymise_one(raw, key)]
    assert len(train) > 0, "the pseudonymised user must be known to the model"
    import pandas as pd

    items = pd.read_parquet(run_dir / "data" / "items.parquet")
    history_titles = set(items[items["item_id"].isin(set(train["item_id"]))]["title"])
    assert rec.pseudonym == pseudonymise_one(raw, key)
    assert len(rec.reasons) == 10
    for reason in rec.reasons:
        assert reason.startswith("because you watched "), reason
        assert reason[len("because you watched ") :] in history_titles
    assert cold.reasons == ["popular with all users"] * 3


def test_planted_drift_is_quarantined_and_champion_keeps_serving(env):
    from recflow.serving.client import ServingClient

    conf = {**env["base"], "data_path": str(env["inputs"] / "drifted.csv"), "min_items": 5}
    proc = airflow(env, "dags", "test", "recsys_training", conf=conf)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "drift: batch quarantined" in out and "item_popularity_jsd" in out
    quarantined = list((env["work"] / "quarantine" / "recsys_training").iterdir())
    assert len(quarantined) == 1
    assert (quarantined[0] / "REASON.txt").read_text().startswith("Quarantined by the drift check")
    assert (quarantined[0] / "data" / "interactions.parquet").is_file()
    assert champion(env) == 1
    with ServingClient(f"127.0.0.1:{env['port']}") as c:
        [rec] = c.recommend(SERVED, ["p_000000000000000000000000"], k=3)
    assert rec.model_version == 1


def test_no_raw_user_id_anywhere(env):
    import pandas as pd

    needle = MARK.encode()
    hits = []
    for path in env["work"].rglob("*"):
        if not path.is_file():
            continue
        if needle in path.read_bytes():
            hits.append(str(path))
        elif path.suffix == ".parquet":  # compressed pages could hide a string from a byte scan
            df = pd.read_parquet(path)
            if df.astype(str).apply(lambda s: s.str.contains(MARK, regex=False)).any().any():
                hits.append(str(path))
    assert hits == [], f"raw user ids found in {hits[:10]}"
    assert (env["work"] / "airflow" / "logs").is_dir()
    assert list((env["work"] / "serving" / "requests").glob("*.jsonl")), "serving log missing"
    assert all(MARK not in text for text in env["outputs"]), "raw user id in dags test output"


def test_landing_updates_the_asset_that_schedules_training(env):
    from recflow.pipeline.landing import HISTORY_ASSET_URI

    batch = env["inputs"] / "landing"
    batch.mkdir()
    (batch / "week1.csv").write_bytes((env["inputs"] / "events.csv").read_bytes())
    (batch / "items.csv").write_bytes((env["inputs"] / "items.csv").read_bytes())
    assert airflow(env, "dags", "reserialize").returncode == 0
    assert airflow(env, "dags", "unpause", "recsys_training").returncode == 0
    conf = {
        "work_dir": str(env["work"]),
        "data_path": str(batch / "week1.csv"),
        "min_users": 10,
        "min_items": 10,
        "min_interactions": 100,
    }
    for _ in range(2):  # the second landing of the same batch must change nothing
        proc = airflow(env, "dags", "test", "recsys_ingest", conf=conf)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    batches = list((env["work"] / "history").glob("batch=*"))
    assert len(batches) == 1 and (batches[0] / "interactions.parquet").is_file()

    db = sqlite3.connect(env["work"] / "airflow" / "airflow.db")
    try:
        events = db.execute(
            "SELECT count(*) FROM asset_event e JOIN asset a ON a.id = e.asset_id WHERE a.uri = ?",
            (HISTORY_ASSET_URI,),
        ).fetchone()[0]
        queued = db.execute(
            "SELECT q.target_dag_id FROM asset_dag_run_queue q JOIN asset a ON a.id = q.asset_id "
            "WHERE a.uri = ?",
            (HISTORY_ASSET_URI,),
        ).fetchall()
        consumers = db.execute(
            "SELECT r.dag_id FROM dag_schedule_asset_reference r JOIN asset a ON a.id = r.asset_id "
            "WHERE a.uri = ?",
            (HISTORY_ASSET_URI,),
        ).fetchall()
    finally:
        db.close()
    assert events == 1, "one asset event for one new batch, none for the re-landing"
    assert ("recsys_training",) in consumers
    # The scheduler turns this queue row into an asset-triggered run of recsys_training.
    assert queued == [("recsys_training",)]
