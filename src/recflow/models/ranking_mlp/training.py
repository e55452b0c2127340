"""Training the ranking network on positives plus freshly sampled negatives each epoch.

The rows (distinct positives, sampled negatives) and the streamed Keras epoch are the
pointwise training NeuMF shares (:mod:`recflow.models.pointwise`); DP-SGD epochs, when
``dp_enabled``, come from :mod:`recflow.models.ranking_mlp.dp`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from recflow.config import TrainConfig
from recflow.errors import TrainingError
from recflow.models.pointwise import (
    check_inputs,
    epochs_of_rows,
    fit_rows,
    seen_pairs,
)
from recflow.types import Features

if TYPE_CHECKING:
    import keras
    import tensorflow as tf


@dataclass(frozen=True)
class TrainedModel:
    """A trained Keras ranking model with its per-epoch history (``history["loss"]``)."""

    model: keras.Model  # imported for type checking only: keras stays out of import time
    history: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0


def distribution_strategy(name: str) -> tf.distribute.Strategy:
    """The tf.distribute strategy called ``name`` ("default", "mirrored", "multi_worker").

    "mirrored" replicates the model on every local GPU (the CPU when there is none) and splits
    each batch between them; "multi_worker" does the same across the hosts listed in the
    ``TF_CONFIG`` environment variable (without it, this process is a one-worker cluster). Both
    keep ``batch_size`` as the *global* batch: per-replica batches shrink as devices are added.
    """
    import tensorflow as tf

    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        # Must be created before this process runs any other TensorFlow op (collective ops
        # are configured at start-up); an Airflow task runs in a fresh process, so it is.
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise TrainingError(
        f"training: expected distribution 'default', 'mirrored' or 'multi_worker', found "
        f"{name!r}; set TrainConfig.distribution (env RECFLOW_TRAIN_DISTRIBUTION)"
    )


def _check_loss(loss: float, epoch: int) -> None:
    if not np.isfinite(loss):
        raise TrainingError(
            f"training: expected a finite loss, found {loss} at epoch {epoch}; lower learning_rate"
        )


def train_ranking_mlp(
    features: Features,
    cfg: TrainConfig,
    *,
    progress: Callable[[str], None] = print,
    strategy: tf.distribute.Strategy | None = None,
) -> TrainedModel:
    """Fit the ranking network; one ``progress`` line per epoch so task logs show progress.

    Deterministic given ``cfg.seed``: Keras' weight init and our negative draws and shuffles
    are all seeded (CPU float reductions may still differ in the last bits).

    ``strategy`` (a tf.distribute.Strategy) overrides ``cfg.distribution``; the model and its
    optimizer state are created in the strategy's scope, which is all Keras 3 needs to fit
    data-parallel.
    """
    import keras

    from recflow.models.ranking_mlp.dp import DPRun
    from recflow.models.ranking_mlp.network import build_ranking_mlp

    check_inputs(features, cfg)
    if strategy is None:
        strategy = distribution_strategy(getattr(cfg, "distribution", "default"))
    keras.utils.set_random_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    with strategy.scope():
        model = build_ranking_mlp(features, cfg)
    if strategy.num_replicas_in_sync > 1:
        progress(
            f"training on {strategy.num_replicas_in_sync} replicas "
            f"({type(strategy).__name__}); global batch {cfg.batch_size}"
        )
    seen = seen_pairs(features)
    history: dict[str, list[float]] = {"loss": [], "seconds": []}
    dp = DPRun.start(cfg, strategy, seen.keys.size, progress) if cfg.dp.enabled else None
    # DP-SGD samples its own batches from rng: unshuffled rows, drawn in turn with its draws.
    rows = epochs_of_rows(
        features,
        seen,
        cfg.negatives_per_positive,
        cfg.epochs,
        rng,
        shuffle=dp is None,
        prefetch=dp is None,
    )
    started = t0 = time.perf_counter()
    for epoch, (users, items, labels) in enumerate(rows, 1):
        if dp is not None:
            loss, seconds = dp.epoch(model, users, items, labels, rng)
            _check_loss(loss, epoch)
            history["loss"].append(loss)
            history["seconds"].append(seconds)
            history.setdefault("dp_epsilon", []).append(dp.epsilon(epoch))
            progress(
                f"epoch {epoch}/{cfg.epochs} loss={loss:.4f} examples={users.size} "
                f"seconds={seconds:.1f} dp_epsilon={history['dp_epsilon'][-1]:.3f}"
            )
            continue
        loss = fit_rows(model, (users, items, labels), cfg, progress, f"epoch {epoch}/{cfg.epochs}")
        seconds = time.perf_counter() - t0  # with any wait for the rows
        t0 = time.perf_counter()
        history["loss"].append(loss)
        history["seconds"].append(seconds)
        progress(
            f"epoch {epoch}/{cfg.epochs} loss={loss:.4f} examples={users.size} "
            f"seconds={seconds:.1f}"
        )
    return TrainedModel(model=model, history=history, seconds=time.perf_counter() - started)


def score_users(trained: TrainedModel, features: Features, user_idx: np.ndarray) -> np.ndarray:
    """Scores [B, N] float32 of the given user indices against the whole catalogue."""
    import keras

    from recflow.models.ranking_mlp.network import score_matrix, users_per_batch

    user_idx = np.asarray(user_idx, dtype=np.int32)
    out = np.empty((user_idx.size, features.n_items), dtype=np.float32)
    step = users_per_batch(features.n_items)
    for start in range(0, user_idx.size, step):
        chunk = user_idx[start : start + step]
        scores = score_matrix(trained.model, chunk, features.n_items)
        out[start : start + chunk.size] = keras.ops.convert_to_numpy(scores)
    return out


def load_trained_model(path: Path) -> keras.Model:
    """The ranking network a train stage saved (``model.keras``).

    It was compiled with LazyAdam and built from RowEmbedding layers: both are registered
    with Keras first, so this works in a fresh process (an export task).
    """
    import keras

    from recflow.models.sparse_adam import register

    register()
    return keras.models.load_model(path)
