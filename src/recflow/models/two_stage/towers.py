"""The retrieval stage of ``two_stage``: user and item towers scored by a dot product.

Each tower is one embedding table (``two_stage_tower_dim`` wide) whose rows are L2-normalised
before the dot product; a user's retrieval score for an item is cosine / temperature plus a
learned per-item bias (served as one dot product of [u / T, 1] and [v, bias]).
Training is an in-batch softmax over the distinct training (user, item) pairs (Yi et al. 2019,
"Sampling-bias-corrected neural modeling for large corpus item recommendations"): each
positive's negatives are the other items of its batch, with the logQ correction (subtract the
log of each item's share of training pairs, its probability of showing up as an in-batch
negative), so the towers learn the full softmax rather than one biased against popular items.
Copies of the positive item elsewhere in the batch are not among its negatives.

The logits are computed against the batch's distinct items only (:func:`in_batch_softmax_loss`):
an item present m times counts m times in each denominator (log m added to its logit) and a
positive's own other copies are taken out of its row in closed form. That is the same loss as
the B x B logits with the copies masked, computed at the size of the distinct items and without
the B x B mask (timed against it by bench/diagnostics/tower_step.py).

The tables are ``RowEmbedding`` layers trained by ``LazyAdam`` (:mod:`recflow.models.sparse_adam`:
only the rows a batch touched move, with their own moments), so a step costs the batch, not the
tables: training time grows with events, not users x items.

Serving (see :mod:`recflow.models.two_stage.export`) is a brute-force matmul of one user vector
against the whole item table plus ``tf.math.top_k``: the stock TF Serving image has no
approximate-nearest-neighbour ops, and at 50k items x 32 dims the matmul is 1.6 M multiply-adds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from recflow.errors import TrainingError
from recflow.progress import Progress
from recflow.types import Features

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

_EPSILON = 1e-8  # Adam's epsilon for the towers (Keras' default is 1e-7)


@dataclass(frozen=True)
class Towers:
    """Tower outputs whose dot product is the retrieval score: ``users`` [U, D + 1] (unit
    vector / temperature, then 1), ``items`` [N, D + 1] (unit vector, then the item's bias)."""

    users: np.ndarray
    items: np.ndarray
    history: dict[str, list[float]]


@dataclass(frozen=True)
class TowerTables:
    """The trained tables: user and item embeddings and the per-item bias, each a
    ``RowEmbedding`` (lookups read only the rows, gradients are row-sparse)."""

    users: keras.layers.Embedding
    items: keras.layers.Embedding
    item_bias: keras.layers.Embedding

    @classmethod
    def create(cls, n_users: int, n_items: int, dim: int, rng: np.random.Generator) -> TowerTables:
        init = 0.1 / np.sqrt(dim)
        users = rng.normal(0.0, init, (n_users, dim)).astype(np.float32)
        items = rng.normal(0.0, init, (n_items, dim)).astype(np.float32)
        # Per-item bias in logit units: popularity spans ~log(N) nats, more than a cosine / T can.
        bias = np.zeros((n_items, 1), np.float32)
        return cls(
            _table(users, "user_tower"), _table(items, "item_tower"), _table(bias, "item_bias")
        )

    @property
    def variables(self) -> list[keras.Variable]:
        return [self.users.embeddings, self.items.embeddings, self.item_bias.embeddings]


def _table(values: np.ndarray, name: str) -> keras.layers.Embedding:
    from recflow.models.sparse_adam import row_embedding

    layer = row_embedding(
        values.shape[0], values.shape[1], embeddings_initializer="zeros", name=name
    )
    layer.build((None,))
    layer.embeddings.assign(values)
    return layer


def in_batch_softmax_loss(
    users: tf.Tensor,
    items: tf.Tensor,
    tables: TowerTables,
    log_q: tf.Tensor,
    temperature: float,
) -> tf.Tensor:
    """Mean in-batch softmax loss of (user, item) pairs (module docstring).

    Row r's logit for item j is cos(u_r, v_j) / T + bias_j - logQ_j. Its denominator is its
    positive p once plus every other pair's item (a copy of p excluded). With the distinct
    items as columns and m_j the count of j in the batch, that is
    ``sum_j m_j exp(l_rj) - (m_p - 1) exp(l_rp)``; with ``d = logsumexp_j(l_rj + log m_j) - l_rp``
    (>= log m_p) the loss is ``d + log1p(-(m_p - 1) exp(-d))``, whose log1p argument stays
    above -1.
    """
    import tensorflow as tf

    columns, column_of_row = tf.unique(items)
    copies = tf.math.unsorted_segment_sum(
        tf.ones_like(items, tf.float32), column_of_row, tf.shape(columns)[0]
    )
    u = tf.math.l2_normalize(tables.users(users), axis=1) / temperature
    v = tf.math.l2_normalize(tables.items(columns), axis=1)
    column_term = tf.squeeze(tables.item_bias(columns), axis=1) - tf.gather(log_q, columns)
    logits = tf.matmul(u, v, transpose_b=True) + column_term[None, :]  # [B, distinct items]
    log_denominator = tf.reduce_logsumexp(logits + tf.math.log(copies)[None, :], axis=1)
    d = log_denominator - tf.gather(logits, column_of_row, batch_dims=1)
    other_copies = tf.gather(copies, column_of_row) - 1.0
    return tf.reduce_mean(d + tf.math.log1p(-other_copies * tf.exp(-d)))


def tower_step(
    tables: TowerTables,
    optimizer: keras.optimizers.Optimizer,
    log_q: np.ndarray,
    temperature: float,
) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
    """Compiled steps of the in-batch softmax (module docstring): given [S, B] users and items,
    S batches in turn, each a loss then a lazy Adam update of the rows it looked up; returns the
    sum of the S losses."""
    import tensorflow as tf

    log_q_t = tf.constant(log_q)
    variables = tables.variables

    def one_step(users: tf.Tensor, items: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            loss = in_batch_softmax_loss(users, items, tables, log_q_t, temperature)
        optimizer.apply(tape.gradient(loss, variables), variables)
        return loss

    return compile_steps(one_step, optimizer, variables)


def compile_steps(
    one_step: Callable[[tf.Tensor, tf.Tensor], tf.Tensor],
    optimizer: keras.optimizers.Optimizer,
    variables: list[keras.Variable],
) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
    """``one_step`` (users [B], items [B] -> loss) run over the rows of [S, B] inputs in one
    compiled call, returning the summed loss: the same updates in the same order as S calls,
    without S calls' Python and dispatch overhead (Keras' ``steps_per_execution`` for this
    loop). The optimizer's slots are built first: variables cannot be created inside the loop.
    """
    import tensorflow as tf

    optimizer.build(variables)

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, None], tf.int32),
            tf.TensorSpec([None, None], tf.int32),
        ]
    )
    def steps(users: tf.Tensor, items: tf.Tensor) -> tf.Tensor:
        total = tf.constant(0.0)
        for k in tf.range(tf.shape(users)[0]):
            total += one_step(users[k], items[k])
        return total

    return steps  # type: ignore[no-any-return]


