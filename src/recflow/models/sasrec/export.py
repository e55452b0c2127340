"""Export a sequential (SASRec-style) model as a SavedModel meeting ``recflow.contract``.

Besides the contract's ``serving_default`` (user id -> top K, the user's history looked up in
a table exported with the model), the model has a second signature ``recommend_history``:
``history`` (string item ids [B, L], "" padded anywhere, oldest first) -> the same outputs,
for users the model has never seen or for histories fresher than training. Items in the
given history are excluded; a history without catalogue items gets popularity. Both
signatures share one graph, so the same history gives the same answer. ``reasons``
(contract 1.1) come from ``recflow.models.explain`` (co-occurrence similarity to an item of
the history), computed from the given history on the second path. The restored function
``score_history`` gives raw scores [B, N] for histories (offline evaluation with fresher
histories).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from recflow import contract
from recflow.errors import ContractError
from recflow.models.score_module import WARMUP_BATCH, seen_csr, user_table, write_warmup
from recflow.savedmodel import graph_variables
from recflow.storage import atomic_directory
from recflow.types import Features

if TYPE_CHECKING:
    import tensorflow as tf

    from recflow.models.sasrec.network import SasrecNet

HISTORY_SIGNATURE = "recommend_history"
INPUT_HISTORY = "history"
SCORE_HISTORY_ATTR = "score_history"  # restored function: history [B, L] -> scores [B, N]


def _build_module(
    model: SasrecNet, features: Features, recent: np.ndarray, head: str, top_k: int
) -> tf.Module:
    import tensorflow as tf

    from recflow.models.explain import build_explainer

    n_items = features.n_items
    max_len = int(recent.shape[1])
    splits, seen_items = seen_csr(features)

    class SequentialRecommender(tf.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(name="recflow_sequential_recommender")
            self.user_table = user_table(features)
            # Item id -> index + 1; unknown ids and "" map to 0, the padding the network skips.
            self.item_table = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(
                    tf.constant([str(i) for i in features.item_ids], tf.string),
                    tf.range(1, n_items + 1, dtype=tf.int64),
                ),
                default_value=0,
            )
            self.catalogue_item_ids = tf.Variable(
                [str(i) for i in features.item_ids], dtype=tf.string, trainable=False
            )
            self.item_titles = tf.Variable(
                [str(t) for t in features.item_titles], dtype=tf.string, trainable=False
            )
            self.popularity = tf.Variable(
                np.asarray(features.item_popularity, np.float32), trainable=False
            )
            self.user_history = tf.Variable(recent.astype(np.int32), trainable=False)
            self.seen_splits = tf.Variable(splits, trainable=False)
            self.seen_items = tf.Variable(seen_items, trainable=False)
            self.contract_version = tf.Variable(
                contract.CONTRACT_VERSION, dtype=tf.string, trainable=False
            )
            self.serving_head = tf.Variable(head, dtype=tf.string, trainable=False)
            # Reasons (contract 1.1) from co-occurrence similarity, as the other kinds give.
            self.explainer = build_explainer(features)
            # Tracking the variables embeds the weights; loading needs no Keras.
            self.model_variables = graph_variables(model.variables)

        def _scores(self, seq: tf.Tensor) -> tf.Tensor:
            """Network scores [B, N] where a sequence has an item, else popularity."""
            has_items = tf.reduce_any(seq > 0, axis=1)
            batch = tf.shape(seq)[0]
            pop = tf.broadcast_to(self.popularity[None, :], [batch, n_items])
            net = tf.cast(model.head_scores(seq, head), tf.float32)
            return tf.where(has_items[:, None], net, pop)

        def _user_seq(self, user_id: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            idx = self.user_table.lookup(user_id)
            seq = tf.gather(self.user_history, tf.maximum(idx, 0))
            return tf.where((idx >= 0)[:, None], seq, tf.zeros_like(seq)), idx

        def _history_seq(self, history: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            return history_sequences(self.item_table, history, max_len)

        def _history_reasons(
            self, known: tf.Tensor, top_items: tf.Tensor, valid: tf.Tensor
        ) -> tf.Tensor:
            vectors = self.explainer.item_vectors
            return history_reasons(vectors, self.item_titles, known, top_items, valid)

        def _top(
            self, scores: tf.Tensor, rows: tf.Tensor, items: tf.Tensor
        ) -> tuple[dict[str, tf.Tensor], tf.Tensor, tf.Tensor]:
            ids, titles = self.catalogue_item_ids, self.item_titles
            return top_k_outputs(scores, rows, items, ids, titles, top_k)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="user_id")])
        def score_all(self, user_id: tf.Tensor) -> tf.Tensor:
            return self._scores(self._user_seq(user_id)[0])

        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.string, name="history")])
        def score_history(self, history: tf.Tensor) -> tf.Tensor:
            return self._scores(self._history_seq(history)[0])

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="user_id")])
        def serve(self, user_id: tf.Tensor) -> dict[str, tf.Tensor]:
            seq, idx = self._user_seq(user_id)
            safe = tf.maximum(idx, 0)
            starts = tf.gather(self.seen_splits, safe)
            lengths = tf.where(idx >= 0, tf.gather(self.seen_splits, safe + 1) - starts, 0)
            positions = tf.ragged.range(starts, starts + lengths)
            items = tf.gather(self.seen_items, positions.flat_values)
            rows = tf.cast(positions.value_rowids(), tf.int32)
            out, top_items, valid = self._top(self._scores(seq), rows, items)
            out[contract.OUTPUT_REASONS] = self.explainer.reasons(idx, top_items, valid)
            return out

        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.string, name="history")])
        def recommend_history(self, history: tf.Tensor) -> dict[str, tf.Tensor]:
            seq, idx = self._history_seq(history)
            at = tf.cast(tf.where(idx > 0), tf.int32)  # [M, 2] (row, column) of known items
            items = tf.gather_nd(idx, at) - 1
            out, top_items, valid = self._top(self._scores(seq), at[:, 0], items)
            out[contract.OUTPUT_REASONS] = self._history_reasons(idx, top_items, valid)
            return out

    return SequentialRecommender()


def history_sequences(
    item_table: tf.lookup.StaticHashTable, history: tf.Tensor, max_len: int
) -> tuple[tf.Tensor, tf.Tensor]:
    """(left-padded last max_len known items [B, max_len], all known items [B, H]) of string
    histories [B, H]; known items as catalogue index + 1, unknown ids and "" as 0."""
    import tensorflow as tf

    idx = tf.cast(item_table.lookup(history), tf.int32)
    kept = tf.ragged.boolean_mask(idx, idx > 0)
    # Newest first, cut to max_len, padded at the end; flipping puts pads in front.
    newest = tf.reverse(kept, axis=[1]).to_tensor(default_value=0, shape=[None, max_len])
    return tf.reverse(newest, axis=[1]), idx


def history_reasons(
    vectors: tf.Tensor,
    item_titles: tf.Tensor,
    known: tf.Tensor,
    top_items: tf.Tensor,
    valid: tf.Tensor,
) -> tf.Tensor:
    """The explainer's reasons with the given history ``known`` [B, H] (index + 1, 0 for none)
    instead of the training one.

    History items sorted by index, as the explainer's table is, so that ties between
    equally similar items pick the same item on both paths.
    """
    import tensorflow as tf

    from recflow.models.explain import BECAUSE, POPULAR

    hist = tf.sort(tf.cast(known, tf.int64) - 1, axis=1)  # -1: unknown or padding
    hist = tf.concat([hist, -tf.ones_like(hist[:, :1])], axis=1)
    present = hist >= 0
    sims = tf.einsum(
        "bkd,bhd->bkh",
        tf.gather(vectors, top_items),
        tf.gather(vectors, tf.maximum(hist, 0)),
    )
    sims = tf.where(present[:, None, :], sims, float("-inf"))
    best = tf.gather(hist, tf.argmax(sims, axis=2, output_type=tf.int64), batch_dims=1)
    best = tf.where(tf.reduce_any(present, axis=1)[:, None], best, -1)
    because = tf.constant(BECAUSE) + tf.gather(item_titles, tf.maximum(best, 0))
    return tf.where(valid, tf.where(best >= 0, because, POPULAR), "")


def top_k_outputs(
    scores: tf.Tensor,
    rows: tf.Tensor,
    items: tf.Tensor,
    catalogue_item_ids: tf.Tensor,
    item_titles: tf.Tensor,
    top_k: int,
) -> tuple[dict[str, tf.Tensor], tf.Tensor, tf.Tensor]:
    """(contract outputs but reasons, top item indices [B, K], valid [B, K]) of ``scores``
    [B, N] with the (row, item) pairs given masked; "" where fewer than K items remain."""
    import tensorflow as tf

    masked = tf.tensor_scatter_nd_update(
        scores, tf.stack([rows, items], axis=1), tf.fill(tf.shape(items), float("-inf"))
    )
    top = tf.math.top_k(masked, k=top_k, sorted=True)
    valid = tf.math.is_finite(top.values)
    out = {
        contract.OUTPUT_ITEM_IDS: tf.where(valid, tf.gather(catalogue_item_ids, top.indices), ""),
        contract.OUTPUT_SCORES: top.values,
        contract.OUTPUT_TITLES: tf.where(valid, tf.gather(item_titles, top.indices), ""),
    }
    return out, top.indices, valid


def export_sequential(
    model: SasrecNet,
    features: Features,
    recent: np.ndarray,
    out_dir: Path,
    *,
    head: str,
    top_k: int,
    warmup_user_ids: Sequence[str],
) -> Path:
    """Write the SavedModel (both signatures, warmup requests) into ``out_dir`` atomically.

    ``model`` is a network with ``head_scores(seq, head)``; ``recent`` [U, L] holds each of
    ``features``' users' most recent training items as catalogue index + 1 (0 pads, in front).
    """
    import tensorflow as tf

    if not 1 <= top_k <= features.n_items:
        raise ContractError(
            f"export: expected 1 <= top_k <= catalogue size {features.n_items}, found {top_k}; "
            "lower serving top_k"
        )
    if recent.ndim != 2 or recent.shape[0] != features.n_users:
        raise ContractError(
            f"export: expected user histories of shape ({features.n_users}, max_len), found "
            f"{recent.shape}; export with the features the model was trained on"
        )
    warmup = list(warmup_user_ids) or [str(u) for u in features.user_ids[:WARMUP_BATCH]]
    module = _build_module(model, features, recent, head, top_k)
    out_dir = Path(out_dir)
    with atomic_directory(out_dir) as scratch:
        tf.saved_model.save(
            module,
            str(scratch),
            signatures={
                contract.SIGNATURE_NAME: module.serve.get_concrete_function(),
                HISTORY_SIGNATURE: module.recommend_history.get_concrete_function(),
            },
        )
        write_warmup(scratch, warmup)
    return out_dir
