"""The blend's served scores (numpy reference and tf graph, each part's graph reused from its
own module) and its SavedModel: B [N, N], the user-side score table [U, N] and the Mult-VAE
weights as variables; x_u comes from the seen-item table like every score export."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from recflow.errors import ContractError
from recflow.models.blend.training import VAE_PREFIX, WEIGHTS_KEY
from recflow.types import Features

if TYPE_CHECKING:
    import tensorflow as tf


def score_numpy(
    arrays: dict[str, np.ndarray],
    weights: tuple[float, float, float],
    rows: np.ndarray,
    x: np.ndarray,
) -> np.ndarray:
    """Blend scores [B, N] for user indices ``rows`` with binary rows ``x`` [B, N] (reference)."""
    from recflow.models.multvae.export import score_numpy as vae_scores
    from recflow.models.multvae.export import standardise_rows

    w_item, w_user, w_vae = weights
    total = np.zeros(x.shape, np.float32)
    if w_item > 0:
        total += w_item * standardise_rows(x @ arrays["ease_b"])
    if w_user > 0:
        total += w_user * standardise_rows(arrays["user_scores"][rows])
    if w_vae > 0:
        vae = {k[len(VAE_PREFIX) :]: v for k, v in arrays.items() if k.startswith(VAE_PREFIX)}
        total += w_vae * vae_scores(vae, x)
    return total


def _graph_scores(module: tf.Module, idx: tf.Tensor) -> tf.Tensor:
    import tensorflow as tf

    from recflow.models.multvae.export import graph_scores as vae_graph
    from recflow.models.multvae.export import standardise_rows_tf
    from recflow.models.score_module import seen_rows_times_tf

    n_items = tf.shape(module.popularity)[0]
    total = tf.zeros(tf.stack([tf.shape(idx)[0], n_items]), tf.float32)
    if hasattr(module, "ease_b"):
        total += module.w_item * standardise_rows_tf(seen_rows_times_tf(module, idx, module.ease_b))
    if hasattr(module, "user_scores"):
        own = tf.gather(module.user_scores, tf.maximum(idx, 0))
        total += module.w_user * standardise_rows_tf(own)
    if hasattr(module, "dec_out_kernel"):
        total += module.w_vae * vae_graph(module, idx)
    return total


def export_blend(
    arrays: dict[str, np.ndarray],
    weights: tuple[float, float, float],
    features: Features,
    out_dir: Path,
    top_k: int,
    warmup: Sequence[str],
) -> Path:
    from recflow.models.score_module import save_score_module

    n, u = features.n_items, features.n_users
    expected = {"ease_b": (n, n), "user_scores": (u, n)}
    for name, shape in expected.items():
        if name in arrays and arrays[name].shape != shape:
            raise ContractError(
                f"blend export: expected {name} of shape {shape} for these features, found "
                f"{arrays[name].shape}; retrain on the same features"
            )
    variables = {
        k[len(VAE_PREFIX) :] if k.startswith(VAE_PREFIX) else k: v for k, v in arrays.items()
    }
    names = ("w_item", "w_user", "w_vae")
    variables.update(
        {name: np.array(w, np.float32) for name, w in zip(names, weights, strict=True)}
    )
    return save_score_module(features, out_dir, top_k, warmup, _graph_scores, variables)


def export_saved(
    saved: dict[str, np.ndarray],
    features: Features,
    out_dir: Path,
    top_k: int,
    warmup: Sequence[str],
) -> Path:
    arrays = {k: v for k, v in saved.items() if k != WEIGHTS_KEY}
    w = [float(v) for v in saved[WEIGHTS_KEY]]
    return export_blend(arrays, (w[0], w[1], w[2]), features, out_dir, top_k, warmup)