def train_towers(
    features: Features,
    *,
    dim: int,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    temperature: float,
    seed: int,
    steps_per_execution: int,
    progress_seconds: float,
    progress: Callable[[str], None] = print,
) -> Towers:
    """Fit both towers on ``features``' distinct training pairs (see the module docstring),
    ``steps_per_execution`` batches per compiled call (:func:`compile_steps`); a progress line
    with pairs/s and ETA every ``progress_seconds`` inside an epoch (both: the TrainConfig
    settings of the same names, declared there)."""
    import tensorflow as tf

    from recflow.models.pointwise import unique_positives
    from recflow.models.sparse_adam import lazy_adam

    if (
        dim < 1
        or epochs < 1
        or batch_size < 2
        or learning_rate <= 0
        or temperature <= 0
        or steps_per_execution < 1
    ):
        raise TrainingError(
            "two_stage towers: expected dim >= 1, epochs >= 1, batch_size >= 2, learning_rate "
            f"> 0, temperature > 0 and steps_per_execution >= 1, found {dim}, {epochs}, "
            f"{batch_size}, {learning_rate}, {temperature}, {steps_per_execution}; fix the "
            "two_stage_tower_* settings or steps_per_execution"
        )
    pos_u, pos_i = unique_positives(features)
    if pos_u.size < 2:
        raise TrainingError(
            f"two_stage towers: expected at least 2 training pairs, found {pos_u.size}"
        )
    counts = np.bincount(pos_i, minlength=features.n_items).astype(np.float64)
    log_q = np.log(np.maximum(counts, 1.0) / pos_u.size).astype(np.float32)

    tf.random.set_seed(seed)
    rng = np.random.default_rng(seed)
    tables = TowerTables.create(features.n_users, features.n_items, dim, rng)
    train_steps = tower_step(tables, lazy_adam(learning_rate, epsilon=_EPSILON), log_q, temperature)

    history: dict[str, list[float]] = {"tower_loss": [], "tower_seconds": []}
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        order = rng.permutation(pos_u.size)
        meter = Progress(
            f"towers epoch {epoch}/{epochs}",
            order.size,
            progress,
            unit="pairs",
            interval=progress_seconds,
        )
        total, batches = 0.0, 0
        for users, items in epoch_batches(
            pos_u[order], pos_i[order], batch_size, steps_per_execution
        ):
            total += float(train_steps(users, items))
            batches += users.shape[0]
            meter.advance(users.size)
        meter.finish()
        loss = total / batches
        if not np.isfinite(loss):
            raise TrainingError(
                f"two_stage towers: expected a finite loss, found {loss} at epoch {epoch}; "
                "lower two_stage_tower_learning_rate"
            )
        seconds = time.perf_counter() - t0
        history["tower_loss"].append(loss)
        history["tower_seconds"].append(seconds)
        progress(
            f"towers epoch {epoch}/{epochs} loss={loss:.4f} pairs={pos_u.size} "
            f"seconds={seconds:.1f}"
        )
    # Served as one dot product: [u / T, 1] . [v, b] = cosine / T + bias, the training logit.
    users = tf.math.l2_normalize(tables.users.embeddings, axis=1).numpy() / temperature
    items = tf.math.l2_normalize(tables.items.embeddings, axis=1).numpy()
    ones = np.ones((users.shape[0], 1), np.float32)
    return Towers(
        users=np.hstack([users, ones]).astype(np.float32),
        items=np.hstack([items, tables.item_bias.embeddings.numpy()]).astype(np.float32),
        history=history,
    )


