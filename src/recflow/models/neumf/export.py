"""NeuMF's export: the forward pass re-implemented with plain tf ops over the trained weights,
so one user is scored against the whole catalogue without repeating per-item work (the first
MLP layer splits into a user half and an item half: [B, 1, h] + [1, N, h]); ``score_numpy``
is the numpy reference of the same scores."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from recflow.errors import ContractError
from recflow.models.neumf.network import TOWER
from recflow.types import Features

if TYPE_CHECKING:
    import tensorflow as tf


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


def _graph_scores(module: tf.Module, idx: tf.Tensor) -> tf.Tensor:
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
