"""End to end: the training DAG under `airflow dags test`, real MLflow (SQLite), real gRPC.

Runs in order: a first run promotes v1; a planted bad batch fails validation and changes
nothing; a worse candidate is declined while the champion keeps answering; a second sound run
replaces the champion through canary -> stable.
"""

from __future__ import annotations

import json
import re
import subprocess

import grpc
import numpy as np
import pytest

from recflow.dev.airflow_env import airflow_env
from recflow.net import free_port
from recflow.serving.server_process import ModelServerProcess

pytestmark = pytest.mark.slow

REGISTERED = "e2e-recommender"
SERVED = "e2e"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    work = tmp_path_factory.mktemp("work")
    port = free_port()
    server = ModelServerProcess(
        work / "serving" / "models.config",
        port=port,
        log_file=work / "logs" / "server.log",
        poll_seconds=0.5,
    ).start()
    e = airflow_env(work)
    subprocess.run(["airflow", "db", "migrate"], env=e, check=True, capture_output=True)
    base = {
        "work_dir": str(work),
        "synthetic_users": 300,
        "synthetic_items": 200,
        "min_users": 20,
        "min_items": 20,
        "min_interactions": 300,
        "epochs": 3,
        "serving_port": port,
        "registered_model_name": REGISTERED,
        "serving_model_name": SERVED,
    }
    yield {"work": work, "env": e, "port": port, "base": base, "server": server}
    server.stop()


def run_dag(env: dict, **overrides) -> subprocess.CompletedProcess:
    conf = {**env["base"], **overrides}
    proc = subprocess.run(
        ["airflow", "dags", "test", "recsys_training", "-c", json.dumps(conf)],
        env=env["env"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    log = env["work"] / "logs" / f"dag-{len(list((env['work'] / 'logs').glob('dag-*')))}.log"
    log.write_text(proc.stdout + proc.stderr)
    return proc


def client(env):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{env['work'] / 'mlflow' / 'mlflow.db'}")


def alias_version(env, alias: str) -> int | None:
    from mlflow.exceptions import MlflowException

    try:
        return int(client(env).get_model_version_by_alias(REGISTERED, alias).version)
    except MlflowException:
        return None


def predict(env, user_ids, label="stable"):
    """An outside caller: the official tensorflow-serving-api stubs, nothing from recflow."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    request = predict_pb2.PredictRequest()
    request.model_spec.name = SERVED
    request.model_spec.signature_name = "serving_default"
    request.model_spec.version_label = label
    request.inputs["user_id"].CopyFrom(tf.make_tensor_proto(np.array(user_ids, dtype=object)))
    with grpc.insecure_channel(f"127.0.0.1:{env['port']}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = stub.Predict(request, timeout=10)
    outputs = {k: tf.make_ndarray(v) for k, v in response.outputs.items()}
    return response.model_spec.version.value, outputs


def config_labels(env) -> dict:
    from recflow.serving.model_config import read_entries

    return dict(read_entries(env["work"] / "serving" / "models.config")[SERVED].labels)


def test_first_run_promotes_and_serves(env):
    proc = run_dag(env)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert alias_version(env, "champion") == 1
    assert alias_version(env, "challenger") is None
    assert config_labels(env) == {"stable": 1}
    version, out = predict(env, ["1", "someone-new"])
    assert version == 1
    assert out["item_ids"].shape[0] == 2 and out["item_ids"].shape[1] >= 10
    assert all(t for t in out["titles"].ravel())

    mv = client(env).get_model_version(REGISTERED, "1")
    run = client(env).get_run(mv.run_id)
    assert run.data.tags["gate"] == "passed"
    assert run.data.tags["dataset.digest"]
    assert re.fullmatch(r"[0-9a-f]{40}", run.data.tags["mlflow.source.git.commit"])
    assert run.data.params["train.epochs"] == "3"
    assert any(k.startswith("candidate.validation.ndcg") for k in run.data.metrics)
    assert run.inputs.dataset_inputs, "dataset lineage missing"
    artifacts = {a.path for a in client(env).list_artifacts(mv.run_id)}
    assert {"model", "data_docs", "gate", "evaluation"} <= artifacts


def test_bad_batch_fails_validation_and_promotes_nothing(env, tmp_path):
    from recflow.config import SyntheticConfig
    from recflow.data import generate_synthetic

    ds = generate_synthetic(SyntheticConfig(n_users=300, n_items=200, seed=11))
    inter = ds.interactions.astype(object).copy()
    inter.loc[3, "rating"] = 11.0  # out of range
    inter.loc[5, "user_id"] = None  # missing user
    inter.loc[7, "item_id"] = "no-such-item"  # not in the item table
    inter.to_csv(tmp_path / "events.csv", index=False)
    ds.items.to_csv(tmp_path / "items.csv", index=False)
    before = config_labels(env)
    versions_before = len(client(env).search_model_versions(f"name='{REGISTERED}'"))

    proc = run_dag(
        env,
        data_source="csv",
        data_path=str(tmp_path / "events.csv"),
        items_path=str(tmp_path / "items.csv"),
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "validate: FAILED" in out
    for needle in ("between", "null", "no-such-item"):
        assert needle in out, needle
    assert len(client(env).search_model_versions(f"name='{REGISTERED}'")) == versions_before
    assert config_labels(env) == before
    assert predict(env, ["1"])[0] == alias_version(env, "champion")


def test_worse_candidate_is_declined_and_champion_keeps_serving(env):
    versions_before = len(client(env).search_model_versions(f"name='{REGISTERED}'"))
    proc = run_dag(env, model="popularity")
    out = proc.stdout + proc.stderr
    # The decline is recorded (log, MLflow, gate.json), then fails the gate task on purpose
    # (never retried): no promotion step runs and the run is marked failed.
    assert proc.returncode != 0, out[-4000:]
    assert "gate: DECLINED" in out
    assert "popularity" in out
    assert "AirflowFailException: gate: gate DECLINED the candidate:" in out
    assert "[GateDeclined: a verdict, not a transient fault; not retried]" in out
    assert "starting task_id=register" not in out
    assert "starting task_id=report_run" in out  # plots and summary for the declined candidate
    assert len(client(env).search_model_versions(f"name='{REGISTERED}'")) == versions_before
    assert alias_version(env, "champion") == 1
    assert config_labels(env) == {"stable": 1}
    assert predict(env, ["1"])[0] == 1


def test_second_sound_run_replaces_champion(env):
    proc = run_dag(env, synthetic_seed=8)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "gate: PASSED" in out
    new = alias_version(env, "champion")
    assert new == 2
    assert alias_version(env, "previous") == 1
    assert config_labels(env) == {"stable": 2}
    assert predict(env, ["1"])[0] == 2
    version_dirs = sorted(p.name for p in (env["work"] / "models" / SERVED).iterdir())
    assert version_dirs == ["1", "2"]
