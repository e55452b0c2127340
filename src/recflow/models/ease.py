"""EASE (Steck, WWW 2019): a closed-form item-item model, plus the export shared by score models.

    P = (X^T X + lambda I)^-1,   B = I - P / diag(P)  (so diag(B) = 0),   scores_u = x_u B

X is the binary user x item matrix of distinct training pairs. The export keeps X as CSR rows
(row splits + item indices, the same table that masks seen items) and B as a dense [N, N]
variable: serving builds x_u for the batch with one scatter and multiplies by B.

:func:`save_score_module` is the generic part: any model that can turn known user indices into
raw catalogue scores inside a TensorFlow graph gets the whole serving contract (user lookup,
popularity for unknown users, seen-item masking, top-K with padding, warmup requests) from it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recflow import contract
from recflow.errors import ContractError, TrainingError
from recflow.types import Features

B_FILE = "ease_B.npy"
MAX_USER_SIDE_USERS = 50_000

# (module, known user indices [B] int64) -> raw scores [B, N] float32, built from tf ops.
KnownScores = Callable[[Any, Any], Any]


def binary_matrix(features: Features) -> Any:
    """Sparse CSR [U, N] float64 0/1 matrix of distinct training pairs."""
    from scipy import sparse

    x = sparse.csr_matrix(
        (
            np.ones(features.train_user_idx.size),
            (features.train_user_idx, features.train_item_idx),
        ),
        shape=(features.n_users, features.n_items),
    )
    x.sum_duplicates()
    x.data[:] = 1.0  # repeated events of a pair count once
    return x


def _closed_form(gram: np.ndarray, l2: float) -> np.ndarray:
    """B = I - P / diag(P) with P = (gram + l2 I)^-1: the EASE weights, zero diagonal."""
    gram[np.diag_indices_from(gram)] += l2
    # The Gram matrix plus lambda I is symmetric positive definite, so inv is well conditioned.
    p = np.linalg.inv(gram)
    b = -p / np.diag(p)[None, :]
    b[np.diag_indices_from(b)] = 0.0
    return b


def _check_fit(features: Features, l2: float, name: str) -> None:
    if l2 <= 0:
        raise TrainingError(f"{name}: expected > 0, found {l2}; try 100-1000")
    if features.train_user_idx.size == 0:
        raise TrainingError("EASE: expected training interactions, found none")


def fit_ease(features: Features, l2: float) -> np.ndarray:
    """The item-item weights B [N, N] float32 with a zero diagonal."""
    _check_fit(features, l2, "ease_lambda")
    x = binary_matrix(features)
    return _closed_form(np.asarray((x.T @ x).toarray(), dtype=np.float64), l2).astype(np.float32)


def user_side_scores(features: Features, l2: float) -> np.ndarray:
    """Scores [U, N] float32 of EASE on the transposed matrix: each user's row rebuilt from the
    other users' rows (user-user weights C [U, U], zero diagonal; scores = C^T X).

    The item model asks "what goes with what this user saw"; this one asks "what did users
    like this one see". Its [U, U] inverse limits it to user bases of tens of thousands.
    """
    _check_fit(features, l2, "blend_user_lambda")
    if features.n_users > MAX_USER_SIDE_USERS:
        raise TrainingError(
            f"user-side EASE: expected at most {MAX_USER_SIDE_USERS} users (it inverts a "
            f"users x users matrix), found {features.n_users}; set blend_user_weight=0"
        )
    x = binary_matrix(features)
    c = _closed_form(np.asarray((x @ x.T).toarray(), dtype=np.float64), l2)
    return np.asarray(x.T @ c, dtype=np.float32).T


def seen_csr(features: Features) -> tuple[np.ndarray, np.ndarray]:
    """(row_splits [U+1] int64, items [S] int32) of each user's distinct training items."""
    keys = np.unique(
        features.train_user_idx.astype(np.int64) * features.n_items
        + features.train_item_idx.astype(np.int64)
    )
    users, items = keys // features.n_items, keys % features.n_items
    counts = np.bincount(users, minlength=features.n_users)
    splits = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return splits, items.astype(np.int32)


