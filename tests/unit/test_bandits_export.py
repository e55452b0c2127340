"""Policy SavedModel: same answers as the Python policy, loadable with only TensorFlow, and
served over gRPC by the local model server (export -> serve -> Predict)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from recflow import contract
from recflow.bandits.export import export_policy
from recflow.bandits.feedback import LoggedFeedback
from recflow.bandits.policies import LinearTS, LinUCB, NeuralPolicy
from recflow.errors import ContractError

D, A = 4, 6


@pytest.fixture(scope="module")
def log() -> LoggedFeedback:
    rng = np.random.default_rng(0)
    n = 3000
    x = rng.normal(size=(n, D))
    action = rng.integers(0, A, n)
    w = rng.normal(size=(A, D))
    p = 1 / (1 + np.exp(-(np.einsum("nd,nd->n", x, w[action]))))
    return LoggedFeedback(
        context=x,
        action=action,
        position=np.zeros(n, dtype=np.int64),
        reward=(rng.random(n) < p).astype(float),
        pscore=np.full(n, 1 / A),
        action_ids=tuple(f"item-{i}" for i in range(A)),
    )


def sorted_expectation(policy, x: np.ndarray, eps: np.ndarray) -> tuple[np.ndarray, ...]:
    scores = policy.scores(x)
    probs = policy.action_probs(x, eps)
    order = np.argsort(-scores, axis=1, kind="stable")
    ids = np.asarray(policy.action_ids)[order]
    return ids, np.take_along_axis(scores, order, 1), np.take_along_axis(probs, order, 1)


# Loads as TF Serving loads (MetaGraph + checkpoint into a session, tensors by name), not with
# tf.saved_model.load, which also answers models whose variables TF Serving cannot find.
_LOAD_ONLY_TF = r"""
import json, sys
import numpy as np
import tensorflow as tf
x = np.array(json.loads(sys.argv[2]), np.float32)
graph = tf.Graph()
with graph.as_default(), tf.compat.v1.Session(graph=graph) as s:
    sig = tf.compat.v1.saved_model.loader.load(s, ["serve"], sys.argv[1]).signature_def[
        "serving_default"]
    out = s.run({k: v.name for k, v in sig.outputs.items()},
                {sig.inputs["context"].name: x,
                 sig.inputs["epsilon"].name: np.full(len(x), 0.2, np.float32)})
mods = sorted(k for k in sys.modules if k.startswith("recflow"))
print(json.dumps({"probs": out["action_probs"].tolist(),
                  "ids": [[v.decode() for v in row] for row in out["action_ids"]],
                  "recflow_modules": mods}))
"""


@pytest.mark.parametrize("kind", ["linucb", "neural"])
def test_export_matches_policy_and_loads_with_only_tensorflow(
    kind: str, log: LoggedFeedback, tmp_path: Path
) -> None:
    import tensorflow as tf

    policy = (
        LinUCB.fit(log, alpha=0.3)
        if kind == "linucb"
        else NeuralPolicy.fit(log, objective="ipw", epochs=2, hidden=(8,), seed=0)
    )
    out = export_policy(policy, tmp_path / "1", warmup_contexts=log.context[:20])
    assert (out / contract.WARMUP_RELATIVE_PATH).is_file()
    warm = list(tf.data.TFRecordDataset(str(out / contract.WARMUP_RELATIVE_PATH)))
    assert len(warm) == 3  # 20 contexts, 8 per request

    x = log.context[:5]
    eps = np.array([0.0, 0.1, 0.5, 1.0, 0.2])
    m = tf.saved_model.load(str(out))
    got = m.signatures["serving_default"](
        context=tf.constant(x, tf.float32), epsilon=tf.constant(eps, tf.float32)
    )
    ids, scores, probs = sorted_expectation(policy, x, eps)
    assert [[v.decode() for v in row] for row in got["action_ids"].numpy()] == ids.tolist()
    np.testing.assert_allclose(got["action_scores"].numpy(), scores, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got["action_probs"].numpy(), probs, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got["action_probs"].numpy().sum(axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(
        m.score_all(tf.constant(x, tf.float32)).numpy(), policy.scores(x), rtol=1e-4, atol=1e-5
    )

    done = subprocess.run(
        [sys.executable, "-c", _LOAD_ONLY_TF, str(out), json.dumps(x.tolist())],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["recflow_modules"] == []
    _, _, probs_02 = sorted_expectation(policy, x, np.full(5, 0.2))
    np.testing.assert_allclose(result["probs"], probs_02, rtol=1e-4, atol=1e-5)


def test_thompson_sampling_is_not_exportable(log: LoggedFeedback, tmp_path: Path) -> None:
    with pytest.raises(ContractError, match="Thompson"):
        export_policy(LinearTS.fit(log), tmp_path / "1", warmup_contexts=log.context[:2])
    with pytest.raises(ContractError, match="warmup"):
        export_policy(LinUCB.fit(log), tmp_path / "1", warmup_contexts=np.zeros((0, D)))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_export_serve_predict_round_trip(log: LoggedFeedback, tmp_path: Path) -> None:
    from recflow.serving.client import ServingClient
    from recflow.serving.model_config import ModelEntry, to_proto
    from recflow.serving.server import LocalModelServer

    policy = LinUCB.fit(log, alpha=0.3)
    base = tmp_path / "policy"
    export_policy(policy, base / "1", warmup_contexts=log.context[:8])
    config = to_proto([ModelEntry(name="policy", base_path=str(base), versions=(1,))])
    port = _free_port()
    with LocalModelServer(config, port=port, file_system_poll_wait_seconds=0):
        client = ServingClient(f"127.0.0.1:{port}", timeout=30)
        client.wait_until_available("policy", 1, timeout=60)
        x = log.context[10:13].astype(np.float32)
        eps = np.array([0.0, 0.3, 1.0], np.float32)
        out = client.predict("policy", {"context": x, "epsilon": eps})
    ids, _, probs = sorted_expectation(policy, x.astype(np.float64), eps.astype(np.float64))
    assert [[v.decode() for v in row] for row in out["action_ids"]] == ids.tolist()
    np.testing.assert_allclose(out["action_probs"], probs, rtol=1e-4, atol=1e-5)
    assert out["action_probs"][2] == pytest.approx(np.full(A, 1 / A))  # epsilon 1: uniform
