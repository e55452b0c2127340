"""The blend's training: item EASE, user-side EASE and the Mult-VAE ensemble, each part with a
weight (``blend_*`` settings); a part too large for the data set is dropped and said (see
:mod:`recflow.models.blend`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from recflow.config import TrainConfig
from recflow.errors import TrainingError
from recflow.types import Features

VAE_PREFIX = "vae_"
WEIGHTS_KEY = "blend_weights"


def blend_components(
    features: Features, cfg: TrainConfig, progress: Callable[[str], None]
) -> dict[str, np.ndarray]:
    """The arrays export needs; a component with weight 0 is not trained."""
    from recflow.models.ease.closed_form import fit_ease, user_side_scores
    from recflow.models.multvae.training import train_multvae

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


def drop_unscalable_parts(features: Features, cfg: TrainConfig) -> tuple[TrainConfig, list[str]]:
    """``cfg`` with the weight of each part too large for this data set to 0, and why.

    User-side EASE above MAX_USER_SIDE_USERS users and item EASE above MAX_ITEM_SIDE_ITEMS
    items are dropped (their n x n inverses would not fit); the rest of the blend stays.
    """
    from recflow.config import train_config
    from recflow.models.ease.closed_form import check_item_side, check_user_side

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
