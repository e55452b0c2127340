"""Differentially private training of the ranking network (DP-SGD) and its privacy accountant.

DP-SGD (Abadi et al. 2016): at each step a batch is drawn by Poisson sampling (every training
row independently with probability ``q``), each row's gradient is clipped to L2 norm ``C``,
the clipped gradients are summed, Gaussian noise N(0, sigma^2 C^2) is added to every
coordinate of the sum, and the result is divided by the expected batch size ``q * n``.

The accountant is the Renyi-DP one of Mironov, Talwar & Zhang (2019), "Renyi Differential
Privacy of the Sampled Gaussian Mechanism", for integer orders (the closed binomial form that
TF Privacy's ``compute_rdp`` and dp_accounting use); RDP composes additively over steps and is
converted to (epsilon, delta) with Balle et al. (2020), Proposition 12 (dp_accounting's
``compute_epsilon``). dp-accounting itself cannot be installed beside Airflow here (it pins
attrs < 24), hence this small reimplementation, checked in tests/unit/test_privacy_dp.py.

What the epsilon covers, stated plainly: add/remove of one *training row* (one
(user, item, label) example of an epoch) under Poisson sampling. It is not user-level privacy
(a user contributes many rows), and the negative rows are re-drawn each epoch from each user's
unseen items, a data-dependent step that the accounting does not model. It also covers the
*trained* weights only: the ranking network's frozen profile tables (user genre preferences
and activity, item genres and popularity) are computed from the training data without noise
and ship inside the model, so the exported model as a whole is not differentially private.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from recflow.errors import ConfigError, TrainingError

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

    from recflow.config import TrainConfig

# Integer orders only: the binomial expansion below is exact for them. Dense at small orders
# (where large epsilons are decided), sparse above (small epsilons need large orders).
DEFAULT_ORDERS: tuple[int, ...] = (*range(2, 129), 160, 192, 256, 384, 512, 1024)


# ----------------------------------------------------------------------------- accountant


def _log_a_integer(q: float, sigma: float, alpha: int) -> float:
    """log A_alpha = log E_{z~N(0,s^2)}[((1-q) + q N(1,s^2)(z)/N(0,s^2)(z))^alpha].

    Binomial expansion: A = sum_i C(alpha,i) (1-q)^(alpha-i) q^i exp((i^2 - i) / (2 s^2)),
    summed in log space so that large orders and small sigmas do not overflow.
    """
    i = np.arange(alpha + 1, dtype=np.float64)
    log_binom = math.lgamma(alpha + 1) - np.array(
        [math.lgamma(k + 1) + math.lgamma(alpha - k + 1) for k in range(alpha + 1)]
    )
    if q >= 1.0:
        # Only the i = alpha term survives: the plain Gaussian mechanism.
        return float(alpha * (alpha - 1) / (2 * sigma**2))
    terms = (
        log_binom + i * math.log(q) + (alpha - i) * math.log1p(-q) + (i * i - i) / (2 * sigma**2)
    )
    top = float(np.max(terms))
    return top + math.log(float(np.sum(np.exp(terms - top))))


def rdp_sampled_gaussian(
    q: float, noise_multiplier: float, steps: int, orders: Sequence[int] = DEFAULT_ORDERS
) -> np.ndarray:
    """RDP epsilon at each order after ``steps`` Poisson-subsampled Gaussian steps.

    ``q`` is the sampling probability, ``noise_multiplier`` the noise std divided by the
    clipping norm (sensitivity). Orders must be integers >= 2.
    """
    if not 0.0 <= q <= 1.0:
        raise ConfigError(f"dp accountant: expected a sampling probability in [0, 1], found {q}")
    if noise_multiplier < 0 or steps < 0:
        raise ConfigError(
            "dp accountant: expected noise_multiplier >= 0 and steps >= 0, found "
            f"{noise_multiplier} and {steps}"
        )
    bad = [a for a in orders if int(a) != a or a < 2]
    if bad:
        raise ConfigError(f"dp accountant: expected integer orders >= 2, found {bad[:5]}")
    if q == 0.0 or steps == 0:
        return np.zeros(len(orders))
    if noise_multiplier == 0.0:
        return np.full(len(orders), np.inf)
    per_step = np.array(
        [_log_a_integer(q, noise_multiplier, int(a)) / (int(a) - 1) for a in orders]
    )
    return per_step * steps


def epsilon_from_rdp(
    orders: Sequence[float], rdp: Sequence[float] | np.ndarray, delta: float
) -> tuple[float, float]:
    """(epsilon, best order) for ``delta`` from RDP values, Balle et al. 2020 Prop. 12.

    Tighter than the classic eps = rdp + log(1/delta)/(alpha - 1) (Mironov 2017, Prop. 3)
    by log(1 - 1/alpha) - log(alpha)/(alpha - 1) at every order.
    """
    if not 0.0 < delta < 1.0:
        raise ConfigError(f"dp accountant: expected delta in (0, 1), found {delta}")
    if len(orders) != len(rdp) or len(orders) == 0:
        raise ConfigError("dp accountant: expected as many RDP values as orders (at least one)")
    best, best_order = math.inf, float(orders[0])
    for a, r in zip(orders, rdp, strict=True):
        if a <= 1 or r < 0:
            raise ConfigError(f"dp accountant: expected orders > 1 and rdp >= 0, found {a}, {r}")
        if math.isinf(r):
            continue
        if delta**2 + math.expm1(-r) >= 0:
            # KL bound: delta <= sqrt(1 - exp(-rdp)) already holds at epsilon 0.
            return 0.0, float(a)
        eps = r + math.log1p(-1.0 / a) - math.log(delta * a) / (a - 1)
        if eps < best:
            best, best_order = eps, float(a)
    return max(0.0, float(best)), best_order


def dp_sgd_epsilon(
    q: float,
    noise_multiplier: float,
    steps: int,
    delta: float,
    orders: Sequence[int] = DEFAULT_ORDERS,
) -> float:
    """Epsilon of DP-SGD after ``steps`` steps at sampling rate ``q`` (inf without noise)."""
    return epsilon_from_rdp(
        orders, rdp_sampled_gaussian(q, noise_multiplier, steps, orders), delta
    )[0]


# ----------------------------------------------------------------------------- DP-SGD step


@dataclass(frozen=True)
class DPSettings:
    """The DP-SGD knobs: clipping norm C, noise multiplier sigma, target delta."""

    l2_clip: float
    noise_multiplier: float
    delta: float

    def __post_init__(self) -> None:
        if not self.l2_clip > 0:
            raise ConfigError(f"dp_l2_clip: expected > 0, found {self.l2_clip}")
        if not self.noise_multiplier >= 0:
            raise ConfigError(f"dp_noise_multiplier: expected >= 0, found {self.noise_multiplier}")
        if not 0.0 < self.delta < 1.0:
            raise ConfigError(f"dp_delta: expected in (0, 1), found {self.delta}")


class DPStep:
    """A compiled DP-SGD step for ``model``: ``step(users, items, labels, seed) -> mean loss``.

    ``model`` is a compiled (user_idx, item_idx) -> [B, 1] probability network whose trainable
    variables are either looked up once per example (embedding tables) or dense. Per-example
    gradients come from two sources: an embedding table's gradient of the summed loss holds
    one row per lookup (``IndexedSlices``, not merged by index), and that row only depends on
    its own example, so it *is* the example's gradient; dense variables get per-example
    gradients from ``tf.vectorized_map`` over one-example gradients. This avoids
    materialising [B, rows, dim] per-example gradients of the tables. ``seed`` is a [2] int
    tensor for the stateless noise. The update goes through ``model.optimizer`` (Adam for the
    ranking network): post-processing of the noisy gradient, so it costs no privacy.
    """

    def __init__(self, model: keras.Model, settings: DPSettings, expected_batch: float) -> None:
        import keras
        import tensorflow as tf

        self.settings = settings
        variables = list(model.trainable_variables)
        optimizer = model.optimizer
        optimizer.build(variables)
        clip = tf.constant(settings.l2_clip, tf.float32)
        noise_std = tf.constant(settings.noise_multiplier * settings.l2_clip, tf.float32)
        denom = tf.constant(float(expected_batch), tf.float32)

        def example_losses(users: tf.Tensor, items: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
            probs = model([users, items], training=True)
            return keras.losses.binary_crossentropy(labels[:, None], probs)

        def apply_noisy(grads: list[tf.Tensor], seed: tf.Tensor) -> None:
            noisy = []
            for n, (g, v) in enumerate(zip(grads, variables, strict=True)):
                # Noise on every coordinate, touched rows or not: a table row left noiseless
                # would reveal whether any example of that user/item was in the batch.
                noise = tf.random.stateless_normal(v.shape, seed=seed + tf.constant([0, n]))
                noisy.append((g + noise_std * noise) / denom)
            optimizer.apply_gradients(zip(noisy, variables, strict=True))

        @tf.function(
            input_signature=[
                tf.TensorSpec([None], tf.int32),
                tf.TensorSpec([None], tf.int32),
                tf.TensorSpec([None], tf.float32),
                tf.TensorSpec([2], tf.int32),
            ],
            reduce_retracing=True,
        )
        def step(
            users: tf.Tensor, items: tf.Tensor, labels: tf.Tensor, seed: tf.Tensor
        ) -> tf.Tensor:
            batch = tf.shape(users)[0]
            with tf.GradientTape() as tape:
                losses = example_losses(users, items, labels)
                total = tf.reduce_sum(losses)
            summed = tape.gradient(total, variables)
            sparse = [k for k, g in enumerate(summed) if isinstance(g, tf.IndexedSlices)]
            dense = [k for k, g in enumerate(summed) if not isinstance(g, tf.IndexedSlices)]
            dense_vars = [variables[k] for k in dense]

            def one_example(args: tuple[tf.Tensor, tf.Tensor, tf.Tensor]) -> list[tf.Tensor]:
                user, item, label = args
                with tf.GradientTape() as t:
                    loss = tf.reduce_sum(example_losses(user[None], item[None], label[None]))
                return t.gradient(
                    loss, dense_vars, unconnected_gradients=tf.UnconnectedGradients.ZERO
                )

            # pfor-vectorised per-example gradients ([B, *shape] each); measured ~25x faster
            # here than tape.jacobian of the loss vector for the same result.
            per_example = tf.vectorized_map(one_example, (users, items, labels)) if dense else []
            sq_norm = tf.zeros([batch], tf.float32)
            for k in sparse:
                tf.debugging.assert_equal(
                    tf.shape(summed[k].indices)[0],
                    batch,
                    message=f"DP-SGD: {variables[k].path} must be looked up once per example",
                )
                sq_norm += tf.reduce_sum(tf.square(summed[k].values), axis=1)
            for j in per_example:
                sq_norm += tf.reduce_sum(tf.square(tf.reshape(j, [batch, -1])), axis=1)
            # min(1, C / ||g_b||) without dividing by a zero norm.
            scale = clip / tf.maximum(tf.sqrt(sq_norm), clip)
            grads: list[tf.Tensor] = [None] * len(variables)
            for k in sparse:
                grads[k] = tf.math.unsorted_segment_sum(
                    summed[k].values * scale[:, None],
                    summed[k].indices,
                    num_segments=variables[k].shape[0],
                )
            for k, j in zip(dense, per_example, strict=True):
                grads[k] = tf.tensordot(scale, j, axes=1)
            apply_noisy(grads, seed)
            return tf.reduce_mean(losses)

        @tf.function(input_signature=[tf.TensorSpec([2], tf.int32)])
        def noise_only(seed: tf.Tensor) -> None:
            # An empty Poisson batch still takes its (pure-noise) step: the accountant counts it.
            apply_noisy([tf.zeros(v.shape, tf.float32) for v in variables], seed)

        self._step = step
        self._noise_only = noise_only

    def __call__(
        self, users: tf.Tensor, items: tf.Tensor, labels: tf.Tensor, seed: tf.Tensor
    ) -> float | None:
        """Mean loss of the batch, or None for an empty batch."""
        if int(users.shape[0]) == 0:
            self._noise_only(seed)
            return None
        return float(self._step(users, items, labels, seed))


def poisson_batches(n: int, q: float, steps: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """``steps`` batches of row indices, each row in each batch independently with prob. ``q``.

    The accountant's sampling model; fixed-size shuffled batches would not match it. Drawn as
    a Binomial(n, q) size and then a uniform subset of that size, which is the same
    distribution as n coin flips at a fraction of the cost for large n.
    """
    for _ in range(steps):
        size = int(rng.binomial(n, q))
        yield np.sort(rng.choice(n, size=size, replace=False))


def dp_epoch(
    step: DPStep,
    users: np.ndarray,
    items: np.ndarray,
    labels: np.ndarray,
    q: float,
    steps: int,
    rng: np.random.Generator,
) -> tuple[float, float]:
    """Run ``steps`` DP-SGD steps over Poisson batches; returns (mean loss, seconds)."""
    import tensorflow as tf

    t0 = time.perf_counter()
    losses: list[float] = []
    weights: list[int] = []
    for idx in poisson_batches(users.size, q, steps, rng):
        seed = tf.constant(rng.integers(0, 2**31 - 1, size=2), tf.int32)
        loss = step(
            tf.constant(users[idx], tf.int32),
            tf.constant(items[idx], tf.int32),
            tf.constant(labels[idx], tf.float32),
            seed,
        )
        if loss is not None:
            losses.append(loss)
            weights.append(int(idx.size))
    if not losses:
        raise TrainingError("DP-SGD: every Poisson batch of the epoch was empty; raise batch_size")
    mean = float(np.average(losses, weights=weights))
    return mean, time.perf_counter() - t0


@dataclass
class DPRun:
    """DP-SGD state of one training run of the ranking network (``TrainConfig.dp.enabled``).

    Rows per epoch (positives plus their negatives) are the privacy unit; each step samples
    them with probability q = batch_size / rows (Poisson), and an epoch is rows / batch_size
    steps, so the expected work per epoch matches non-private training.
    """

    settings: DPSettings
    q: float
    steps_per_epoch: int
    step: DPStep | None = None

    @classmethod
    def start(
        cls,
        cfg: TrainConfig,
        strategy: tf.distribute.Strategy,
        positives: int,
        progress: Callable[[str], None],
    ) -> DPRun:
        if strategy.num_replicas_in_sync > 1:
            # Per-example clipping needs every example's gradient on one replica.
            raise TrainingError(
                "training: DP-SGD runs on one device; set distribution 'default' or turn "
                "dp_enabled off"
            )
        rows = positives * (1 + cfg.negatives_per_positive)
        q = min(1.0, cfg.batch_size / rows)
        delta = cfg.dp.delta if cfg.dp.delta is not None else 1.0 / rows
        settings = DPSettings(cfg.dp.l2_clip, cfg.dp.noise_multiplier, delta)
        run = cls(settings=settings, q=q, steps_per_epoch=max(1, round(rows / cfg.batch_size)))
        progress(
            f"DP-SGD: clip {settings.l2_clip}, noise multiplier {settings.noise_multiplier}, "
            f"q={q:.5f}, {run.steps_per_epoch} steps/epoch, delta={delta:.3g}"
        )
        return run

    def epoch(
        self,
        model: keras.Model,
        users: np.ndarray,
        items: np.ndarray,
        labels: np.ndarray,
        rng: np.random.Generator,
    ) -> tuple[float, float]:
        if self.step is None:
            self.step = DPStep(model, self.settings, self.q * users.size)
        return dp_epoch(self.step, users, items, labels, self.q, self.steps_per_epoch, rng)

    def epsilon(self, epochs: int) -> float:
        return dp_sgd_epsilon(
            self.q,
            self.settings.noise_multiplier,
            epochs * self.steps_per_epoch,
            self.settings.delta,
        )
