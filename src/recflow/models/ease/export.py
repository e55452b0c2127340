"""EASE's export: serving scores x_u B inside the score module, B a dense [N, N] variable and
x_u the user's seen items from the export's seen-item table, as a sparse row (the cost of a
user's scores grows with the items seen, not with N squared)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from recflow.errors import ContractError
from recflow.types import Features

if TYPE_CHECKING:
    import tensorflow as tf


def ease_scores_tf(module: tf.Module, idx: tf.Tensor) -> tf.Tensor:
    from recflow.models.score_module import seen_rows_times_tf

    return seen_rows_times_tf(module, idx, module.ease_b)


def export_ease(
    b: np.ndarray, features: Features, out_dir: Path, top_k: int, warmup: Sequence[str]
) -> Path:
    if b.shape != (features.n_items, features.n_items):
        raise ContractError(
            f"EASE export: expected B of shape ({features.n_items}, {features.n_items}) for this "
            f"catalogue, found {b.shape}; retrain on the same features"
        )
    from recflow.models.score_module import save_score_module

    return save_score_module(
        features, out_dir, top_k, warmup, ease_scores_tf, {"ease_b": np.asarray(b, np.float32)}
    )