def epoch_batches(
    users: np.ndarray, items: np.ndarray, batch_size: int, per_call: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """One epoch's pairs (already in training order) as [S, batch_size] blocks of up to
    ``per_call`` consecutive batches, then the last short batch as a [1, rest] block; a
    last batch of one pair is dropped (an in-batch softmax needs another pair)."""
    full = users.size // batch_size
    for start in range(0, full, per_call):
        stop = min(full, start + per_call)
        rows = slice(start * batch_size, stop * batch_size)
        yield users[rows].reshape(-1, batch_size), items[rows].reshape(-1, batch_size)
    if users.size - full * batch_size >= 2:
        yield users[full * batch_size :][None], items[full * batch_size :][None]


def retrieve(
    towers: Towers, features: Features, user_idx: np.ndarray, n: int, *, chunk: int = 512
) -> np.ndarray:
    """[B, min(n, N)] item indices each user's retrieval stage picks, best first, training
    items excluded (as the served model does)."""
    from recflow.models.score_module import seen_csr

    splits, seen = seen_csr(features)
    n = min(n, features.n_items)
    out = np.empty((user_idx.size, n), dtype=np.int64)
    for start in range(0, user_idx.size, chunk):
        rows = np.asarray(user_idx[start : start + chunk], dtype=np.int64)
        scores = towers.users[rows] @ towers.items.T
        for b, u in enumerate(rows):
            scores[b, seen[splits[u] : splits[u + 1]]] = -np.inf
        part = np.argpartition(-scores, n - 1, axis=1)[:, :n]
        order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
        out[start : start + rows.size] = np.take_along_axis(part, order, axis=1)
    return out


def recall_at_n(candidates: np.ndarray, targets: np.ndarray) -> float:
    """Share of users whose held-out item is among their candidates (one target per user)."""
    if targets.size == 0:
        return float("nan")
    return float((candidates == targets[:, None]).any(axis=1).mean())


def popularity_candidates(features: Features, user_idx: np.ndarray, n: int) -> np.ndarray:
    """[B, n] the ``n`` most popular items each user has not seen: the trivial retrieval stage
    the towers must beat (the gate's floor, see recflow.gate.retrieval_check)."""
    from recflow.models.score_module import seen_csr

    splits, seen = seen_csr(features)
    n = min(n, features.n_items)
    ranked = np.argsort(-np.asarray(features.item_popularity), kind="stable")
    out = np.empty((user_idx.size, n), dtype=np.int64)
    for b, u in enumerate(np.asarray(user_idx, dtype=np.int64)):
        own = seen[splits[u] : splits[u + 1]]
        head = ranked[: n + own.size]  # the first n unseen items lie within these
        picked = head[~np.isin(head, own)][:n]
        out[b, : picked.size] = picked
        out[b, picked.size :] = -1
    return out
