"""Export a model as a SavedModel meeting ``recflow.contract`` (loadable with only TensorFlow).

The graph holds everything serving needs: a user-id hash table (unknown -> -1), the network's
variables, the popularity scores for cold start, the catalogue ids and titles, and each known
user's training items as a CSR table (row splits + item indices), so excluding seen items costs
O(batch x catalogue) per request instead of a dense users x items mask in the model.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recflow import contract
from recflow.errors import ContractError
from recflow.models.training import TrainedModel, unique_positives
from recflow.storage import atomic_directory
from recflow.types import Features

RANKING_MLP = "ranking_mlp"
POPULARITY = "popularity"
WARMUP_BATCH = 8  # user ids per warmup request


def _seen_csr(features: Features) -> tuple[np.ndarray, np.ndarray]:
    """(row_splits [U+1] int64, items [S] int32) of each user's distinct training items."""
    users, items = unique_positives(features)  # sorted by user, then item
    counts = np.bincount(users, minlength=features.n_users)
    splits = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return splits, items.astype(np.int32)


def _build_module(model: Any, features: Features, top_k: int) -> Any:
    import tensorflow as tf

    from recflow.models.explain import build_explainer
    from recflow.models.ranking_mlp import score_matrix

    n_items = features.n_items
    splits, seen_items = _seen_csr(features)

    class Recommender(tf.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(name="recflow_recommender")
            self.user_table = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(
                    tf.constant([str(u) for u in features.user_ids], tf.string),
                    tf.range(features.n_users, dtype=tf.int64),
                ),
                default_value=-1,
            )
            # Variables (not graph constants) so big tables live in variables/, not the .pb.
            self.catalogue_item_ids = tf.Variable(
                [str(i) for i in features.item_ids], dtype=tf.string, trainable=False
            )
            self.item_titles = tf.Variable(
                [str(t) for t in features.item_titles], dtype=tf.string, trainable=False
            )
            self.popularity = tf.Variable(
                np.asarray(features.item_popularity, np.float32), trainable=False
            )
            self.seen_splits = tf.Variable(splits, trainable=False)
            self.seen_items = tf.Variable(seen_items, trainable=False)
            self.contract_version = tf.Variable(
                contract.CONTRACT_VERSION, dtype=tf.string, trainable=False
            )
            # Reasons shown next to each item (contract 1.1): tables of recflow.models.explain.
            self.explainer = build_explainer(features)
            # Tracking the Keras variables embeds the weights; the Keras model itself is not
            # saved, so loading needs no Keras or custom objects.
            self.model_variables = list(model.variables) if model is not None else []

        def _raw(self, user_id: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            idx = self.user_table.lookup(user_id)
            known = idx >= 0
            batch = tf.shape(user_id)[0]
            pop = tf.broadcast_to(self.popularity[None, :], [batch, n_items])
            if model is None:
                return pop, idx
            net = tf.cast(score_matrix(model, tf.maximum(idx, 0), n_items), tf.float32)
            return tf.where(known[:, None], net, pop), idx

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="user_id")])
        def score_all(self, user_id: tf.Tensor) -> tf.Tensor:
            return self._raw(user_id)[0]

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="user_id")])
        def serve(self, user_id: tf.Tensor) -> dict[str, tf.Tensor]:
            scores, idx = self._raw(user_id)
            safe = tf.maximum(idx, 0)
            starts = tf.gather(self.seen_splits, safe)
            lengths = tf.where(idx >= 0, tf.gather(self.seen_splits, safe + 1) - starts, 0)
            positions = tf.ragged.range(starts, starts + lengths)
            items = tf.gather(self.seen_items, positions.flat_values)
            rows = tf.cast(positions.value_rowids(), tf.int32)
            scatter_at = tf.stack([rows, items], axis=1)
            masked = tf.tensor_scatter_nd_update(
                scores, scatter_at, tf.fill(tf.shape(items), float("-inf"))
            )
            top = tf.math.top_k(masked, k=top_k, sorted=True)
            # Fewer than K unseen items: the tail is padding ("" ids), never a seen item.
            valid = tf.math.is_finite(top.values)
            return {
                contract.OUTPUT_ITEM_IDS: tf.where(
                    valid, tf.gather(self.catalogue_item_ids, top.indices), ""
                ),
                contract.OUTPUT_SCORES: top.values,
                contract.OUTPUT_TITLES: tf.where(
                    valid, tf.gather(self.item_titles, top.indices), ""
                ),
                contract.OUTPUT_REASONS: self.explainer.reasons(idx, top.indices, valid),
            }

    return Recommender()


def _write_warmup(out_dir: Path, user_ids: Sequence[str]) -> int:
    import tensorflow as tf
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    ids = [str(u) for u in user_ids]
    batches = [ids[i : i + WARMUP_BATCH] for i in range(0, len(ids), WARMUP_BATCH)]
    batches = batches[: contract.MAX_WARMUP_RECORDS]
    path = out_dir / contract.WARMUP_RELATIVE_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for batch in batches:
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(signature_name=contract.SIGNATURE_NAME)
            )
            request.inputs[contract.INPUT_USER_ID].CopyFrom(
                tf.make_tensor_proto(batch, dtype=tf.string)
            )
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
            writer.write(log.SerializeToString())
    return len(batches)


def export_model(
    model: TrainedModel | None,
    features: Features,
    out_dir: Path,
    *,
    top_k: int,
    warmup_user_ids: Sequence[str],
    model_kind: str = RANKING_MLP,
) -> Path:
    """Write a SavedModel meeting ``recflow.contract`` into ``out_dir`` (atomically).

    ``model`` None or ``model_kind="popularity"`` exports the popularity baseline. Warmup
    requests use ``warmup_user_ids`` (first few known users if empty), a few ids per request.
    """
    import tensorflow as tf

    if model_kind not in (RANKING_MLP, POPULARITY):
        raise ContractError(
            f"export: expected model_kind in {(RANKING_MLP, POPULARITY)}, found {model_kind!r}"
        )
    if not 1 <= top_k <= features.n_items:
        raise ContractError(
            f"export: expected 1 <= top_k <= catalogue size {features.n_items}, found {top_k}; "
            "lower serving top_k"
        )
    keras_model = None if model is None or model_kind == POPULARITY else model.model
    warmup = list(warmup_user_ids) or [str(u) for u in features.user_ids[:WARMUP_BATCH]]
    if not warmup:
        raise ContractError("export: expected at least one warmup user id, found none")
    module = _build_module(keras_model, features, top_k)
    out_dir = Path(out_dir)
    with atomic_directory(out_dir) as scratch:
        tf.saved_model.save(
            module,
            str(scratch),
            signatures={contract.SIGNATURE_NAME: module.serve.get_concrete_function()},
        )
        _write_warmup(scratch, warmup)
    return out_dir


def directory_size(path: Path) -> int:
    """Bytes under ``path`` (for logging the exported model's size)."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def timed_export(*args: Any, **kwargs: Any) -> tuple[Path, float]:
    """``export_model`` plus the seconds it took."""
    t0 = time.perf_counter()
    path = export_model(*args, **kwargs)
    return path, time.perf_counter() - t0
