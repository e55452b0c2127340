"""Pointwise training on (user, item, label) rows of implicit feedback.

Shared by the ranking MLP (:mod:`recflow.models.ranking_mlp`) and NeuMF
(:mod:`recflow.models.neumf`): the distinct positive pairs, negatives sampled from each user's
unseen items, one epoch of ``model.fit`` streamed through ``tf.data``, and the optimizer of
embedding models. The distinct positives are also what retrieval (two_stage), the score
module's seen-item table and the explanations read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from recflow.arrays import sorted_unique
from recflow.config import TrainConfig
from recflow.errors import TrainingError
from recflow.types import Features

if TYPE_CHECKING:
    import keras
    import tensorflow as tf


# Rejection rounds before switching to exact per-user draws; each round re-draws only the
# draws that hit seen items, so for users who have seen < 50 % of items 8 rounds leave ~0.4 %.
_MAX_REDRAW_ROUNDS = 8


class SeenPairs(NamedTuple):
    """The distinct training (user, item) pairs as sorted keys ``user * n_items + item``, and
    how many distinct items each user has."""

    keys: np.ndarray
    per_user: np.ndarray


def seen_pairs(features: Features) -> SeenPairs:
    """Built once per training run: the keys sort ~N log N over all events, the part of
    negative sampling that would otherwise repeat every epoch."""
    n = features.n_items
    keys = sorted_unique(
        features.train_user_idx.astype(np.int64) * n + features.train_item_idx.astype(np.int64)
    )
    per_user = np.bincount((keys // n).astype(np.int64), minlength=features.n_users)
    return SeenPairs(keys, per_user)


def unique_positives(
    features: Features, seen: SeenPairs | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (user, item) training pairs; repeated events of a pair count once."""
    keys = (seen if seen is not None else seen_pairs(features)).keys
    n = features.n_items
    return (keys // n).astype(np.int32), (keys % n).astype(np.int32)


def sample_negatives(
    features: Features,
    users: np.ndarray,
    per_user_row: int,
    rng: np.random.Generator,
    seen: SeenPairs | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """For each entry of ``users`` draw ``per_user_row`` items the user has not seen in train.

    Uniform over each user's unseen items (rejection sampling, vectorised). Rows of users who
    have seen the whole catalogue cannot have negatives and are dropped. Pass ``seen``
    (from :func:`seen_pairs`) when sampling every epoch of one run.
    """
    n = features.n_items
    pairs = seen if seen is not None else seen_pairs(features)
    keys = pairs.keys
    users = users[pairs.per_user[users] < n]
    neg_users = np.repeat(users.astype(np.int32), per_user_row)
    neg_items = rng.integers(0, n, size=neg_users.shape[0], dtype=np.int32)

    def hits_seen(u: np.ndarray, i: np.ndarray) -> np.ndarray:
        drawn = u.astype(np.int64) * n + i
        pos = np.minimum(np.searchsorted(keys, drawn), keys.shape[0] - 1)
        return keys[pos] == drawn

    bad = np.flatnonzero(hits_seen(neg_users, neg_items))
    for _ in range(_MAX_REDRAW_ROUNDS):
        if bad.size == 0:
            break
        neg_items[bad] = rng.integers(0, n, size=bad.size, dtype=np.int32)
        bad = bad[hits_seen(neg_users[bad], neg_items[bad])]
    # Users who have seen most of the catalogue defeat rejection: draw theirs exactly from
    # their unseen items (few users reach this, so a loop over them is cheap).
    for user in np.unique(neg_users[bad]).astype(np.int64):
        rows = bad[neg_users[bad] == user]
        lo, hi = np.searchsorted(keys, [user * n, (user + 1) * n])
        own = keys[lo:hi] - user * n
        unseen = np.setdiff1d(np.arange(n, dtype=np.int64), own)
        neg_items[rows] = rng.choice(unseen, size=rows.size).astype(np.int32)
    return neg_users, neg_items


def check_inputs(features: Features, cfg: TrainConfig) -> None:
    if features.n_users == 0 or features.n_items < 2 or features.train_user_idx.size == 0:
        raise TrainingError(
            "training: expected users, at least 2 items and training interactions, found "
            f"{features.n_users} users, {features.n_items} items, "
            f"{features.train_user_idx.size} interactions; check the split and features stage"
        )
    # epochs, batch_size and negatives have declared bounds (recflow.train_config.TrainConfig)


def fit_epoch(
    model: keras.Model,
    users: np.ndarray,
    items: np.ndarray,
    labels: np.ndarray,
    cfg: TrainConfig,
    say: Callable[[str], None],
    what: str,
) -> keras.callbacks.History:
    """One epoch of ``model.fit`` over the given (already shuffled) rows, streamed by tf.data
    (:func:`training_batches`, no per-epoch copy into Keras' own adapter); a progress line
    (examples/s, ETA) goes to ``say`` every ``cfg.progress_seconds``.
    """
    from recflow.progress import Progress, keras_callback

    data = training_batches(users, items, labels, cfg.batch_size)
    meter = Progress(what, users.size, say, interval=cfg.progress_seconds)
    fit = model.fit(
        data, epochs=1, shuffle=False, verbose=0, callbacks=[keras_callback(meter, cfg.batch_size)]
    )
    meter.finish()
    return fit


def training_batches(
    users: np.ndarray, items: np.ndarray, labels: np.ndarray, batch_size: int
) -> tf.data.Dataset:
    """:func:`row_batches` as ``fit`` reads them: prefetched, with tf.data's model-based
    autotuner off.

    With the autotuner on, whole ``fit`` calls of the ranking network at the 20M sizes ran at
    one fixed lower rate (321k examples/s, to three digits, in about a third of the rounds,
    with one core idle) and the others at ~450k; with it off, no round fell to that rate
    (bench/diagnostics/ranking_input.py). The batches are slices of arrays already in memory:
    there is nothing for it to tune.
    """
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    data = row_batches(users, items, labels, batch_size).with_options(options)
    return data.prefetch(tf.data.AUTOTUNE)


def row_batches(
    users: np.ndarray, items: np.ndarray, labels: np.ndarray, batch_size: int
) -> tf.data.Dataset:
    """``((users, items), labels)`` in consecutive batches of ``batch_size`` rows (the last one
    shorter), exactly the batches of ``from_tensor_slices(...).batch(batch_size)``.

    Each dataset element is a whole batch, cut from a [batches, batch_size] view of the
    arrays: ``.batch()`` gathers rows one by one, which cost the ranking network 1.4-1.6x its
    examples/s (median epochs of 2M random rows at 30k and 600k users; a probe, 2026-12-02).
    """
    import tensorflow as tf

    full = users.size // batch_size * batch_size
    data = tf.data.Dataset.from_tensor_slices(
        (
            (users[:full].reshape(-1, batch_size), items[:full].reshape(-1, batch_size)),
            labels[:full].reshape(-1, batch_size),
        )
    )
    if full < users.size:
        rest = ((users[full:], items[full:]), labels[full:])
        data = data.concatenate(tf.data.Dataset.from_tensors(rest))
    return data


def embedding_optimizer(
    cfg: TrainConfig, learning_rate: float | None = None
) -> keras.optimizers.Optimizer:
    """Adam with lazy (touched-rows-only) embedding updates; plain dense Adam under DP-SGD.

    DP-SGD stays dense on purpose: its Gaussian noise covers every coordinate of every table,
    so every row really changes at every step (see recflow.models.sparse_adam).
    """
    import keras

    from recflow.models.sparse_adam import lazy_adam

    lr = cfg.learning_rate if learning_rate is None else learning_rate
    if cfg.dp.enabled:
        return keras.optimizers.Adam(learning_rate=lr)
    return lazy_adam(lr)


def steps_per_execution(cfg: TrainConfig) -> int:
    """``cfg.steps_per_execution``, or 1 under a multi-replica strategy (Keras 3.15's
    multi-step loop fails there: "You must feed a value for placeholder tensor")."""
    import tensorflow as tf

    return cfg.steps_per_execution if tf.distribute.get_strategy().num_replicas_in_sync == 1 else 1


Rows = tuple[np.ndarray, np.ndarray, np.ndarray]  # users, items, labels


def epoch_rows(
    features: Features, seen: SeenPairs, per_user_row: int, rng: np.random.Generator, shuffle: bool
) -> Rows:
    """One epoch's rows: the distinct positives (label 1) and ``per_user_row`` fresh negatives
    for each (label 0); in an order drawn from ``rng`` when ``shuffle``."""
    pos_u, pos_i = unique_positives(features, seen)
    neg_u, neg_i = sample_negatives(features, pos_u, per_user_row, rng, seen)
    users = np.concatenate([pos_u, neg_u])
    items = np.concatenate([pos_i, neg_i])
    if not shuffle:
        labels = np.concatenate([np.ones(pos_u.size, np.float32), np.zeros(neg_u.size, np.float32)])
        return users, items, labels
    order = rng.permutation(users.size)
    return users[order], items[order], (order < pos_u.size).astype(np.float32)


def epochs_of_rows(
    features: Features,
    seen: SeenPairs,
    per_user_row: int,
    epochs: int,
    rng: np.random.Generator,
    *,
    shuffle: bool = True,
    prefetch: bool = True,
) -> Iterator[Rows]:
    """:func:`epoch_rows` for each epoch, drawn from ``rng`` in epoch order.

    With ``prefetch`` the next epoch's rows are drawn in a background thread while the caller
    trains on the current ones: Keras' loop over small batches keeps about one of two cores
    busy, and at 20M events the draw and shuffle took tens of seconds an epoch (20M ranking MLP
    train 1,214 s -> 813 s with this: bench/results/scale-ranking-mlp-rerun.md).
    Only when nothing else draws from ``rng`` meanwhile (DP-SGD's epochs do: no prefetch).
    """
    if not prefetch:
        for _ in range(epochs):
            yield epoch_rows(features, seen, per_user_row, rng, shuffle)
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="recflow-rows") as pool:
        draw = partial(epoch_rows, features, seen, per_user_row, rng, shuffle)
        pending = pool.submit(draw) if epochs > 0 else None
        for epoch in range(epochs):
            assert pending is not None
            rows = pending.result()
            pending = pool.submit(draw) if epoch + 1 < epochs else None
            yield rows


def fit_rows(
    model: keras.Model,
    rows: Rows,
    cfg: TrainConfig,
    say: Callable[[str], None],
    what: str,
) -> float:
    """One epoch over ``rows`` (already in training order); returns the epoch's loss,
    TrainingError if not finite."""
    fit = fit_epoch(model, *rows, cfg, say, what)
    loss = float(fit.history["loss"][-1])
    if not np.isfinite(loss):
        raise TrainingError(
            f"{model.name}: expected a finite loss, found {loss} at {what}; lower learning_rate"
        )
    return loss
