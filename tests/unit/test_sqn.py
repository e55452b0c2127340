"""SQN: rewards, the Bellman target, the target network, and joint training with a Q head."""

from __future__ import annotations

import numpy as np
import pytest

from recflow.config import SyntheticConfig, train_config
from recflow.errors import ConfigError
from recflow.features import build_features, split_leave_last_out
from recflow.models.sasrec.network import SasrecParams, build_network, score_sequences
from recflow.models.sasrec.sqn import TargetNetwork, bellman_targets, rewards_from_ratings

CFG = train_config(
    sasrec_epochs=4,
    sasrec_batch_size=32,
    sasrec_learning_rate=0.005,
    sasrec_max_len=8,
    sasrec_dim=8,
    sasrec_blocks=1,
    sasrec_dropout=0.0,
    sqn_target_every=3,
    seed=2,
)


def test_rewards_liked_explicit_and_implicit():
    ratings = np.array([5.0, 4.0, 3.5, 1.0, np.nan])
    assert rewards_from_ratings(ratings).tolist() == [1.0, 1.0, 0.0, 0.0, 0.0]
    np.testing.assert_allclose(
        rewards_from_ratings(ratings, other_reward=0.2), [1.0, 1.0, 0.2, 0.2, 0.2]
    )
    assert rewards_from_ratings(np.ones(4)).tolist() == [1.0] * 4  # implicit feedback


def test_bellman_target_by_hand_with_terminal():
    rewards = np.array([1.0, 0.0, 0.5])
    next_q = np.array([[1.0, 3.0, 2.0], [0.0, -1.0, 5.0], [9.0, np.inf, 9.0]])
    done = np.array([0.0, 0.0, 1.0])
    got = bellman_targets(rewards, next_q, done, gamma=0.5).numpy()
    # 1 + 0.5 * 3; 0 + 0.5 * 5; terminal: reward only (the inf behind it must not leak)
    np.testing.assert_allclose(got, [2.5, 2.5, 0.5])
    np.testing.assert_allclose(bellman_targets(rewards, next_q, done, 0.0).numpy(), rewards)
    with pytest.raises(ConfigError, match="gamma"):
        bellman_targets(rewards, next_q, done, gamma=1.0)


def test_target_network_lags_between_syncs_and_matches_after():
    import keras
    import tensorflow as tf

    p = SasrecParams(n_items=12, max_len=6, dim=8, blocks=1, heads=1, dropout=0.0, q_head=True)
    keras.utils.set_random_seed(0)
    online, lagged = build_network(p), build_network(p)
    target = TargetNetwork(online, lagged)
    assert target.max_abs_difference() == 0.0  # starts as a copy
    seq = np.array([[0, 0, 3, 5, 7, 2], [1, 2, 3, 4, 5, 6]], np.int32)
    optimizer = keras.optimizers.Adam(0.05)
    for _ in range(2):
        with tf.GradientTape() as tape:
            hidden = online(seq, training=True)
            loss = tf.reduce_mean(tf.square(online.q_values(hidden) - 1.0)) + tf.reduce_mean(
                tf.square(online.logits(hidden))
            )
        optimizer.apply(tape.gradient(loss, online.trainable_variables), online.trainable_variables)
    gap = target.max_abs_difference()
    assert gap > 1e-3  # the online network moved, the target did not
    q_online = score_sequences(online, seq, "q")
    assert not np.allclose(score_sequences(lagged, seq, "q"), q_online)
    target.update(0.5)  # Polyak: half-way
    assert target.max_abs_difference() == pytest.approx(gap / 2, rel=1e-4)
    target.update(1.0)  # hard sync
    assert target.max_abs_difference() == 0.0
    np.testing.assert_allclose(score_sequences(lagged, seq, "q"), q_online, rtol=1e-6)
    with pytest.raises(ConfigError, match="tau"):
        target.update(0.0)


@pytest.fixture(scope="module")
def data():
    from recflow.data import generate_synthetic

    ds = generate_synthetic(
        SyntheticConfig(n_users=50, n_items=30, n_genres=3, mean_events_per_user=12, seed=4)
    )
    split = split_leave_last_out(ds.interactions)
    return split, build_features(split.train, ds.items)


@pytest.mark.parametrize("negatives", [0, 4])
def test_joint_training_and_serving_the_q_head(data, tmp_path, negatives):
    import tensorflow as tf

    from recflow.models.sasrec.kind import load_trained
    from recflow.models.zoo import get_kind

    split, f = data
    cfg = train_config(CFG, sqn_serve_head="q", sqn_negatives=negatives)
    kind = get_kind("sasrec_sqn")
    summary = kind.fit(f, split, cfg, lambda _: None, tmp_path / "train")
    history = summary["history"]
    assert summary["serve_head"] == "q"
    assert len(history["q_loss"]) == cfg.sasrec.epochs
    assert all(np.isfinite(history["q_loss"])) and history["q_loss"][0] > 0
    np.testing.assert_allclose(history["loss"], np.add(history["ce"], history["q_loss"]), rtol=1e-5)
    out = kind.export(tmp_path / "train", f, tmp_path / "model", 5, [])
    net, head, recent = load_trained(tmp_path / "train", f)
    assert head == "q"
    loaded = tf.saved_model.load(str(out))  # kept referenced: it owns the variables
    served = loaded.score_all(tf.constant(f.user_ids[:6])).numpy()
    np.testing.assert_allclose(served, score_sequences(net, recent[:6], "q"), rtol=1e-4, atol=1e-5)
    assert not np.allclose(served, score_sequences(net, recent[:6], "supervised"), atol=1e-3)


def test_unknown_serving_head_is_rejected(data, tmp_path):

    split, f = data
    with pytest.raises(ConfigError, match="sqn_serve_head: expected one of"):
        train_config(CFG, sqn_serve_head="both")
