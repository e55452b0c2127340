"""The policy DAG under `airflow dags test`, closed loop: real MLflow (SQLite), real gRPC.

A uniform cold-start policy's serving log (written by PolicyClient) teaches a first policy,
which is promoted and served; PolicyClient then logs what *that* policy does, and the next run
learns from those logs, this time with a margin no candidate can meet: declined, the champion
keeps serving. Each run learns from 70% of the requests and gates on the held-out 30%.
"""

from __future__ import annotations

import json
import subprocess

import grpc
import numpy as np
import pytest

from recflow.bandits.client import PolicyClient, UniformPredictor
from recflow.bandits.synthetic import drive_client, linear_environment
from recflow.dev.airflow_env import airflow_env
from recflow.net import free_port
from recflow.serving.server_process import ModelServerProcess

pytestmark = pytest.mark.slow

REGISTERED = "it-policy"
SERVED = "it-policy"
SLATE = 2


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    work = tmp_path_factory.mktemp("work")
    server = ModelServerProcess(
        work / "serving" / "models.config",
        port=free_port(),
        log_file=work / "logs" / "server.log",
        poll_seconds=0.5,
    ).start()
    e = airflow_env(work)
    subprocess.run(["airflow", "db", "migrate"], env=e, check=True, capture_output=True)
    bandit = linear_environment(n_users=150, dim=4, n_actions=6, seed=1)
    cold = work / "feedback" / "uniform"
    uniform = drive_client(
        bandit,
        PolicyClient(
            UniformPredictor(bandit.action_ids), cold, model=SERVED, slate_size=SLATE, seed=1
        ),
        1200,
        epsilon=1.0,
        seed=1,
    )
    base = {
        "work_dir": str(work),
        "serving_port": server.port,
        "registered_model_name": REGISTERED,
        "serving_model_name": SERVED,
        "epochs": 15,
        "n_boot": 500,
        "min_rounds": 400,  # held-out slots: 30% of 1200 requests x 2 slots = 720
    }
    yield {
        "work": work,
        "env": e,
        "server": server,
        "base": base,
        "bandit": bandit,
        "cold": cold,
        "uniform": uniform,
    }
    server.stop()


