"""Self-Supervised Q-learning (SQN, Xin et al., SIGIR 2020) on a sequential recommender.

A Q head over the catalogue sits on the Transformer state s_t next to the supervised
(cross-entropy) head; both train jointly on the shared state. A logged event is the action
a_t taken in s_t with reward r_t; its one-step target is r_t + gamma * max_a' Q'(s_{t+1}, a'),
where Q' is a target network (a lagged copy of the whole online network) and a terminal
transition (the user's last training event) bootstraps nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from recflow.errors import ConfigError

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

POSITIVE_RATING = 4.0  # ratings at or above this are "liked" (reward 1)


def rewards_from_ratings(ratings: np.ndarray, *, other_reward: float = 0.0) -> np.ndarray:
    """Reward per event: 1.0 for rating >= 4, ``other_reward`` below; implicit data -> 1.0.

    Implicit feedback is stored as a constant rating (1.0 by the schema); a constant column
    carries no preference signal, so every logged event counts as a success.
    """
    r = np.asarray(ratings, dtype=np.float64)
    known = r[~np.isnan(r)]
    if known.size == 0 or np.all(known == known[0]):
        return np.ones(r.shape, dtype=np.float32)
    liked = np.nan_to_num(r, nan=0.0) >= POSITIVE_RATING
    return np.where(liked, 1.0, other_reward).astype(np.float32)


def bellman_targets(
    rewards: tf.Tensor, next_q: tf.Tensor, done: tf.Tensor, gamma: float
) -> tf.Tensor:
    """r + gamma * (1 - done) * max_a' next_q[..., a'] (no gradient flows into the target).

    ``rewards`` and ``done`` have shape [...]; ``next_q`` [..., N] are the target network's
    values of the next state (ignored where ``done`` is 1).
    """
    import tensorflow as tf

    if not 0.0 <= gamma < 1.0:
        raise ConfigError(f"sqn_gamma: expected 0 <= gamma < 1, found {gamma}")
    rewards = tf.cast(rewards, tf.float32)
    done = tf.cast(done, tf.float32)
    best_next = tf.reduce_max(tf.cast(next_q, tf.float32), axis=-1)
    # where(), not a product: a huge or inf value behind a terminal must not leak in as NaN.
    bootstrap = tf.where(done > 0, tf.zeros_like(best_next), best_next)
    return tf.stop_gradient(rewards + gamma * bootstrap)


class TargetNetwork:
    """A lagged copy of an online Keras model: ``update(tau)`` moves it toward the online one.

    ``tau=1`` copies (the periodic hard sync of DQN); ``0 < tau < 1`` is Polyak averaging.
    Both models must be built with the same architecture (same weight order and shapes).
    """

    def __init__(self, online: keras.Model, target: keras.Model) -> None:
        online_shapes = [tuple(w.shape) for w in online.weights]
        target_shapes = [tuple(w.shape) for w in target.weights]
        if online_shapes != target_shapes:
            raise ConfigError(
                f"target network: expected the online network's weight shapes "
                f"{online_shapes[:3]}..., found {target_shapes[:3]}...; build both from one config"
            )
        self.online = online
        self.model = target
        self.updates = 0
        self.update(1.0)

    def update(self, tau: float = 1.0) -> None:
        if not 0.0 < tau <= 1.0:
            raise ConfigError(f"sqn_tau: expected 0 < tau <= 1, found {tau}")
        for t, o in zip(self.model.weights, self.online.weights, strict=True):
            t.assign(o if tau == 1.0 else tau * o + (1.0 - tau) * t)
        self.updates += 1

    def max_abs_difference(self) -> float:
        """Largest absolute difference over all weights (0.0 right after a hard sync)."""
        diffs = [
            float(np.max(np.abs(np.asarray(t) - np.asarray(o)))) if np.size(o) else 0.0
            for t, o in zip(self.model.weights, self.online.weights, strict=True)
        ]
        return max(diffs, default=0.0)


def q_loss(q_taken: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
    """Mean squared TD error of the taken actions (SQN's one-step Q-learning loss)."""
    import tensorflow as tf

    return tf.reduce_mean(tf.square(tf.cast(q_taken, tf.float32) - targets))
