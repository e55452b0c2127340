"""Contextual bandit policies learned from logged feedback, all with the same interface.

``scores(context) -> [n, A]`` (higher is better) and ``action_probs(context, epsilon) -> [n, A]``
(each row sums to 1). ``epsilon`` is the exploration rate, per row or one for all: with
probability epsilon the action is uniform over the catalogue, which keeps every action's
propensity >= epsilon / A so the next round's logs stay usable for off-policy evaluation.

* :class:`LinUCB` (disjoint ridge per action + upper-confidence bonus; greedy on the bound).
* :class:`LinearTS` (same posterior, Thompson sampling; probabilities by Monte Carlo).
* :class:`NeuralPolicy` (Keras 3 softmax policy trained off-policy by maximising the IPW or
  doubly robust estimate of its own value, as in OBP's NNPolicyLearner).

LinUCB and LinearTS fit on the logged (context, action, reward) of every position alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

from recflow.bandits.feedback import LoggedFeedback
from recflow.errors import TrainingError

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

OBJECTIVES = ("dr", "ipw")


class Policy(Protocol):
    action_ids: tuple[str, ...]

    def scores(self, context: np.ndarray) -> np.ndarray: ...

    def action_probs(
        self, context: np.ndarray, epsilon: float | np.ndarray = 0.0
    ) -> np.ndarray: ...


def explore(base: np.ndarray, epsilon: float | np.ndarray) -> np.ndarray:
    """(1 - eps) * base + eps / A, with eps per row or scalar, checked to lie in [0, 1]."""
    eps = np.broadcast_to(np.asarray(epsilon, dtype=np.float64), (base.shape[0],))
    if np.any(~np.isfinite(eps)) or np.any((eps < 0) | (eps > 1)):
        raise ValueError(f"epsilon: expected values in [0, 1], found {np.unique(eps)[:5]}")
    return (1.0 - eps)[:, None] * base + eps[:, None] / base.shape[1]


def greedy(scores: np.ndarray) -> np.ndarray:
    """One-hot of the best action; exact ties share the mass (so no index order bias)."""
    best = scores == scores.max(axis=1, keepdims=True)
    return best / best.sum(axis=1, keepdims=True)


def _with_bias(context: np.ndarray) -> np.ndarray:
    context = np.asarray(context, dtype=np.float64)
    return np.hstack([np.ones((context.shape[0], 1)), context])


def _ridge_posterior(feedback: LoggedFeedback, l2: float) -> tuple[np.ndarray, np.ndarray]:
    """theta [A, D+1] and A_inv [A, D+1, D+1] of one ridge regression per action."""
    x = _with_bias(feedback.context)
    d = x.shape[1]
    gram = np.broadcast_to(l2 * np.eye(d), (feedback.n_actions, d, d)).copy()
    np.add.at(gram, feedback.action, x[:, :, None] * x[:, None, :])
    moment = np.zeros((feedback.n_actions, d))
    np.add.at(moment, feedback.action, x * feedback.reward[:, None])
    a_inv = np.linalg.inv(gram)
    theta = np.einsum("ade,ae->ad", a_inv, moment)
    return theta, a_inv


@dataclass
class LinUCB:
    theta: np.ndarray  # [A, D+1], first column the bias
    a_inv: np.ndarray  # [A, D+1, D+1]
    alpha: float
    action_ids: tuple[str, ...]
    name: str = "linucb"

    @classmethod
    def fit(cls, feedback: LoggedFeedback, *, alpha: float = 0.5, l2: float = 1.0) -> LinUCB:
        theta, a_inv = _ridge_posterior(feedback, l2)
        return cls(theta, a_inv, float(alpha), feedback.action_ids)

    def mean(self, context: np.ndarray) -> np.ndarray:
        return _with_bias(context) @ self.theta.T

    def width(self, context: np.ndarray) -> np.ndarray:
        x = _with_bias(context)
        return np.sqrt(np.maximum(np.einsum("nd,ade,ne->na", x, self.a_inv, x), 0.0))

    def scores(self, context: np.ndarray) -> np.ndarray:
        return self.mean(context) + self.alpha * self.width(context)

    def action_probs(self, context: np.ndarray, epsilon: float | np.ndarray = 0.0) -> np.ndarray:
        return explore(greedy(self.scores(context)), epsilon)


@dataclass
class LinearTS:
    theta: np.ndarray
    a_inv: np.ndarray
    scale: float  # posterior standard deviation multiplier v
    action_ids: tuple[str, ...]
    n_samples: int = 1000
    seed: int = 0
    name: str = "linear_ts"

    @classmethod
    def fit(
        cls,
        feedback: LoggedFeedback,
        *,
        scale: float = 0.25,
        l2: float = 1.0,
        n_samples: int = 1000,
        seed: int = 0,
    ) -> LinearTS:
        theta, a_inv = _ridge_posterior(feedback, l2)
        return cls(theta, a_inv, float(scale), feedback.action_ids, n_samples, seed)

    def scores(self, context: np.ndarray) -> np.ndarray:
        """Posterior mean reward (what the samples scatter around)."""
        return _with_bias(context) @ self.theta.T

    def action_probs(self, context: np.ndarray, epsilon: float | np.ndarray = 0.0) -> np.ndarray:
        """P(action has the largest sampled reward), estimated from ``n_samples`` draws.

        With disjoint per-action posteriors the sampled x.theta_a are independent normals, so
        drawing them directly is exact and costs n_samples x n x A normals (done in chunks).
        """
        x = _with_bias(context)
        mean = x @ self.theta.T
        std = self.scale * np.sqrt(np.maximum(np.einsum("nd,ade,ne->na", x, self.a_inv, x), 0.0))
        rng = np.random.default_rng(self.seed)
        n, a = mean.shape
        counts = np.zeros((n, a))
        rows = np.arange(n)
        chunk = max(1, 2_000_000 // max(1, n * a))
        done = 0
        while done < self.n_samples:
            s = min(chunk, self.n_samples - done)
            draws = mean[None] + std[None] * rng.standard_normal((s, n, a))
            best = draws.argmax(axis=2)  # [s, n]
            for row_best in best:
                counts[rows, row_best] += 1
            done += s
        return explore(counts / self.n_samples, epsilon)


def _pseudo_rewards(
    feedback: LoggedFeedback, q_hat: np.ndarray | None, objective: str
) -> np.ndarray:
    """Gamma [n, A]: unbiased per-action reward estimates whose pi-weighted sum is IPW / DR."""
    n, a = feedback.n_rounds, feedback.n_actions
    rows = np.arange(n)
    w = 1.0 / feedback.pscore
    gamma = np.zeros((n, a))
    if objective == "dr":
        if q_hat is None:
            raise TrainingError("neural policy: objective 'dr' needs q_hat [n, A(, L)], found None")
        q = q_hat if q_hat.ndim == 2 else q_hat[rows, :, feedback.position]
        gamma[:] = q
        gamma[rows, feedback.action] += w * (feedback.reward - q[rows, feedback.action])
    else:
        gamma[rows, feedback.action] = w * feedback.reward
    return gamma


@dataclass
class NeuralPolicy:
    model: keras.Model  # context [n, D] -> logits [n, A]
    action_ids: tuple[str, ...]
    temperature: float = 1.0
    history: list[float] = field(default_factory=list)  # training objective per epoch
    name: str = "neural"

    @classmethod
    def fit(
        cls,
        feedback: LoggedFeedback,
        *,
        q_hat: np.ndarray | None = None,
        objective: str = "dr",
        hidden: tuple[int, ...] = (64,),
        epochs: int = 20,
        batch_size: int = 1024,
        learning_rate: float = 0.003,
        entropy: float = 0.0,
        seed: int = 0,
    ) -> NeuralPolicy:
        """Maximise mean_i sum_a softmax(f(x_i))_a * Gamma_ia (IPW or DR pseudo-rewards)."""
        import keras

        if objective not in OBJECTIVES:
            raise TrainingError(
                f"neural policy: expected objective in {OBJECTIVES}, found {objective!r}"
            )
        gamma = _pseudo_rewards(feedback, q_hat, objective).astype(np.float32)
        if not np.isfinite(gamma).all():
            raise TrainingError(
                "neural policy: pseudo-rewards are not finite (missing reward or zero propensity); "
                "validate the feedback before training"
            )
        keras.utils.set_random_seed(seed)
        inputs = keras.Input((feedback.dim_context,), name="context")
        h = inputs
        for units in hidden:
            h = keras.layers.Dense(units, activation="relu")(h)
        logits = keras.layers.Dense(feedback.n_actions, name="logits")(h)
        model = keras.Model(inputs, logits)

        def loss(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
            ops = keras.ops
            p = ops.softmax(y_pred, axis=-1)
            value = ops.sum(p * y_true, axis=-1)
            ent = -ops.sum(p * ops.log(p + 1e-9), axis=-1)
            return -(value + entropy * ent)

        model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss)
        fit = model.fit(
            feedback.context.astype(np.float32),
            gamma,
            epochs=epochs,
            batch_size=batch_size,
            shuffle=True,
            verbose=0,
        )
        history = [-float(v) for v in fit.history["loss"]]
        if not np.isfinite(history[-1]):
            raise TrainingError(f"neural policy: training diverged (objective {history[-1]})")
        return cls(model, feedback.action_ids, 1.0, history)

    def scores(self, context: np.ndarray) -> np.ndarray:
        logits = self.model.predict(
            np.asarray(context, dtype=np.float32), verbose=0, batch_size=4096
        )
        return np.asarray(logits, dtype=np.float64)

    def action_probs(self, context: np.ndarray, epsilon: float | np.ndarray = 0.0) -> np.ndarray:
        z = self.scores(context) / self.temperature
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        return explore(p / p.sum(axis=1, keepdims=True), epsilon)
