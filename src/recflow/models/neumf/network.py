"""NeuMF (He et al., WWW 2017): GMF and MLP branches fused, on implicit feedback (Keras 3).

    gmf  = p_u^G * q_i^G                          (element-wise)
    mlp  = MLP([p_u^M | q_i^M])                   (ReLU tower 2d -> d -> d/2)
    logit(u, i) = h^T [gmf | mlp] + b

Trained with binary cross-entropy on each distinct training pair against
``negatives_per_positive`` unseen items re-sampled every epoch (the paper's pointwise setup).

Export re-implements the forward pass with plain tf ops over the trained weights so that one
user is scored against the whole catalogue without repeating per-item work: the first MLP
layer splits into a user half and an item half ([B, 1, h] + [1, N, h]).
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

WEIGHTS_FILE = "neumf_weights.npz"
TOWER = ("mlp_0", "mlp_1", "mlp_2")


def tower_sizes(dim: int) -> tuple[int, ...]:
    return (2 * dim, dim, max(1, dim // 2))


def build_neumf(n_users: int, n_items: int, cfg: TrainConfig) -> Any:
    """A compiled Keras model (user_idx, item_idx) -> logit [B, 1]."""
    import keras

    from recflow.models.ranking_mlp import embedding_optimizer, steps_per_execution
    from recflow.models.sparse_adam import row_embedding

    d = cfg.embedding_dim
    user = keras.Input(shape=(), dtype="int32", name="user")
    item = keras.Input(shape=(), dtype="int32", name="item")

    def emb(n: int, name: str) -> Any:
        return row_embedding(
            n,
            d,
            embeddings_initializer=keras.initializers.RandomNormal(stddev=0.01),
            # L2 on the rows looked up in the batch, not on the whole table: a table-wide
            # penalty has a dense gradient and would rewrite every row at every step.
            activity_regularizer=keras.regularizers.L2(1e-6),
            name=name,
        )

    gmf = keras.layers.Multiply()([emb(n_users, "gmf_user")(user), emb(n_items, "gmf_item")(item)])
    h = keras.layers.Concatenate()([emb(n_users, "mlp_user")(user), emb(n_items, "mlp_item")(item)])
    for name, size in zip(TOWER, tower_sizes(d), strict=True):
        h = keras.layers.Dense(size, activation="relu", name=name)(h)
    logit = keras.layers.Dense(1, name="out")(keras.layers.Concatenate()([gmf, h]))
    model = keras.Model([user, item], logit, name="neumf")
    model.compile(
        optimizer=embedding_optimizer(cfg),
        steps_per_execution=steps_per_execution(cfg),
        loss=keras.losses.BinaryCrossentropy(from_logits=True),
    )
    return model


def train_neumf(
    features: Features, cfg: TrainConfig, progress: Callable[[str], None]
) -> tuple[dict[str, np.ndarray], dict[str, list[float]]]:
    """Fit NeuMF; returns (named weights for export, per-epoch history)."""
    import keras

    from recflow.models.training import (
        _check_inputs,
        fit_epoch,
        sample_negatives,
        unique_positives,
    )

    _check_inputs(features, cfg)
    keras.utils.set_random_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = build_neumf(features.n_users, features.n_items, cfg)
    pos_u, pos_i = unique_positives(features)
    history: dict[str, list[float]] = {"loss": [], "seconds": []}
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        neg_u, neg_i = sample_negatives(features, pos_u, cfg.negatives_per_positive, rng)
        users = np.concatenate([pos_u, neg_u])
        items = np.concatenate([pos_i, neg_i])
        labels = np.concatenate([np.ones(pos_u.size, np.float32), np.zeros(neg_u.size, np.float32)])
        order = rng.permutation(users.size)
        fit = fit_epoch(
            model, users[order], items[order], labels[order], cfg, progress,
            f"neumf epoch {epoch}/{cfg.epochs}",
        )  # fmt: skip
        loss = float(fit.history["loss"][-1])
        if not np.isfinite(loss):
            raise TrainingError(
                f"NeuMF: expected a finite loss, found {loss} at epoch {epoch}; lower learning_rate"
            )
        history["loss"].append(loss)
        history["seconds"].append(time.perf_counter() - t0)
        progress(f"neumf epoch {epoch}/{cfg.epochs} loss={loss:.4f} examples={users.size}")
    weights = {
        name: keras.ops.convert_to_numpy(model.get_layer(name).embeddings)
        for name in ("gmf_user", "gmf_item", "mlp_user", "mlp_item")
    }
    for name in (*TOWER, "out"):
        kernel, bias = model.get_layer(name).get_weights()
        weights[f"{name}_kernel"], weights[f"{name}_bias"] = kernel, bias
    return {k: np.asarray(v, np.float32) for k, v in weights.items()}, history


def score_numpy(weights: dict[str, np.ndarray], user_idx: np.ndarray) -> np.ndarray:
    """Logits [B, N] for known users, in numpy (the reference for the exported graph)."""
    d = weights["gmf_user"].shape[1]
    out_k = weights["out_kernel"][:, 0]
    gmf = (weights["gmf_user"][user_idx] * out_k[:d]) @ weights["gmf_item"].T
    w0 = weights["mlp_0_kernel"]
    h = (weights["mlp_user"][user_idx] @ w0[:d])[:, None, :] + (weights["mlp_item"] @ w0[d:])[None]
    h = np.maximum(h + weights["mlp_0_bias"], 0.0)
    for name in TOWER[1:]:
        h = np.maximum(h @ weights[f"{name}_kernel"] + weights[f"{name}_bias"], 0.0)
    return np.asarray(gmf + h @ out_k[d:] + weights["out_bias"][0], np.float32)


def _graph_scores(module: Any, idx: Any) -> Any:
    import tensorflow as tf

    safe = tf.maximum(idx, 0)
    d = tf.shape(module.gmf_user)[1]
    out_k = module.out_kernel[:, 0]
    gmf = tf.linalg.matmul(
        tf.gather(module.gmf_user, safe) * out_k[:d], module.gmf_item, transpose_b=True
    )
    w0 = module.mlp_0_kernel
    h = tf.linalg.matmul(tf.gather(module.mlp_user, safe), w0[:d])[:, None, :]
    h = tf.nn.relu(h + tf.linalg.matmul(module.mlp_item, w0[d:])[None] + module.mlp_0_bias)
    for name in TOWER[1:]:
        kernel, bias = getattr(module, f"{name}_kernel"), getattr(module, f"{name}_bias")
        h = tf.nn.relu(tf.tensordot(h, kernel, axes=[[2], [0]]) + bias)
    return gmf + tf.tensordot(h, out_k[d:], axes=[[2], [0]]) + module.out_bias[0]


def export_neumf(
    weights: dict[str, np.ndarray],
    features: Features,
    out_dir: Path,
    top_k: int,
    warmup: Sequence[str],
) -> Path:
    from recflow.models.score_module import save_score_module

    if weights["gmf_item"].shape[0] != features.n_items:
        raise ContractError(
            f"NeuMF export: expected item embeddings for {features.n_items} items, found "
            f"{weights['gmf_item'].shape[0]}; retrain on the same features"
        )
    return save_score_module(features, out_dir, top_k, warmup, _graph_scores, weights)


# -- zoo adapters -----------------------------------------------------------------------------
fit, export = array_stages(train_neumf, export_neumf, WEIGHTS_FILE, "NeuMF")
