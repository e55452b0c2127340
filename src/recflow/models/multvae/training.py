"""Mult-VAE (Liang et al., WWW 2018, "Variational Autoencoders for Collaborative Filtering").

Each user is their binary row x_u of distinct training items over the catalogue:

    h      = tanh(W_0 dropout(x_u / ||x_u||) + b_0)                encoder  N -> hidden
    mu, lv = W_1 h + b_1                                           -> 2 x latent
    z      = mu + exp(lv / 2) * eps   (training; mu when scoring)
    logits = W_3 tanh(W_2 z + b_2) + b_3                           decoder  latent -> hidden -> N
    loss   = -sum_i x_ui log softmax(logits)_i + beta * KL(q(z|x_u) || N(0, I))

beta rises linearly from 0 to ``multvae_beta_max`` over the first ``multvae_anneal_epochs``
epochs (the paper's KL annealing with a cap) and stays there. ``multvae_members`` networks
train side by side (an ensemble in one model: own initialisation, dropout and noise each).
Scores for serving are each member's decoder logits at z = mu, standardised per user and
averaged: softmax is monotone, so one member ranks by its multinomial probabilities. The
member count, KL cap and epochs are chosen on inner folds of the training part
(bench/PROTOCOL.md; the choice and its inner scores are in bench/results/quality.json).

Export re-implements the deterministic forward pass with tf ops over the trained weights and
builds x_u for a batch of users from the seen-item table the serving contract keeps anyway
(one scatter, as EASE does), through :func:`recflow.models.score_module.save_score_module`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recflow.config import TrainConfig
from recflow.errors import ContractError, TrainingError
from recflow.models.score_module import array_stages
from recflow.types import Features

WEIGHTS_FILE = "multvae_weights.npz"
# Layer names, also the keys (with _kernel / _bias) of the saved weights.
ENCODER = ("enc_hidden", "enc_out")
DECODER = ("dec_hidden", "dec_out")
# Added to a row's standard deviation when standardising (a constant row stays finite).
STD_EPSILON = 1e-6


def _check(features: Features, cfg: TrainConfig) -> None:
    if features.n_users == 0 or features.n_items < 2 or features.train_user_idx.size == 0:
        raise TrainingError(
            "Mult-VAE: expected users, at least 2 items and training interactions, found "
            f"{features.n_users} users, {features.n_items} items, "
            f"{features.train_user_idx.size} interactions; check the split and features stage"
        )
    # the settings' bounds are declared (and checked) in recflow.train_config.MultvaeSettings


def user_rows(features: Features) -> np.ndarray:
    """Dense [U, N] float32 0/1 matrix of distinct training pairs (repeats count once)."""
    x = np.zeros((features.n_users, features.n_items), np.float32)
    x[features.train_user_idx, features.train_item_idx] = 1.0
    return x


def beta_schedule(epoch: int, step: int, steps_per_epoch: int, cfg: TrainConfig) -> float:
    """KL weight at ``step`` (0-based) of ``epoch`` (0-based): linear to the cap, then flat."""
    if cfg.multvae.anneal_epochs <= 0:
        return float(cfg.multvae.beta_max)
    done = (epoch * steps_per_epoch + step) / (cfg.multvae.anneal_epochs * steps_per_epoch)
    return float(cfg.multvae.beta_max * min(1.0, done))


def build_multvae(n_items: int, cfg: TrainConfig) -> tuple[Any, Any]:
    """(compiled Keras model x [B, N] -> logits [B, M, N], the beta variable the KL term reads).

    The M = ``multvae_members`` networks share nothing but the batches: each has its own
    initialisation, dropout masks and latent noise, and the loss is the sum of their losses,
    so each member's gradients are those it would get alone. Side by side, one step does M
    networks' work in the same few large matrix products, which keeps both cores busy where
    one small network would leave them waiting on per-step overhead.
    """
    import keras
    from keras import ops

    latent, members = cfg.multvae.latent, cfg.multvae.members
    beta = keras.Variable(0.0, trainable=False, name="kl_beta")

    def stacked_glorot(layer_seed: int) -> Any:
        # Glorot over each member's own [in, out] (a 3-D shape would count M in the fans).
        def init(shape: Any, dtype: Any = None) -> Any:
            return ops.stack(
                [
                    keras.initializers.GlorotUniform(seed=cfg.seed + 1000 * m + layer_seed)(
                        tuple(shape[1:]), dtype=dtype
                    )
                    for m in range(members)
                ]
            )

        return init

    class MemberDense(keras.layers.Layer):  # type: ignore[misc]
        """y[:, m] = activation(x[:, m] @ W[m] + b[m]); kernel [M, in, out], bias [M, out]."""

        def __init__(self, units: int, activation: str | None, layer_seed: int, **kw: Any):
            super().__init__(**kw)
            self.units, self.activation = units, keras.activations.get(activation)
            self.layer_seed = layer_seed

        def build(self, input_shape: Any) -> None:
            fan_in = int(input_shape[-1])
            self.kernel = self.add_weight(
                shape=(members, fan_in, self.units),
                initializer=stacked_glorot(self.layer_seed),
                name="kernel",
            )
            self.bias = self.add_weight(
                shape=(members, self.units), initializer="zeros", name="bias"
            )

        def call(self, x: Any) -> Any:
            return self.activation(ops.einsum("bmi,mio->bmo", x, self.kernel) + self.bias)

    class Sample(keras.layers.Layer):  # type: ignore[misc]
        """z from (mu, log-variance); adds beta * KL as a loss; mu itself when not training."""

        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.seed = keras.random.SeedGenerator(cfg.seed)

        def call(self, stats: Any, training: bool | None = None) -> Any:
            mu, log_var = stats[..., :latent], stats[..., latent:]
            # KL of N(mu, exp(lv)) from N(0, I): summed over latent dims and members, mean
            # over the batch (the sum over members keeps each member's gradient its own).
            kl = 0.5 * ops.sum(ops.exp(log_var) + ops.square(mu) - 1.0 - log_var, axis=(1, 2))
            self.add_loss(beta * ops.mean(kl))
            if not training:
                return mu
            eps = keras.random.normal(ops.shape(mu), seed=self.seed)
            return mu + ops.exp(0.5 * log_var) * eps

    x = keras.Input(shape=(n_items,), name="x")
    h = keras.layers.UnitNormalization(axis=-1, name="l2_normalize")(x)
    h = keras.layers.Lambda(
        lambda t: ops.repeat(ops.expand_dims(t, 1), members, axis=1), name="members"
    )(h)
    # Dropout on [B, M, N] draws an independent mask per member.
    h = keras.layers.Dropout(cfg.multvae.dropout, seed=cfg.seed, name="input_dropout")(h)
    h = MemberDense(cfg.multvae.hidden, "tanh", 1, name=ENCODER[0])(h)
    stats = MemberDense(2 * latent, None, 2, name=ENCODER[1])(h)
    z = Sample(name="sample")(stats)
    h = MemberDense(cfg.multvae.hidden, "tanh", 3, name=DECODER[0])(z)
    logits = MemberDense(n_items, None, 4, name=DECODER[1])(h)
    model = keras.Model(x, logits, name="multvae")

    def multinomial_nll(y_true: Any, y_pred: Any) -> Any:
        per_member = -ops.sum(y_true[:, None, :] * ops.log_softmax(y_pred, axis=-1), axis=-1)
        return ops.sum(per_member, axis=-1)

    model.compile(optimizer=keras.optimizers.Adam(cfg.multvae.learning_rate), loss=multinomial_nll)
    return model, beta


def _named_weights(model: Any) -> dict[str, np.ndarray]:
    weights: dict[str, np.ndarray] = {}
    for name in (*ENCODER, *DECODER):
        kernel, bias = model.get_layer(name).get_weights()
        weights[f"{name}_kernel"] = np.asarray(kernel, np.float32)
        weights[f"{name}_bias"] = np.asarray(bias, np.float32)
    return weights


def train_multvae(
    features: Features,
    cfg: TrainConfig,
    progress: Callable[[str], None],
    *,
    snapshots: dict[int, dict[str, np.ndarray]] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, list[float]]]:
    """Fit Mult-VAE; returns (named weights for export, per-epoch history).

    ``snapshots``: its keys are 1-based epochs; the weights after each of those epochs are
    stored under them (to compare epoch counts from one training, e.g. on inner folds).
    """
    import keras

    _check(features, cfg)
    keras.utils.set_random_seed(cfg.seed)
    x = user_rows(features)
    x = x[x.sum(axis=1) > 0]  # users without training items carry no signal (and 0/0 norms)
    model, beta = build_multvae(features.n_items, cfg)
    batch = min(cfg.multvae.batch_size, x.shape[0])
    steps = -(-x.shape[0] // batch)

    class Anneal(keras.callbacks.Callback):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.epoch = 0

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.epoch = epoch

        def on_train_batch_begin(self, batch_index: int, logs: Any = None) -> None:
            beta.assign(beta_schedule(self.epoch, batch_index, steps, cfg))

    class Report(keras.callbacks.Callback):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.t0 = time.perf_counter()
            self.history: dict[str, list[float]] = {"loss": [], "beta": [], "seconds": []}

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            loss = float((logs or {}).get("loss", float("nan")))
            if not np.isfinite(loss):
                raise TrainingError(
                    f"Mult-VAE: expected a finite loss, found {loss} at epoch {epoch + 1}; "
                    "lower multvae_learning_rate"
                )
            now = time.perf_counter()
            self.history["loss"].append(loss)
            self.history["beta"].append(float(keras.ops.convert_to_numpy(beta)))
            self.history["seconds"].append(now - self.t0)
            if snapshots is not None and epoch + 1 in snapshots:
                snapshots[epoch + 1] = _named_weights(self.model)
            self.t0 = time.perf_counter()
            # A line per epoch would flood the task log over 200 epochs; every 10th suffices.
            if (epoch + 1) % 10 == 0 or epoch + 1 == cfg.multvae.epochs:
                progress(f"multvae epoch {epoch + 1}/{cfg.multvae.epochs} loss={loss:.3f}")

    report = Report()
    model.fit(
        x,
        x,
        batch_size=batch,
        epochs=cfg.multvae.epochs,
        shuffle=True,
        verbose=0,
        callbacks=[Anneal(), report],
    )
    return _named_weights(model), report.history


def standardise_rows(scores: np.ndarray) -> np.ndarray:
    """Each row to mean 0, standard deviation 1 (how member and blend scores are averaged)."""
    mean = scores.mean(axis=-1, keepdims=True)
    std = scores.std(axis=-1, keepdims=True)
    return np.asarray((scores - mean) / (std + STD_EPSILON), np.float32)


def member_logits(weights: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """Decoder logits [B, M, N] at z = mu for binary rows ``x`` [B, N] (numpy reference)."""
    latent = weights["dec_hidden_kernel"].shape[1]
    norm = np.sqrt((x * x).sum(axis=1, keepdims=True))
    h = x / np.maximum(norm, 1e-12)
    h = np.tanh(
        np.einsum("bi,mio->bmo", h, weights["enc_hidden_kernel"]) + weights["enc_hidden_bias"]
    )
    mu = (
        np.einsum("bmi,mio->bmo", h, weights["enc_out_kernel"][:, :, :latent])
        + weights["enc_out_bias"][:, :latent]
    )
    h = np.tanh(
        np.einsum("bmi,mio->bmo", mu, weights["dec_hidden_kernel"]) + weights["dec_hidden_bias"]
    )
    out = np.einsum("bmi,mio->bmo", h, weights["dec_out_kernel"]) + weights["dec_out_bias"]
    return np.asarray(out, np.float32)


def score_numpy(weights: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """Served scores [B, N]: the mean over members of each member's standardised logits.

    Softmax is monotone, so one member ranks exactly by its logits; standardising first
    keeps a member with larger logits from outvoting the others.
    """
    return np.asarray(standardise_rows(member_logits(weights, x)).mean(axis=1), np.float32)


def standardise_rows_tf(scores: Any) -> Any:
    import tensorflow as tf

    mean = tf.reduce_mean(scores, axis=-1, keepdims=True)
    std = tf.math.reduce_std(scores, axis=-1, keepdims=True)
    return (scores - mean) / (std + STD_EPSILON)


def graph_scores(module: Any, idx: Any) -> Any:
    """:func:`score_numpy` in tf ops over the module's weight variables (the served path)."""
    import tensorflow as tf

    from recflow.models.score_module import seen_rows_tf

    x = seen_rows_tf(module, idx, tf.shape(module.dec_out_bias)[1])
    latent = tf.shape(module.dec_hidden_kernel)[1]
    # x / max(||x||, 1e-12) exactly as Keras' UnitNormalization did in training.
    h = x / tf.maximum(tf.norm(x, axis=1, keepdims=True), 1e-12)
    h = tf.tanh(tf.einsum("bi,mio->bmo", h, module.enc_hidden_kernel) + module.enc_hidden_bias)
    mu = (
        tf.einsum("bmi,mio->bmo", h, module.enc_out_kernel[:, :, :latent])
        + module.enc_out_bias[:, :latent]
    )
    h = tf.tanh(tf.einsum("bmi,mio->bmo", mu, module.dec_hidden_kernel) + module.dec_hidden_bias)
    logits = tf.einsum("bmi,mio->bmo", h, module.dec_out_kernel) + module.dec_out_bias
    return tf.reduce_mean(standardise_rows_tf(logits), axis=1)


def export_multvae(
    weights: dict[str, np.ndarray],
    features: Features,
    out_dir: Path,
    top_k: int,
    warmup: Sequence[str],
) -> Path:
    from recflow.models.score_module import save_score_module

    n = weights["dec_out_bias"].shape[-1]
    if weights["dec_out_kernel"].ndim != 3 or weights["enc_hidden_kernel"].shape[1] != n:
        raise ContractError(
            "Mult-VAE export: expected member-stacked weights [M, in, out] (this version's "
            f"training), found kernel shape {weights['dec_out_kernel'].shape}; retrain"
        )
    if n != features.n_items:
        raise ContractError(
            f"Mult-VAE export: expected weights for {features.n_items} items, found {n}; "
            "retrain on the same features"
        )
    return save_score_module(features, out_dir, top_k, warmup, graph_scores, weights)


# -- zoo adapters -----------------------------------------------------------------------------
fit, export = array_stages(train_multvae, export_multvae, WEIGHTS_FILE, "Mult-VAE")
