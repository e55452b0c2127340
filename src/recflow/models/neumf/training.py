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
    epochs_of_rows,
    fit_rows,
    seen_pairs,
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
    history: dict[str, list[float]] = {"loss": [], "seconds": []}
    rows = epochs_of_rows(features, seen, cfg.negatives_per_positive, cfg.epochs, rng)
    t0 = time.perf_counter()
    for epoch, epoch_data in enumerate(rows, 1):
        loss = fit_rows(model, epoch_data, cfg, progress, f"neumf epoch {epoch}/{cfg.epochs}")
        history["loss"].append(loss)
        history["seconds"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        progress(f"neumf epoch {epoch}/{cfg.epochs} loss={loss:.4f} examples={epoch_data[0].size}")
    weights = {
        name: keras.ops.convert_to_numpy(model.get_layer(name).embeddings)
        for name in ("gmf_user", "gmf_item", "mlp_user", "mlp_item")
    }
    for name in (*TOWER, "out"):
        kernel, bias = model.get_layer(name).get_weights()
        weights[f"{name}_kernel"], weights[f"{name}_bias"] = kernel, bias
    return {k: np.asarray(v, np.float32) for k, v in weights.items()}, history
