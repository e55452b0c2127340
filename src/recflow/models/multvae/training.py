"""Mult-VAE's training: the multinomial likelihood plus beta * KL, beta annealed linearly to
``multvae_beta_max`` over ``multvae_anneal_epochs`` (see :mod:`recflow.models.multvae`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from recflow.config import TrainConfig
from recflow.errors import TrainingError
from recflow.models.multvae.network import DECODER, ENCODER, build_multvae
from recflow.types import Features

if TYPE_CHECKING:
    import keras


def _check(features: Features, cfg: TrainConfig) -> None:
    if features.n_users == 0 or features.n_items < 2 or features.train_user_idx.size == 0:
        raise TrainingError(
            "Mult-VAE: expected users, at least 2 items and training interactions, found "
            f"{features.n_users} users, {features.n_items} items, "
            f"{features.train_user_idx.size} interactions; check the split and features stage"
        )
    # the settings' bounds are declared (and checked) in recflow.train_config.MultvaeSettings


def user_rows(features: Features) -> np.ndarray:
    """Dense [U, N] float32 0/1 matrix of distinct training pairs (repeats count once)."""
    x = np.zeros((features.n_users, features.n_items), np.float32)
    x[features.train_user_idx, features.train_item_idx] = 1.0
    return x


def beta_schedule(epoch: int, step: int, steps_per_epoch: int, cfg: TrainConfig) -> float:
    """KL weight at ``step`` (0-based) of ``epoch`` (0-based): linear to the cap, then flat."""
    if cfg.multvae.anneal_epochs <= 0:
        return float(cfg.multvae.beta_max)
    done = (epoch * steps_per_epoch + step) / (cfg.multvae.anneal_epochs * steps_per_epoch)
    return float(cfg.multvae.beta_max * min(1.0, done))


def _named_weights(model: keras.Model) -> dict[str, np.ndarray]:
    weights: dict[str, np.ndarray] = {}
    for name in (*ENCODER, *DECODER):
        kernel, bias = model.get_layer(name).get_weights()
        weights[f"{name}_kernel"] = np.asarray(kernel, np.float32)
        weights[f"{name}_bias"] = np.asarray(bias, np.float32)
    return weights


def train_multvae(
    features: Features,
    cfg: TrainConfig,
    progress: Callable[[str], None],
    *,
    snapshots: dict[int, dict[str, np.ndarray]] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, list[float]]]:
    """Fit Mult-VAE; returns (named weights for export, per-epoch history).

    ``snapshots``: its keys are 1-based epochs; the weights after each of those epochs are
    stored under them (to compare epoch counts from one training, e.g. on inner folds).
    """
    import keras

    _check(features, cfg)
    keras.utils.set_random_seed(cfg.seed)
    x = user_rows(features)
    x = x[x.sum(axis=1) > 0]  # users without training items carry no signal (and 0/0 norms)
    model, beta = build_multvae(features.n_items, cfg)
    batch = min(cfg.multvae.batch_size, x.shape[0])
    steps = -(-x.shape[0] // batch)

    class Anneal(keras.callbacks.Callback):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.epoch = 0

        def on_epoch_begin(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            self.epoch = epoch

        def on_train_batch_begin(
            self, batch_index: int, logs: dict[str, float] | None = None
        ) -> None:
            beta.assign(beta_schedule(self.epoch, batch_index, steps, cfg))

    class Report(keras.callbacks.Callback):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.t0 = time.perf_counter()
            self.history: dict[str, list[float]] = {"loss": [], "beta": [], "seconds": []}

        def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            loss = float((logs or {}).get("loss", float("nan")))
            if not np.isfinite(loss):
                raise TrainingError(
                    f"Mult-VAE: expected a finite loss, found {loss} at epoch {epoch + 1}; "
                    "lower multvae_learning_rate"
                )
            now = time.perf_counter()
            self.history["loss"].append(loss)
            self.history["beta"].append(float(keras.ops.convert_to_numpy(beta)))
            self.history["seconds"].append(now - self.t0)
            if snapshots is not None and epoch + 1 in snapshots:
                snapshots[epoch + 1] = _named_weights(self.model)
            self.t0 = time.perf_counter()
            # A line per epoch would flood the task log over 200 epochs; every 10th suffices.
            if (epoch + 1) % 10 == 0 or epoch + 1 == cfg.multvae.epochs:
                progress(f"multvae epoch {epoch + 1}/{cfg.multvae.epochs} loss={loss:.3f}")

    report = Report()
    model.fit(
        x,
        x,
        batch_size=batch,
        epochs=cfg.multvae.epochs,
        shuffle=True,
        verbose=0,
        callbacks=[Anneal(), report],
    )
    return _named_weights(model), report.history