def run_dag(env: dict, **overrides) -> subprocess.CompletedProcess:
    conf = {**env["base"], **overrides}
    proc = subprocess.run(
        ["airflow", "dags", "test", "recsys_policy", "-c", json.dumps(conf)],
        env=env["env"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    logs = env["work"] / "logs"
    (logs / f"dag-{len(list(logs.glob('dag-*')))}.log").write_text(proc.stdout + proc.stderr)
    return proc


def mlflow(env):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{env['work'] / 'mlflow' / 'mlflow.db'}")


def alias_version(env, alias: str) -> int | None:
    from mlflow.exceptions import MlflowException

    try:
        return int(mlflow(env).get_model_version_by_alias(REGISTERED, alias).version)
    except MlflowException:
        return None


def labels(env) -> dict:
    from recflow.serving.model_config import read_entries

    return dict(read_entries(env["work"] / "serving" / "models.config")[SERVED].labels)


def predict(env, context: np.ndarray, epsilon: np.ndarray, label: str = "stable"):
    """An outside caller: the official tensorflow-serving-api stubs, nothing from recflow."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    request = predict_pb2.PredictRequest()
    request.model_spec.name = SERVED
    request.model_spec.signature_name = "serving_default"
    request.model_spec.version_label = label
    request.inputs["context"].CopyFrom(tf.make_tensor_proto(context.astype(np.float32)))
    request.inputs["epsilon"].CopyFrom(tf.make_tensor_proto(epsilon.astype(np.float32)))
    with grpc.insecure_channel(env["server"].address) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = stub.Predict(request, timeout=10)
    return response.model_spec.version.value, {
        k: tf.make_ndarray(v) for k, v in response.outputs.items()
    }


def test_good_policy_is_promoted_served_and_logs_the_next_round(env):
    proc = run_dag(env, data_path=str(env["cold"]))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    assert "gate_policy: PASSED" in out
    assert "720 slots (360 requests, holdout_fraction 0.3, seed 0) held out" in out
    assert alias_version(env, "champion") == 1 and alias_version(env, "challenger") is None
    assert labels(env) == {"stable": 1}

    bandit = env["bandit"]
    x = bandit.contexts[:3]
    version, outputs = predict(env, x, np.asarray([0.0, 0.1, 1.0]))
    assert version == 1
    assert outputs["action_ids"].shape == (3, bandit.n_actions)
    np.testing.assert_allclose(outputs["action_probs"].sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(outputs["action_probs"][2], 1 / bandit.n_actions, atol=1e-6)
    assert np.all(np.diff(outputs["action_scores"], axis=1) <= 1e-6)  # best first

    mv = mlflow(env).get_model_version(REGISTERED, "1")
    run = mlflow(env).get_run(mv.run_id)
    assert run.data.tags["gate"] == "passed" and run.data.tags["decision"] == "promoted"
    for key in ("neural.dr.ci_low", "neural.ips.value", "linucb.snips.value", "logging.value"):
        assert key in run.data.metrics, key
    assert run.data.metrics["neural.dr.ci_low"] > run.data.metrics["logging.value"]
    assert run.data.metrics["split.holdout_rounds"] == 720
    assert run.data.metrics["split.learn_rounds"] == 1680
    assert run.data.params["holdout_fraction"] == "0.3"
    assert mv.tags["ope.holdout_rounds"] == "720"
    assert {"policy", "gate", "estimates", "validation"} <= {
        a.path for a in mlflow(env).list_artifacts(mv.run_id)
    }

    # Close the loop: the served policy chooses, the client logs, rewards come back.
    from recflow.serving.client import ServingClient

    served_logs = env["work"] / "feedback" / "policy-v1"
    with ServingClient(env["server"].address) as serving:
        client = PolicyClient(serving, served_logs, model=SERVED, slate_size=SLATE, seed=2)
        served = drive_client(bandit, client, 800, epsilon=0.1, seed=2)
    env["served_logs"] = served_logs
    print(f"uniform {env['uniform']}, policy v1 {served}")
    # Expected rewards, not sampled clicks: the clicks' noise on the uniform log alone moved
    # its mean between 0.250 and 0.268 in three runs (2026-12-04), enough to fail a fixed
    # ratio on a good policy. Uniform's exact value here is 0.247, the best slates' 0.518.
    assert served["mean_expected_reward"] > env["uniform"]["mean_expected_reward"] * 1.3


def test_candidate_below_margin_is_declined_and_champion_keeps_serving(env):
    if "served_logs" not in env:
        pytest.skip("needs the promoted policy's serving log from the previous test")
    proc = run_dag(env, data_path=str(env["served_logs"]), margin=3.0)
    out = proc.stdout + proc.stderr
    # The decline is recorded, then fails the gate task on purpose: nothing after it runs.
    assert proc.returncode != 0, out[-5000:]
    assert "by policy version: v1: 1600" in out  # learned from what v1 served
    assert "gate_policy: DECLINED" in out and "does not exceed" in out
    assert "AirflowFailException: gate_policy: gate DECLINED the candidate:" in out
    assert "[GateDeclined: a verdict, not a transient fault; not retried]" in out
    assert "starting task_id=register_policy" not in out
    experiments = [e.experiment_id for e in mlflow(env).search_experiments()]
    run = mlflow(env).search_runs(
        experiments, order_by=["attributes.start_time DESC"], max_results=1
    )[0]
    assert run.data.tags["gate"] == "declined" and run.data.tags["decision"] == "declined"
    assert alias_version(env, "champion") == 1
    assert labels(env) == {"stable": 1}
    assert len(mlflow(env).search_model_versions(f"name='{REGISTERED}'")) == 1
    assert predict(env, env["bandit"].contexts[:1], np.asarray([0.1]))[0] == 1