def build_score_module(
    features: Features,
    top_k: int,
    known_scores: KnownScores,
    variables: dict[str, np.ndarray],
) -> Any:
    """A ``tf.Module`` meeting ``recflow.contract`` around ``known_scores``.

    ``variables`` (name -> array) become attributes of the module before ``known_scores``
    is traced, so it reads them as ``module.<name>`` and they are saved in variables/.
    """
    import tensorflow as tf

    from recflow.models.explain import build_explainer

    n_items = features.n_items
    splits, seen_items = seen_csr(features)

    class ScoreModule(tf.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(name="recflow_recommender")
            self.user_table = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(
                    tf.constant([str(u) for u in features.user_ids], tf.string),
                    tf.range(features.n_users, dtype=tf.int64),
                ),
                default_value=-1,
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
            self.seen_splits = tf.Variable(splits, trainable=False)
            self.seen_items = tf.Variable(seen_items, trainable=False)
            self.contract_version = tf.Variable(
                contract.CONTRACT_VERSION, dtype=tf.string, trainable=False
            )
            # Reasons next to each item (contract 1.1), shared with every other export.
            self.explainer = build_explainer(features)
            for name, value in variables.items():
                setattr(self, name, tf.Variable(value, trainable=False, name=name))

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

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="user_id")])
        def serve(self, user_id: tf.Tensor) -> dict[str, tf.Tensor]:
            scores, idx = self._raw(user_id)
            rows, items = self.seen_positions(idx)
            masked = tf.tensor_scatter_nd_update(
                scores, tf.stack([rows, items], axis=1), tf.fill(tf.shape(items), float("-inf"))
            )
            top = tf.math.top_k(masked, k=top_k, sorted=True)
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

    return ScoreModule()


def save_score_module(
    features: Features,
    out_dir: Path,
    top_k: int,
    warmup_user_ids: Sequence[str],
    known_scores: KnownScores,
    variables: dict[str, np.ndarray],
) -> Path:
    """Build the module and write it (atomically) with warmup requests into ``out_dir``."""
    import tensorflow as tf

    from recflow.models.export import WARMUP_BATCH, _write_warmup
    from recflow.storage import atomic_directory

    if not 1 <= top_k <= features.n_items:
        raise ContractError(
            f"export: expected 1 <= top_k <= catalogue size {features.n_items}, found {top_k}; "
            "lower serving top_k"
        )
    warmup = [str(u) for u in warmup_user_ids] or [str(u) for u in features.user_ids[:WARMUP_BATCH]]
    if not warmup:
        raise ContractError("export: expected at least one warmup user id, found none")
    module = build_score_module(features, top_k, known_scores, variables)
    out_dir = Path(out_dir)
    with atomic_directory(out_dir) as scratch:
        tf.saved_model.save(
            module,
            str(scratch),
            signatures={contract.SIGNATURE_NAME: module.serve.get_concrete_function()},
        )
        _write_warmup(scratch, warmup)
    return out_dir


def seen_rows_tf(module: Any, idx: Any, n_items: Any) -> Any:
    """Binary rows [B, N] of the batch's known users, from the export's seen-item table."""
    import tensorflow as tf

    rows, items = module.seen_positions(idx)
    return tf.scatter_nd(
        tf.stack([rows, items], axis=1),
        tf.ones(tf.shape(items), tf.float32),
        tf.stack([tf.shape(idx)[0], n_items]),
    )


def ease_scores_tf(module: Any, idx: Any) -> Any:
    import tensorflow as tf

    return tf.linalg.matmul(seen_rows_tf(module, idx, tf.shape(module.ease_b)[0]), module.ease_b)


def export_ease(
    b: np.ndarray, features: Features, out_dir: Path, top_k: int, warmup: Sequence[str]
) -> Path:
    if b.shape != (features.n_items, features.n_items):
        raise ContractError(
            f"EASE export: expected B of shape ({features.n_items}, {features.n_items}) for this "
            f"catalogue, found {b.shape}; retrain on the same features"
        )
    return save_score_module(
        features, out_dir, top_k, warmup, ease_scores_tf, {"ease_b": np.asarray(b, np.float32)}
    )


# -- zoo adapters -----------------------------------------------------------------------------
def fit(
    features: Features, split: Any, cfg: Any, progress: Callable[[str], None], train_dir: Path
) -> dict[str, Any]:
    t0 = time.perf_counter()
    b = fit_ease(features, float(cfg.ease_lambda))
    seconds = time.perf_counter() - t0
    train_dir.mkdir(parents=True, exist_ok=True)
    np.save(train_dir / B_FILE, b)
    progress(f"ease: lambda={cfg.ease_lambda:g}, B {b.shape[0]}x{b.shape[1]} in {seconds:.1f} s")
    return {"history": {}, "seconds": seconds}


def export(
    train_dir: Path, features: Features, out_dir: Path, top_k: int, warmup: Sequence[str]
) -> Path:
    path = Path(train_dir) / B_FILE
    if not path.exists():
        raise ContractError(f"EASE export: expected {path} from the train stage, found none")
    return export_ease(np.load(path), features, out_dir, top_k, warmup)
