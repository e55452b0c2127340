"""NeuMF's training: binary cross-entropy on each distinct training pair against
``negatives_per_positive`` unseen items re-sampled every epoch (the paper's pointwise setup),
through the pointwise training the ranking MLP uses (:mod:`recflow.models.pointwise`)."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from recflow.config import TrainConfig
from recflow.models.neumf.network import TOWER, build_neumf
from recflow.models.pointwise import (
    check_inputs,
    fit_shuffled_epoch,
    sample_negatives,
    seen_pairs,
    unique_positives,
)
from recflow.types import Features


def train_neumf(
    features: Features, cfg: TrainConfig, progress: Callable[[str], None]
) -> tuple[dict[str, np.ndarray], dict[str, list[float]]]:
    """Fit NeuMF; returns (named weights for export, per-epoch history)."""
    import keras

    check_inputs(features, cfg)
    keras.utils.set_random_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = build_neumf(features.n_users, features.n_items, cfg)
    seen = seen_pairs(features)
    pos_u, pos_i = unique_positives(features, seen)
    history: dict[str, list[float]] = {"loss": [], "seconds": []}
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        neg_u, neg_i = sample_negatives(features, pos_u, cfg.negatives_per_positive, rng, seen)
        users = np.concatenate([pos_u, neg_u])
        items = np.concatenate([pos_i, neg_i])
        labels = np.concatenate([np.ones(pos_u.size, np.float32), np.zeros(neg_u.size, np.float32)])
        loss = fit_shuffled_epoch(
            model, users, items, labels, cfg, rng, progress, f"neumf epoch {epoch}/{cfg.epochs}"
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
