"""The serving contract around any model that scores the catalogue for known users.

A model supplies ``known_scores(module, user_indices) -> scores [B, N]`` built from tf ops
(reading its weights as ``module.<name>`` variables); :func:`save_score_module` wraps it with
everything else ``recflow.contract`` asks of an export: the user-id lookup (unknown -> -1),
popularity for unknown users, seen-item masking from a CSR table (row splits + item indices,
O(batch x catalogue) per request instead of a dense users x items mask), top-K with "" padding,
the ``reasons`` output, and warmup requests for TF Serving. Also here: how score models keep
their arrays between the train and export stages (``save_arrays`` / ``load_arrays``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from recflow import contract
from recflow.errors import ContractError
from recflow.savedmodel import graph_variables
from recflow.types import Features, Split

if TYPE_CHECKING:
    import tensorflow as tf

    from recflow.config import TrainConfig

WARMUP_BATCH = 8  # user ids per warmup request

# (module, known user indices [B] int64) -> raw scores [B, N] float32, built from tf ops.
KnownScores = Callable[["tf.Module", "tf.Tensor"], "tf.Tensor"]
# Optional serving shortcut for models that score only some items per user (two_stage):
# (module, known user indices [B]) -> (item indices [B, C], scores [B, C]); training items
# must already score -inf. Serving then takes the top-K of these C, never touching [B, N].
KnownCandidates = Callable[["tf.Module", "tf.Tensor"], "tuple[tf.Tensor, tf.Tensor]"]


def seen_csr(features: Features) -> tuple[np.ndarray, np.ndarray]:
    """(row_splits [U+1] int64, items [S] int32) of each user's distinct training items."""
    from recflow.models.pointwise import unique_positives

    users, items = unique_positives(features)  # sorted by user, then item
    counts = np.bincount(users, minlength=features.n_users)
    splits = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return splits, items.astype(np.int32)


def user_table(features: Features) -> tf.lookup.StaticHashTable:
    """The serving graph's user id -> training index table; unknown ids map to -1."""
    import tensorflow as tf

    return tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant([str(u) for u in features.user_ids], tf.string),
            tf.range(features.n_users, dtype=tf.int64),
        ),
        default_value=-1,
    )


def save_arrays(train_dir: Path, file_name: str, arrays: dict[str, np.ndarray]) -> Path:
    """Write a score model's arrays for its export stage (another task, maybe another host)."""
    train_dir.mkdir(parents=True, exist_ok=True)
    saved: dict[str, Any] = dict(arrays)  # numpy's stubs mistype **kwargs of savez
    np.savez(train_dir / file_name, **saved)
    return train_dir / file_name


def load_arrays(train_dir: Path, file_name: str, model: str) -> dict[str, np.ndarray]:
    path = Path(train_dir) / file_name
    if not path.exists():
        raise ContractError(f"{model} export: expected {path} from the train stage, found none")
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


# (features, cfg, progress) -> (arrays export needs, per-epoch history)
TrainArrays = Callable[
    [Features, "TrainConfig", Callable[[str], None]], tuple[dict[str, np.ndarray], dict[str, Any]]
]
# (arrays, features, out_dir, top_k, warmup user ids) -> out_dir
ExportArrays = Callable[[dict[str, np.ndarray], Features, Path, int, Sequence[str]], Path]


def array_stages(
    train: TrainArrays, export: ExportArrays, file_name: str, model: str
) -> tuple[Callable[..., dict[str, Any]], Callable[..., Path]]:
    """The zoo's ``fit`` and ``export`` for a model whose train stage hands arrays to export
    through one ``.npz`` file in the train folder (the two stages may run on different hosts).
    """

    def fit(
        features: Features,
        split: Split,
        cfg: TrainConfig,
        progress: Callable[[str], None],
        train_dir: Path,
    ) -> dict[str, Any]:
        t0 = time.perf_counter()
        arrays, history = train(features, cfg, progress)
        save_arrays(train_dir, file_name, arrays)
        notes = history.pop("notes", None)  # text, not per-epoch numbers
        summary = {"history": history, "seconds": time.perf_counter() - t0}
        return {**summary, "notes": list(notes)} if notes else summary

    def export_stage(
        train_dir: Path, features: Features, out_dir: Path, top_k: int, warmup: Sequence[str]
    ) -> Path:
        return export(load_arrays(train_dir, file_name, model), features, out_dir, top_k, warmup)

    return fit, export_stage


