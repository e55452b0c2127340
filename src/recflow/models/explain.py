"""Reasons a client can show next to each recommendation, computed inside the SavedModel.

"because you watched <title>": for a recommended item j and a known user, the item h of the
user's own training history most similar to j, where similarity is the cosine of item vectors
from training co-occurrence (two items are similar when the same users interacted with both;
``cooccurrence_vectors`` gives a low-rank factorisation so that the table stays O(N x D)).
Unknown users (cold start, served by popularity) get "popular with all users"; padding slots
(item index < 0 or not valid) get "".

Any model export can call it: ``explainer = build_explainer(features)`` inside a ``tf.Module``
(an attribute, so its variables are saved with the model), then in the serving function
``explainer.reasons(user_idx [B] int64 (-1 = unknown), item_idx [B, K], valid [B, K] bool)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from recflow.models.score_module import seen_csr
from recflow.types import Features

if TYPE_CHECKING:
    import tensorflow as tf

BECAUSE = "because you watched "
POPULAR = "popular with all users"
MAX_HISTORY = 1024  # history items compared per user (memory: B x K x H x D floats)
DEFAULT_DIM = 32


def cooccurrence_vectors(features: Features, dim: int = DEFAULT_DIM) -> np.ndarray:
    """[N, D'] float32 unit vectors whose dot products approximate the cosine similarity of
    items' user sets in training (D' <= dim; items without training events get zero vectors).
    """
    import scipy.sparse as sp

    users, items = seen_csr_pairs(features)
    n, u = features.n_items, features.n_users
    x = sp.csr_matrix((np.ones(len(items), np.float64), (items, users)), shape=(n, u))
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
    x = sp.diags(np.where(norms > 0, 1.0 / np.maximum(norms, 1e-12), 0.0)) @ x
    rank = max(1, min(dim, n - 1, u - 1))
    if n * u <= 4_000_000 or rank >= min(n, u) - 1:
        left, s, _ = np.linalg.svd(x.toarray(), full_matrices=False)
        vecs = left[:, :rank] * s[:rank]
    else:
        from scipy.sparse.linalg import svds

        left, s, _ = svds(x, k=rank, random_state=0)
        vecs = left * s
    length = np.linalg.norm(vecs, axis=1, keepdims=True)
    return np.where(length > 0, vecs / np.maximum(length, 1e-12), 0.0).astype(np.float32)


def seen_csr_pairs(features: Features) -> tuple[np.ndarray, np.ndarray]:
    from recflow.models.pointwise import unique_positives

    return unique_positives(features)


def because_items_numpy(
    vectors: np.ndarray,
    splits: np.ndarray,
    seen: np.ndarray,
    user_idx: np.ndarray,
    item_idx: np.ndarray,
) -> np.ndarray:
    """Reference implementation (tests): [B, K] history item index behind each reason, -1 if
    none (unknown user or empty history)."""
    out = np.full(item_idx.shape, -1, np.int64)
    for b, u in enumerate(user_idx):
        if u < 0:
            continue
        hist = seen[splits[u] : splits[u + 1]][:MAX_HISTORY]
        if len(hist) == 0:
            continue
        sims = vectors[item_idx[b]] @ vectors[hist].T  # [K, H]
        out[b] = hist[np.argmax(sims, axis=1)]
    return out


def build_explainer(
    features: Features, *, item_vectors: np.ndarray | None = None, max_history: int = MAX_HISTORY
) -> tf.Module:
    """A ``tf.Module`` holding the tables reasons need (see the module docstring)."""
    import tensorflow as tf

    vectors = cooccurrence_vectors(features) if item_vectors is None else item_vectors
    splits, seen = seen_csr(features)

    class Explainer(tf.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(name="recflow_explainer")
            # Variables, not constants: the tables live in variables/ rather than the graph.
            self.item_vectors = tf.Variable(np.asarray(vectors, np.float32), trainable=False)
            self.seen_splits = tf.Variable(splits, trainable=False)
            self.seen_items = tf.Variable(seen, trainable=False)
            self.titles = tf.Variable(
                [str(t) for t in features.item_titles], dtype=tf.string, trainable=False
            )

        def because_items(self, user_idx: tf.Tensor, item_idx: tf.Tensor) -> tf.Tensor:
            """[B, K] int64: the history item most similar to each recommended item, -1 if the
            user is unknown or has no history."""
            user_idx = tf.cast(user_idx, tf.int64)
            item_idx = tf.cast(item_idx, tf.int64)
            safe = tf.maximum(user_idx, 0)
            starts = tf.gather(self.seen_splits, safe)
            ends = tf.gather(self.seen_splits, safe + 1)
            lengths = tf.where(user_idx >= 0, tf.minimum(ends - starts, max_history), 0)
            positions = tf.ragged.range(starts, starts + lengths)
            history = tf.cast(tf.gather(self.seen_items, positions), tf.int64)
            batch = tf.shape(user_idx, out_type=tf.int64)[0]
            # Width: the next power of two above the longest history (at least one padding
            # column, so argmax has something to look at for empty histories). A bounded set
            # of shapes: TensorFlow's oneDNN kernels keep one primitive per shape they see.
            need = tf.reduce_max(tf.concat([lengths, tf.zeros([1], tf.int64)], 0)) + 1
            exponent = tf.math.ceil(tf.math.log(tf.cast(need, tf.float64)) / np.log(2.0) - 1e-9)
            width = tf.cast(tf.pow(tf.constant(2.0, tf.float64), exponent), tf.int64)
            dense = history.to_tensor(default_value=-1, shape=tf.stack([batch, width]))
            present = dense >= 0
            hv = tf.gather(self.item_vectors, tf.maximum(dense, 0))  # [B, H, D]
            rv = tf.gather(self.item_vectors, tf.maximum(item_idx, 0))  # [B, K, D]
            sims = tf.einsum("bkd,bhd->bkh", rv, hv)
            sims = tf.where(present[:, None, :], sims, float("-inf"))
            best = tf.argmax(sims, axis=2, output_type=tf.int64)  # [B, K]
            chosen = tf.gather(dense, best, batch_dims=1)
            any_history = tf.reduce_any(present, axis=1)
            return tf.where(any_history[:, None], chosen, tf.constant(-1, tf.int64))

        def reasons(self, user_idx: tf.Tensor, item_idx: tf.Tensor, valid: tf.Tensor) -> tf.Tensor:
            """[B, K] strings for display (see the module docstring)."""
            chosen = self.because_items(user_idx, item_idx)
            because = tf.constant(BECAUSE) + tf.gather(self.titles, tf.maximum(chosen, 0))
            text = tf.where(chosen >= 0, because, POPULAR)
            return tf.where(valid, text, "")

    return Explainer()
