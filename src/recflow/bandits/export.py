"""Export a policy as a SavedModel that TF Serving can serve (loads with only TensorFlow).

Signature ``serving_default``:
    inputs   context       DT_FLOAT  [-1, D]   one context vector per row
             epsilon       DT_FLOAT  [-1]      exploration rate per row, in [0, 1]
    outputs  action_ids    DT_STRING [-1, A]   the whole catalogue, best score first
             action_scores DT_FLOAT  [-1, A]   the policy's score of action_ids[i, j]
             action_probs  DT_FLOAT  [-1, A]   probability of showing action_ids[i, j]
Rows of the three outputs are aligned (sorted by score), so a client samples j from
``action_probs[i]``, shows ``action_ids[i, j]`` and logs ``action_probs[i, j]`` as its
propensity (see ``recflow.bandits.logformat``). epsilon is per row so batched requests with
different exploration rates stay independent.

Restored attributes: ``score_all(context) -> [B, A]`` in catalogue order,
``catalogue_action_ids`` [A], ``policy_kind``, ``contract_version``.
Probabilities: (1 - eps) * base + eps / A, where base is the greedy one-hot (ties shared) for
LinUCB and softmax(logits / temperature) for the neural policy, exactly as in ``policies``.
LinearTS is not exported: its probabilities need per-request Monte-Carlo draws.
Warmup: ``assets.extra/tf_serving_warmup_requests`` (PredictionLog TFRecord).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from recflow import contract
from recflow.bandits.policies import LinUCB, NeuralPolicy, Policy
from recflow.errors import ContractError
from recflow.savedmodel import graph_variables
from recflow.storage import atomic_directory

if TYPE_CHECKING:
    import tensorflow as tf

POLICY_CONTRACT_VERSION = "policy-1.0"
INPUT_CONTEXT = "context"
INPUT_EPSILON = "epsilon"
OUTPUT_ACTION_IDS = "action_ids"
OUTPUT_ACTION_SCORES = "action_scores"
OUTPUT_ACTION_PROBS = "action_probs"
WARMUP_BATCH = 8


def _module(policy: LinUCB | NeuralPolicy, dim: int) -> tf.Module:
    import tensorflow as tf

    n_actions = len(policy.action_ids)

    class PolicyModule(tf.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(name="recflow_policy")
            self.catalogue_action_ids = tf.Variable(
                list(policy.action_ids), dtype=tf.string, trainable=False
            )
            self.contract_version = tf.Variable(
                POLICY_CONTRACT_VERSION, dtype=tf.string, trainable=False
            )
            if isinstance(policy, LinUCB):
                self.policy_kind = tf.Variable("linucb", dtype=tf.string, trainable=False)
                self.theta = tf.Variable(policy.theta.astype(np.float32), trainable=False)
                self.a_inv = tf.Variable(policy.a_inv.astype(np.float32), trainable=False)
                self.alpha = tf.Variable(np.float32(policy.alpha), trainable=False)
            else:
                self.policy_kind = tf.Variable("neural", dtype=tf.string, trainable=False)
                self.temperature = tf.Variable(np.float32(policy.temperature), trainable=False)
                # Tracking the variables embeds the weights; Keras is not needed to load.
                self.model_variables = graph_variables(policy.model.variables)

        def _scores(self, context: tf.Tensor) -> tf.Tensor:
            if isinstance(policy, LinUCB):
                x = tf.concat([tf.ones_like(context[:, :1]), context], axis=1)
                mean = tf.matmul(x, self.theta, transpose_b=True)
                var = tf.einsum("nd,ade,ne->na", x, self.a_inv, x)
                return mean + self.alpha * tf.sqrt(tf.maximum(var, 0.0))
            return tf.cast(policy.model(context, training=False), tf.float32)

        def _base(self, scores: tf.Tensor) -> tf.Tensor:
            if isinstance(policy, LinUCB):
                best = tf.cast(
                    tf.equal(scores, tf.reduce_max(scores, axis=1, keepdims=True)), tf.float32
                )
                return best / tf.reduce_sum(best, axis=1, keepdims=True)
            return tf.nn.softmax(scores / self.temperature, axis=1)

        @tf.function(input_signature=[tf.TensorSpec([None, dim], tf.float32, name=INPUT_CONTEXT)])
        def score_all(self, context: tf.Tensor) -> tf.Tensor:
            return self._scores(context)

        @tf.function(
            input_signature=[
                tf.TensorSpec([None, dim], tf.float32, name=INPUT_CONTEXT),
                tf.TensorSpec([None], tf.float32, name=INPUT_EPSILON),
            ]
        )
        def serve(self, context: tf.Tensor, epsilon: tf.Tensor) -> dict[str, tf.Tensor]:
            eps = tf.clip_by_value(epsilon, 0.0, 1.0)[:, None]
            scores = self._scores(context)
            probs = (1.0 - eps) * self._base(scores) + eps / float(n_actions)
            order = tf.argsort(scores, axis=1, direction="DESCENDING", stable=True)
            return {
                OUTPUT_ACTION_IDS: tf.gather(self.catalogue_action_ids, order),
                OUTPUT_ACTION_SCORES: tf.gather(scores, order, batch_dims=1),
                OUTPUT_ACTION_PROBS: tf.gather(probs, order, batch_dims=1),
            }

    return PolicyModule()


def _write_warmup(out_dir: Path, contexts: np.ndarray, epsilon: float) -> int:
    import tensorflow as tf
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    path = out_dir / contract.WARMUP_RELATIVE_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with tf.io.TFRecordWriter(str(path)) as writer:
        for start in range(0, contexts.shape[0], WARMUP_BATCH):
            if written >= contract.MAX_WARMUP_RECORDS:
                break
            batch = contexts[start : start + WARMUP_BATCH].astype(np.float32)
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(signature_name=contract.SIGNATURE_NAME)
            )
            request.inputs[INPUT_CONTEXT].CopyFrom(tf.make_tensor_proto(batch))
            request.inputs[INPUT_EPSILON].CopyFrom(
                tf.make_tensor_proto(np.full(batch.shape[0], epsilon, np.float32))
            )
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
            writer.write(log.SerializeToString())
            written += 1
    return written


def export_policy(
    policy: Policy,
    out_dir: Path,
    *,
    warmup_contexts: np.ndarray,
    warmup_epsilon: float = 0.1,
) -> Path:
    """Write the SavedModel (atomically) into ``out_dir``; warmup from ``warmup_contexts`` [n, D]."""
    import tensorflow as tf

    if not isinstance(policy, LinUCB | NeuralPolicy):
        raise ContractError(
            f"export_policy: expected a LinUCB or NeuralPolicy, found {type(policy).__name__}; "
            "Thompson sampling needs per-request sampling and is evaluated offline only"
        )
    warmup = np.asarray(warmup_contexts, dtype=np.float32)
    if warmup.ndim != 2 or warmup.shape[0] == 0:
        raise ContractError(
            f"export_policy: expected warmup contexts of shape [n >= 1, D], found {warmup.shape}"
        )
    dim = int(warmup.shape[1])
    module = _module(policy, dim)
    with atomic_directory(Path(out_dir)) as scratch:
        tf.saved_model.save(
            module,
            str(scratch),
            signatures={contract.SIGNATURE_NAME: module.serve.get_concrete_function()},
        )
        _write_warmup(scratch, warmup, warmup_epsilon)
    return Path(out_dir)