def build_score_module(
    features: Features,
    top_k: int,
    known_scores: KnownScores,
    variables: dict[str, np.ndarray],
    tracked: Sequence[tf.Variable] = (),
    known_candidates: KnownCandidates | None = None,
) -> tf.Module:
    """A ``tf.Module`` meeting ``recflow.contract`` around ``known_scores``.

    ``variables`` (name -> array) become attributes of the module before ``known_scores``
    is traced, so it reads them as ``module.<name>`` and they are saved in variables/.
    ``tracked`` are existing tf variables (e.g. a Keras model's) saved with the module; the
    Keras model itself is not saved, so loading needs no Keras or custom objects.
    """
    import tensorflow as tf

    from recflow.models.explain import build_explainer

    n_items = features.n_items
    splits, seen_items = seen_csr(features)

    class ScoreModule(tf.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(name="recflow_recommender")
            self.user_table = user_table(features)
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
            # Reasons next to each item (contract 1.1), shared with every other export.
            self.explainer = build_explainer(features)
            for name, value in variables.items():
                setattr(self, name, tf.Variable(value, trainable=False, name=name))
            self.model_variables = graph_variables(tracked)
            if known_candidates is not None:  # unknown users' answer, fixed at export
                pop_top = np.argsort(-features.item_popularity, kind="stable")[:top_k]
                self.popular_top = tf.Variable(pop_top.astype(np.int32), trainable=False)

        def seen_positions(self, idx: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            """(row in batch, item index) of every seen item of the batch's known users."""
            safe = tf.maximum(idx, 0)
            starts = tf.gather(self.seen_splits, safe)
            lengths = tf.where(idx >= 0, tf.gather(self.seen_splits, safe + 1) - starts, 0)
            positions = tf.ragged.range(starts, starts + lengths)
            items = tf.gather(self.seen_items, positions.flat_values)
            return tf.cast(positions.value_rowids(), tf.int32), items

        def _raw(self, user_id: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            idx = self.user_table.lookup(user_id)
            batch = tf.shape(user_id)[0]
            pop = tf.broadcast_to(self.popularity[None, :], [batch, n_items])
            known = tf.cast(known_scores(self, idx), tf.float32)
            return tf.where((idx >= 0)[:, None], known, pop), idx

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="user_id")])
        def score_all(self, user_id: tf.Tensor) -> tf.Tensor:
            return self._raw(user_id)[0]

        def _top(self, user_id: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
            """(item indices [B, K], scores [B, K], user indices [B]) served."""
            if known_candidates is not None:
                idx = self.user_table.lookup(user_id)
                items, scores = known_candidates(self, idx)
                best = tf.math.top_k(tf.cast(scores, tf.float32), k=top_k, sorted=True)
                known_items = tf.gather(tf.cast(items, tf.int32), best.indices, batch_dims=1)
                popular = tf.broadcast_to(self.popular_top[None, :], tf.shape(known_items))
                pop_scores = tf.gather(self.popularity, popular)
                unknown = (idx < 0)[:, None]
                return (
                    tf.where(unknown, popular, known_items),
                    tf.where(unknown, pop_scores, best.values),
                    idx,
                )
            scores, idx = self._raw(user_id)
            rows, items = self.seen_positions(idx)
            masked = tf.tensor_scatter_nd_update(
                scores, tf.stack([rows, items], axis=1), tf.fill(tf.shape(items), float("-inf"))
            )
            top = tf.math.top_k(masked, k=top_k, sorted=True)
            return top.indices, top.values, idx

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="user_id")])
        def serve(self, user_id: tf.Tensor) -> dict[str, tf.Tensor]:
            indices, values, idx = self._top(user_id)
            valid = tf.math.is_finite(values)
            return {
                contract.OUTPUT_ITEM_IDS: tf.where(
                    valid, tf.gather(self.catalogue_item_ids, indices), ""
                ),
                contract.OUTPUT_SCORES: values,
                contract.OUTPUT_TITLES: tf.where(valid, tf.gather(self.item_titles, indices), ""),
                contract.OUTPUT_REASONS: self.explainer.reasons(idx, indices, valid),
            }

    return ScoreModule()


def save_score_module(
    features: Features,
    out_dir: Path,
    top_k: int,
    warmup_user_ids: Sequence[str],
    known_scores: KnownScores,
    variables: dict[str, np.ndarray],
    tracked: Sequence[tf.Variable] = (),
    known_candidates: KnownCandidates | None = None,
) -> Path:
    """Build the module and write it (atomically) with warmup requests into ``out_dir``."""
    import tensorflow as tf

    from recflow.storage import atomic_directory

    if not 1 <= top_k <= features.n_items:
        raise ContractError(
            f"export: expected 1 <= top_k <= catalogue size {features.n_items}, found {top_k}; "
            "lower serving top_k"
        )
    warmup = [str(u) for u in warmup_user_ids] or [str(u) for u in features.user_ids[:WARMUP_BATCH]]
    if not warmup:
        raise ContractError("export: expected at least one warmup user id, found none")
    module = build_score_module(features, top_k, known_scores, variables, tracked, known_candidates)
    out_dir = Path(out_dir)
    with atomic_directory(out_dir) as scratch:
        tf.saved_model.save(
            module,
            str(scratch),
            signatures={contract.SIGNATURE_NAME: module.serve.get_concrete_function()},
        )
        write_warmup(scratch, warmup)
    return out_dir


def seen_rows_times_tf(module: tf.Module, idx: tf.Tensor, matrix: tf.Tensor) -> tf.Tensor:
    """``seen_rows_tf(...) @ matrix`` [B, M] for an item-by-M ``matrix``, without the dense rows.

    A sum of ``matrix``'s rows over each user's seen items: the cost grows with the items a user
    has seen times M, where the dense product pays N x M per user whatever the history (EASE's
    B at 20,000 items: ~30 seen rows against 20,000 per user).
    """
    import tensorflow as tf

    rows, items = module.seen_positions(idx)
    seen = tf.SparseTensor(
        indices=tf.cast(tf.stack([rows, items], axis=1), tf.int64),
        values=tf.ones(tf.shape(items), tf.float32),
        dense_shape=tf.cast(tf.stack([tf.shape(idx)[0], tf.shape(matrix)[0]]), tf.int64),
    )
    return tf.sparse.sparse_dense_matmul(seen, matrix)


def seen_rows_tf(module: tf.Module, idx: tf.Tensor, n_items: tf.Tensor) -> tf.Tensor:
    """Binary rows [B, N] of the batch's known users, from the export's seen-item table."""
    import tensorflow as tf

    rows, items = module.seen_positions(idx)
    return tf.scatter_nd(
        tf.stack([rows, items], axis=1),
        tf.ones(tf.shape(items), tf.float32),
        tf.stack([tf.shape(idx)[0], n_items]),
    )


def write_warmup(out_dir: Path, user_ids: Sequence[str]) -> int:
    """TF Serving's assets.extra/tf_serving_warmup_requests: Predict requests of a few ids each."""
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
