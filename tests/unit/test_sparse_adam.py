"""LazyAdam: a step changes only the embedding rows in the batch (and their Adam slots)."""

from __future__ import annotations

import numpy as np
import pytest

from recflow.config import SyntheticConfig, TrainConfig, train_config
from recflow.errors import ConfigError


def _snapshot(optimizer, variable) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    i = optimizer._get_variable_index(variable)
    return (
        np.array(variable.numpy()),
        np.array(optimizer._momentums[i].numpy()),
        np.array(optimizer._velocities[i].numpy()),
    )


def _gather_step(optimizer, table, rows):
    import tensorflow as tf

    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(tf.gather(table.value, rows) - 1.0))
    grad = tape.gradient(loss, table.value)
    assert isinstance(grad, tf.IndexedSlices)
    optimizer.apply([grad], [table])


def test_untouched_rows_and_their_slots_stay_bit_identical() -> None:
    import keras

    from recflow.models.sparse_adam import lazy_adam

    keras.utils.set_random_seed(0)
    table = keras.Variable(np.random.default_rng(0).normal(size=(50, 4)).astype("float32"))
    opt = lazy_adam(0.01)
    opt.build([table])
    _gather_step(opt, table, np.array([1, 2, 2, 7]))  # warm slots of rows 1, 2, 7
    before = _snapshot(opt, table)
    _gather_step(opt, table, np.array([3, 7, 7]))
    after = _snapshot(opt, table)
    touched = np.zeros(50, bool)
    touched[[3, 7]] = True
    for old, new in zip(before, after, strict=True):
        np.testing.assert_array_equal(old[~touched], new[~touched])  # bit-identical
        assert not np.array_equal(old[touched], new[touched])


def test_each_row_once_matches_dense_adam() -> None:
    """When every row is in the batch, lazy and dense Adam are the same update."""
    import keras
    import tensorflow as tf

    from recflow.models.sparse_adam import lazy_adam

    init = np.random.default_rng(1).normal(size=(6, 3)).astype("float32")
    results = []
    for opt in (lazy_adam(0.05), keras.optimizers.Adam(0.05)):
        table = keras.Variable(init.copy())
        for _ in range(3):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(tf.gather(table.value, np.arange(6)[::-1]) ** 3)
            opt.apply([tape.gradient(loss, table.value)], [table])
        results.append(table.numpy())
    np.testing.assert_allclose(results[0], results[1], rtol=1e-5, atol=1e-6)


def test_amsgrad_is_refused() -> None:
    from recflow.models.sparse_adam import lazy_adam

    with pytest.raises(ConfigError, match="amsgrad"):
        lazy_adam(0.01, amsgrad=True)


def test_ranking_mlp_fit_leaves_users_outside_the_batch_unchanged() -> None:
    """Through the real network and fit path: one batch moves only its users' rows."""
    from recflow.data import generate_synthetic
    from recflow.features import build_features, split_leave_last_out
    from recflow.models.pointwise import fit_epoch
    from recflow.models.ranking_mlp.network import build_ranking_mlp

    ds = generate_synthetic(SyntheticConfig(n_users=80, n_items=40, seed=2))
    features = build_features(split_leave_last_out(ds.interactions).train, ds.items)
    cfg = TrainConfig(batch_size=64, progress_seconds=0)
    model = build_ranking_mlp(features, cfg)
    users = np.array([0, 3, 3, 9], np.int32)
    items = np.array([1, 2, 5, 5], np.int32)
    labels = np.array([1, 0, 1, 0], np.float32)
    fit_epoch(model, users, items, labels, cfg, lambda _: None, "step")  # builds the slots
    table = model.get_layer("user_tower").get_layer("user_embedding").embeddings
    before = _snapshot(model.optimizer, table)
    fit_epoch(model, users[:2], items[:2], labels[:2], cfg, lambda _: None, "step")
    after = _snapshot(model.optimizer, table)
    touched = np.zeros(features.n_users, bool)
    touched[[0, 3]] = True
    for old, new in zip(before, after, strict=True):
        np.testing.assert_array_equal(old[~touched], new[~touched])
        assert not np.array_equal(old[touched], new[touched])


def test_dp_sgd_keeps_dense_adam() -> None:
    import keras

    from recflow.models.pointwise import embedding_optimizer
    from recflow.models.sparse_adam import _lazy_adam_class

    dense = embedding_optimizer(train_config(dp_enabled=True))
    assert type(dense) is keras.optimizers.Adam
    assert isinstance(embedding_optimizer(TrainConfig()), _lazy_adam_class())


def test_sasrec_sampled_softmax_above_the_threshold() -> None:
    from recflow.models.sasrec.training import softmax_negatives

    cfg = train_config(sasrec_full_softmax_max_items=100, sasrec_large_catalogue_negatives=32)
    assert softmax_negatives(cfg, 100) == 0  # full softmax up to the limit
    assert softmax_negatives(cfg, 101) == 32
    assert softmax_negatives(train_config(sasrec_negatives=8), 50) == 8  # explicit wins
    assert softmax_negatives(train_config(sasrec_negatives=64), 50) == 0  # >= catalogue: full


def test_row_embedding_is_keras_embedding_without_the_full_read() -> None:
    """Same outputs and the same (row-sparse) gradient as keras.layers.Embedding."""
    import keras
    import tensorflow as tf

    from recflow.models.sparse_adam import row_embedding

    ids = tf.constant([[1, 4], [4, 0]])
    layers = [keras.layers.Embedding(6, 3), row_embedding(6, 3)]
    for layer in layers:
        layer.build((None, 2))
    layers[1].set_weights(layers[0].get_weights())
    outs, grads = [], []
    for layer in layers:
        with tf.GradientTape() as tape:
            out = layer(ids)
            loss = tf.reduce_sum(out**2)
        outs.append(out.numpy())
        grads.append(tape.gradient(loss, layer.trainable_variables[0].value))
    np.testing.assert_array_equal(outs[0], outs[1])
    assert all(isinstance(g, tf.IndexedSlices) for g in grads)
    np.testing.assert_array_equal(tf.convert_to_tensor(grads[0]), tf.convert_to_tensor(grads[1]))
