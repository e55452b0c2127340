"""A blend of three collaborative models whose errors differ, served as one SavedModel.

    score_u = w_item * std(x_u B) + w_user * std((C^T X)_u) + w_vae * vae_u

    x_u B       item EASE (Steck 2019), ``blend_item_lambda``
    (C^T X)_u   EASE on the transposed matrix: users like u, ``blend_user_lambda``
    vae_u       the Mult-VAE ensemble's score (already standardised, ``multvae_*`` settings)
    std(.)      each user's row to mean 0, standard deviation 1, so weights compare

Why a blend: the three parts make different errors. Whether a blend (and which parts) beats
its single parts is decided on inner folds of the training part (bench/PROTOCOL.md), never on
the test split; bench/results/quality.md has the outcome and the history of this model
(it was first built after looking at test-split numbers; that round is recorded there).

Export stores B [N, N], the user-side score table [U, N] (C^T X depends only on training
data, so it is computed once at fit time) and the Mult-VAE weights; serving builds x_u from
the seen-item table like every score export.
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

BLEND_FILE = "blend.npz"
VAE_PREFIX = "vae_"
WEIGHTS_KEY = "blend_weights"


def blend_components(
    features: Features, cfg: TrainConfig, progress: Callable[[str], None]
) -> dict[str, np.ndarray]:
    """The arrays export needs; a component with weight 0 is not trained."""
    from recflow.models.ease import fit_ease, user_side_scores
    from recflow.models.multvae import train_multvae

    # weights >= 0 and not all 0: declared in recflow.train_config.BlendSettings
    arrays: dict[str, np.ndarray] = {}
    t0 = time.perf_counter()
    if cfg.blend.item_weight > 0:
        arrays["ease_b"] = fit_ease(features, cfg.blend.item_lambda)
    if cfg.blend.user_weight > 0:
        arrays["user_scores"] = user_side_scores(features, cfg.blend.user_lambda)
    progress(f"blend: EASE item and user sides in {time.perf_counter() - t0:.1f} s")
    if cfg.blend.vae_weight > 0:
        weights, _ = train_multvae(features, cfg, progress)
        arrays.update({VAE_PREFIX + k: v for k, v in weights.items()})
    return arrays


def score_numpy(
    arrays: dict[str, np.ndarray], weights: tuple[float, float, float], rows: np.ndarray, x: Any
) -> np.ndarray:
    """Blend scores [B, N] for user indices ``rows`` with binary rows ``x`` [B, N] (reference)."""
    from recflow.models.multvae import score_numpy as vae_scores
    from recflow.models.multvae import standardise_rows

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


def _graph_scores(module: Any, idx: Any) -> Any:
    import tensorflow as tf

    from recflow.models.multvae import graph_scores as vae_graph
    from recflow.models.multvae import standardise_rows_tf
    from recflow.models.score_module import seen_rows_tf

    n_items = tf.shape(module.popularity)[0]
    x = seen_rows_tf(module, idx, n_items)
    total = tf.zeros(tf.shape(x), tf.float32)
    if hasattr(module, "ease_b"):
        total += module.w_item * standardise_rows_tf(tf.linalg.matmul(x, module.ease_b))
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


def drop_unscalable_parts(features: Features, cfg: TrainConfig) -> tuple[TrainConfig, list[str]]:
    """``cfg`` with the weight of each part too large for this data set to 0, and why.

    User-side EASE above MAX_USER_SIDE_USERS users and item EASE above MAX_ITEM_SIDE_ITEMS
    items are dropped (their n x n inverses would not fit); the rest of the blend stays.
    """
    from recflow.config import train_config
    from recflow.models.ease import check_item_side, check_user_side

    notes: list[str] = []
    weights = {
        "blend_user_weight": cfg.blend.user_weight,
        "blend_item_weight": cfg.blend.item_weight,
        "blend_vae_weight": cfg.blend.vae_weight,
    }
    changes: dict[str, float] = {}
    for weight, check, size in (
        ("blend_user_weight", check_user_side, features.n_users),
        ("blend_item_weight", check_item_side, features.n_items),
    ):
        if weights[weight] <= 0:
            continue
        try:
            check(size)
        except TrainingError as exc:
            changes[weight] = 0.0
            notes.append(f"blend: dropped a part ({weight} -> 0): {exc}")
    if not changes:
        return cfg, notes
    if sum({**weights, **changes}.values()) <= 0:
        raise TrainingError(
            "blend: every part with a weight is too large for this data set ("
            + "; ".join(notes)
            + "); give blend_vae_weight > 0 or use model=ranking_mlp or sasrec"
        )
    return train_config(cfg, **changes), notes


def train_blend(
    features: Features, cfg: TrainConfig, progress: Callable[[str], None]
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The components plus the weights, as the train stage's array file holds them.

    A part dropped for scale (``drop_unscalable_parts``) is named in the history's
    ``notes``, which the train stage records in MLflow and the model card.
    """
    cfg, notes = drop_unscalable_parts(features, cfg)
    for note in notes:
        progress(note)
    arrays = blend_components(features, cfg, progress)
    weights = np.array([cfg.blend.item_weight, cfg.blend.user_weight, cfg.blend.vae_weight])
    return {**arrays, WEIGHTS_KEY: weights}, ({"notes": notes} if notes else {})


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


# -- zoo adapters -----------------------------------------------------------------------------
fit, export = array_stages(train_blend, export_saved, BLEND_FILE, "blend")
