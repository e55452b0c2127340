"""Training the ranking network on positives plus freshly sampled negatives each epoch."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from recflow.config import TrainConfig
from recflow.errors import TrainingError
from recflow.types import Features

# Rejection rounds before switching to exact per-user draws; each round re-draws only the
# draws that hit seen items, so for users who have seen < 50 % of items 8 rounds leave ~0.4 %.
_MAX_REDRAW_ROUNDS = 8


@dataclass(frozen=True)
class TrainedModel:
    """A trained Keras ranking model with its per-epoch history (``history["loss"]``)."""

    model: Any  # keras.Model; Any keeps keras out of import time
    history: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0


def unique_positives(features: Features) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (user, item) training pairs; repeated events of a pair count once."""
    keys = np.unique(
        features.train_user_idx.astype(np.int64) * features.n_items
        + features.train_item_idx.astype(np.int64)
    )
    return (keys // features.n_items).astype(np.int32), (keys % features.n_items).astype(np.int32)


def sample_negatives(
    features: Features, users: np.ndarray, per_user_row: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """For each entry of ``users`` draw ``per_user_row`` items the user has not seen in train.

    Uniform over each user's unseen items (rejection sampling, vectorised). Rows of users who
    have seen the whole catalogue cannot have negatives and are dropped.
    """
    n = features.n_items
    seen = np.unique(
        features.train_user_idx.astype(np.int64) * n + features.train_item_idx.astype(np.int64)
    )
    seen_count = np.bincount((seen // n).astype(np.int64), minlength=features.n_users)
    users = users[seen_count[users] < n]
    neg_users = np.repeat(users.astype(np.int32), per_user_row)
    neg_items = rng.integers(0, n, size=neg_users.shape[0], dtype=np.int32)

    def hits_seen(u: np.ndarray, i: np.ndarray) -> np.ndarray:
        keys = u.astype(np.int64) * n + i
        pos = np.minimum(np.searchsorted(seen, keys), seen.shape[0] - 1)
        return seen[pos] == keys

    bad = np.flatnonzero(hits_seen(neg_users, neg_items))
    for _ in range(_MAX_REDRAW_ROUNDS):
        if bad.size == 0:
            break
        neg_items[bad] = rng.integers(0, n, size=bad.size, dtype=np.int32)
        bad = bad[hits_seen(neg_users[bad], neg_items[bad])]
    # Users who have seen most of the catalogue defeat rejection: draw theirs exactly from
    # their unseen items (few users reach this, so a loop over them is cheap).
    for user in np.unique(neg_users[bad]).astype(np.int64):
        rows = bad[neg_users[bad] == user]
        lo, hi = np.searchsorted(seen, [user * n, (user + 1) * n])
        own = seen[lo:hi] - user * n
        unseen = np.setdiff1d(np.arange(n, dtype=np.int64), own)
        neg_items[rows] = rng.choice(unseen, size=rows.size).astype(np.int32)
    return neg_users, neg_items


def _check_inputs(features: Features, cfg: TrainConfig) -> None:
    if features.n_users == 0 or features.n_items < 2 or features.train_user_idx.size == 0:
        raise TrainingError(
            "training: expected users, at least 2 items and training interactions, found "
            f"{features.n_users} users, {features.n_items} items, "
            f"{features.train_user_idx.size} interactions; check the split and features stage"
        )
    # epochs, batch_size and negatives have declared bounds (recflow.train_config.TrainConfig)


def distribution_strategy(name: str) -> Any:
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


@dataclass
class _DPRun:
    """DP-SGD state of one training run (``TrainConfig.dp.enabled``; see recflow.privacy_dp).

    Rows per epoch (positives plus their negatives) are the privacy unit; each step samples
    them with probability q = batch_size / rows (Poisson), and an epoch is rows / batch_size
    steps, so the expected work per epoch matches non-private training.
    """

    settings: Any  # recflow.privacy_dp.DPSettings
    q: float
    steps_per_epoch: int
    step: Any = None

    @classmethod
    def start(
        cls, cfg: TrainConfig, strategy: Any, positives: int, progress: Callable[[str], None]
    ) -> _DPRun:
        from recflow.privacy_dp import DPSettings

        if strategy.num_replicas_in_sync > 1:
            # Per-example clipping needs every example's gradient on one replica.
            raise TrainingError(
                "training: DP-SGD runs on one device; set distribution 'default' or turn "
                "dp_enabled off"
            )
        rows = positives * (1 + cfg.negatives_per_positive)
        q = min(1.0, cfg.batch_size / rows)
        delta = cfg.dp.delta if cfg.dp.delta is not None else 1.0 / rows
        settings = DPSettings(cfg.dp.l2_clip, cfg.dp.noise_multiplier, delta)
        run = cls(settings=settings, q=q, steps_per_epoch=max(1, round(rows / cfg.batch_size)))
        progress(
            f"DP-SGD: clip {settings.l2_clip}, noise multiplier {settings.noise_multiplier}, "
            f"q={q:.5f}, {run.steps_per_epoch} steps/epoch, delta={delta:.3g}"
        )
        return run

    def epoch(
        self,
        model: Any,
        users: np.ndarray,
        items: np.ndarray,
        labels: np.ndarray,
        rng: np.random.Generator,
    ) -> tuple[float, float]:
        from recflow.privacy_dp import DPStep, dp_epoch

        if self.step is None:
            self.step = DPStep(model, self.settings, self.q * users.size)
        return dp_epoch(self.step, users, items, labels, self.q, self.steps_per_epoch, rng)

    def epsilon(self, epochs: int) -> float:
        from recflow.privacy_dp import dp_sgd_epsilon

        return dp_sgd_epsilon(
            self.q,
            self.settings.noise_multiplier,
            epochs * self.steps_per_epoch,
            self.settings.delta,
        )


def train_ranking_mlp(
    features: Features,
    cfg: TrainConfig,
    *,
    progress: Callable[[str], None] = print,
    strategy: Any = None,
) -> TrainedModel:
    """Fit the ranking network; one ``progress`` line per epoch so task logs show progress.

    Deterministic given ``cfg.seed``: Keras' weight init and our negative draws and shuffles
    are all seeded (CPU float reductions may still differ in the last bits).

    ``strategy`` (a tf.distribute.Strategy) overrides ``cfg.distribution``; the model and its
    optimizer state are created in the strategy's scope, which is all Keras 3 needs to fit
    data-parallel.
    """
    import keras

    from recflow.models.ranking_mlp import build_ranking_mlp

    _check_inputs(features, cfg)
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
    pos_u, pos_i = unique_positives(features)
    history: dict[str, list[float]] = {"loss": [], "seconds": []}
    dp = _DPRun.start(cfg, strategy, pos_u.size, progress) if cfg.dp.enabled else None
    started = time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        neg_u, neg_i = sample_negatives(features, pos_u, cfg.negatives_per_positive, rng)
        users = np.concatenate([pos_u, neg_u])
        items = np.concatenate([pos_i, neg_i])
        labels = np.concatenate([np.ones(pos_u.size, np.float32), np.zeros(neg_u.size, np.float32)])
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
        # Our own seeded shuffle, so the order does not depend on Keras' data pipeline.
        order = rng.permutation(users.size)
        fit = fit_epoch(
            model, users[order], items[order], labels[order], cfg, progress,
            f"epoch {epoch}/{cfg.epochs}",
        )  # fmt: skip
        loss = float(fit.history["loss"][-1])
        if not np.isfinite(loss):
            raise TrainingError(
                f"training: expected a finite loss, found {loss} at epoch {epoch}; "
                "lower learning_rate"
            )
        seconds = time.perf_counter() - t0
        history["loss"].append(loss)
        history["seconds"].append(seconds)
        progress(
            f"epoch {epoch}/{cfg.epochs} loss={loss:.4f} examples={users.size} "
            f"seconds={seconds:.1f}"
        )
    return TrainedModel(model=model, history=history, seconds=time.perf_counter() - started)


def fit_epoch(
    model: Any,
    users: np.ndarray,
    items: np.ndarray,
    labels: np.ndarray,
    cfg: TrainConfig,
    say: Callable[[str], None],
    what: str,
) -> Any:
    """One epoch of ``model.fit`` over the given (already shuffled) rows, streamed by tf.data.

    The rows are sliced into batches by ``tf.data`` (no per-epoch copy into Keras' own
    adapter) and a progress line (examples/s, ETA) goes to ``say`` every
    ``cfg.progress_seconds``.
    """
    import tensorflow as tf

    from recflow.progress import Progress, keras_callback

    data = (
        tf.data.Dataset.from_tensor_slices(((users, items), labels))
        .batch(cfg.batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )
    meter = Progress(what, users.size, say, interval=cfg.progress_seconds)
    fit = model.fit(
        data, epochs=1, shuffle=False, verbose=0, callbacks=[keras_callback(meter, cfg.batch_size)]
    )
    meter.finish()
    return fit


def score_users(trained: TrainedModel, features: Features, user_idx: np.ndarray) -> np.ndarray:
    """Scores [B, N] float32 of the given user indices against the whole catalogue."""
    import keras

    from recflow.models.ranking_mlp import score_matrix, users_per_batch

    user_idx = np.asarray(user_idx, dtype=np.int32)
    out = np.empty((user_idx.size, features.n_items), dtype=np.float32)
    step = users_per_batch(features.n_items)
    for start in range(0, user_idx.size, step):
        chunk = user_idx[start : start + step]
        scores = score_matrix(trained.model, chunk, features.n_items)
        out[start : start + chunk.size] = keras.ops.convert_to_numpy(scores)
    return out
