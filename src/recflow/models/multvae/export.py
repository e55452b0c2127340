"""Mult-VAE's served scores (numpy reference and tf graph over the trained weights) and its
SavedModel: x_u for a batch of users is built from the seen-item table the serving contract
keeps anyway (one scatter, as EASE does)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from recflow.errors import ContractError
from recflow.types import Features

if TYPE_CHECKING:
    import tensorflow as tf

# Added to a row's standard deviation when standardising (a constant row stays finite).
STD_EPSILON = 1e-6


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


def standardise_rows_tf(scores: tf.Tensor) -> tf.Tensor:
    import tensorflow as tf

    mean = tf.reduce_mean(scores, axis=-1, keepdims=True)
    std = tf.math.reduce_std(scores, axis=-1, keepdims=True)
    return (scores - mean) / (std + STD_EPSILON)


def graph_scores(module: tf.Module, idx: tf.Tensor) -> tf.Tensor:
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
