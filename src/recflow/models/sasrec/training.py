"""SASRec's training: the next item at every position of each user's windows, with a full
softmax over the catalogue (sampled softmax when ``sasrec_negatives > 0`` or the catalogue is
large), optionally joined by the SQN Q head (:mod:`recflow.models.sasrec.sqn`).

``train_sasrec`` checks the settings, cuts the windows, builds the networks and one compiled
step (:func:`make_step`), then runs the epochs (:func:`run_epoch`) in batches of windows of
similar length, each cut to its longest window (:func:`epoch_batches`), stopping early when
validation NDCG@10 stops improving (:mod:`recflow.models.sasrec.early_stopping`); the time an
``on_epoch`` callback takes is not counted as training time (:class:`TrainingClock`), the
early-stopping evaluations are.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from recflow.config import TrainConfig
from recflow.errors import ConfigError, TrainingError
from recflow.models.sasrec.network import SasrecNet, SasrecParams, build_network
from recflow.models.sasrec.sequences import Sequences, training_windows, user_sequences
from recflow.types import Features, Split

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

    from recflow.models.sasrec.sqn import TargetNetwork
    from recflow.progress import Progress

T = TypeVar("T")
# (inputs, targets, rewards, done, q_mask) [B, L] each, weight [] -> (loss, cross-entropy,
# Q loss)
TrainStep = Callable[..., "tuple[tf.Tensor, tf.Tensor, tf.Tensor]"]
EpochCallback = Callable[[int, SasrecNet], dict[str, float] | None]
WINDOW_KEYS = ("inputs", "targets", "rewards", "done", "q_mask")
# Windows are sorted by length within chunks of this many batches, so a batch's windows have
# similar lengths and its all-padding columns can be cut (at 20M events half the positions of
# the windows are padding), while each chunk still mixes windows from the whole epoch.
CHUNK_BATCHES = 64


@dataclass
class TrainedSasrec:
    model: SasrecNet
    params: SasrecParams
    sequences: Sequences
    history: dict[str, list[float]]
    seconds: float
    cpu_seconds: float
    epochs_trained: int
    best_epoch: int  # the epoch whose weights ``model`` holds


def _cpu_seconds() -> float:
    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime


class TrainingClock:
    """Wall and CPU seconds since start, less the time spent in :meth:`exclude`."""

    def __init__(self) -> None:
        self.wall0, self.cpu0 = time.perf_counter(), _cpu_seconds()

    def exclude(self, work: Callable[[], T]) -> T:
        """Run ``work`` (e.g. an evaluation between epochs) off the clock."""
        wall, cpu = time.perf_counter(), _cpu_seconds()
        result = work()
        self.wall0 += time.perf_counter() - wall
        self.cpu0 += _cpu_seconds() - cpu
        return result

    def elapsed(self) -> tuple[float, float]:
        """(wall seconds, CPU seconds) of training."""
        return time.perf_counter() - self.wall0, _cpu_seconds() - self.cpu0


def check_settings(cfg: TrainConfig, *, q_head: bool) -> None:
    if cfg.sasrec.epochs < 1 or cfg.sasrec.batch_size < 1:
        raise ConfigError(
            f"sasrec_epochs and sasrec_batch_size: expected >= 1, found "
            f"{cfg.sasrec.epochs} and {cfg.sasrec.batch_size}"
        )
    if q_head and not (
        cfg.sqn.target_every >= 1 and 0.0 < cfg.sqn.tau <= 1.0 and 0.0 <= cfg.sqn.gamma < 1.0
    ):
        raise ConfigError(
            "sqn: expected sqn_target_every >= 1, 0 < sqn_tau <= 1 and 0 <= sqn_gamma < 1, "
            f"found {cfg.sqn.target_every}, {cfg.sqn.tau} and {cfg.sqn.gamma}"
        )


def training_data(
    features: Features, split: Split, cfg: TrainConfig, max_len: int
) -> tuple[Sequences, dict[str, np.ndarray]]:
    """(each user's chronological sequence, the training windows cut from them)."""
    seqs = user_sequences(features, split.train, other_reward=cfg.sqn.negative_reward)
    windows = training_windows(seqs, max_len)
    if windows["inputs"].shape[0] == 0:
        raise TrainingError(
            "sasrec: expected users with at least 2 training events, found none; "
            "sequential models need histories"
        )
    return seqs, windows


def softmax_negatives(cfg: TrainConfig, n_items: int) -> int:
    """Sampled negatives per position, or 0 for the full softmax over the catalogue.

    ``sasrec_negatives`` > 0 wins; otherwise catalogues above ``sasrec_full_softmax_max_items``
    use ``sasrec_large_catalogue_negatives``. Never as many as the catalogue (that is the full
    softmax).
    """
    wanted = cfg.sasrec.negatives
    if wanted <= 0 and n_items > cfg.sasrec.full_softmax_max_items:
        wanted = cfg.sasrec.large_catalogue_negatives
    return wanted if 0 < wanted < n_items else 0


def supervised_loss(
    model: SasrecNet, hidden: tf.Tensor, labels: tf.Tensor, sampled: int
) -> tf.Tensor:
    """Mean cross-entropy of the next items ``labels`` (catalogue index) from ``hidden``."""
    import tensorflow as tf

    n_items = model.p.n_items
    if sampled:
        # Sampled over the whole embedding table (row 0 pads, so ids shift by one): a
        # slice of the table would turn the gradient dense; a gather keeps it row-sparse.
        lab = tf.cast(labels[:, None], tf.int64)
        ids, true_expected, sampled_expected = tf.random.uniform_candidate_sampler(
            lab, 1, sampled, unique=True, range_max=n_items
        )
        return tf.reduce_mean(
            tf.nn.sampled_softmax_loss(
                weights=model.item_embedding.embeddings.value,
                biases=tf.concat([tf.zeros([1]), model.item_bias], axis=0),
                labels=lab + 1,
                inputs=hidden,
                num_sampled=sampled,
                num_classes=n_items + 1,
                sampled_values=(ids + 1, true_expected, sampled_expected),
            )
        )
    logits = model.logits(hidden)
    return tf.reduce_mean(
        tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    )


def negative_q_loss(
    target: TargetNetwork,
    q: tf.Tensor,
    lagged: tf.Tensor,
    q_mask: tf.Tensor,
    gamma: float,
    negatives: int,
) -> tf.Tensor:
    """SNQN (Xin et al. 2022): an action the user did not take earns 0 and leaves the
    state as it was, so its target is gamma * max_a Q'(s_t, a); without such negatives
    the Q values of never-taken items are never trained and the Q head ranks at random.
    """
    import tensorflow as tf

    from recflow.models.sasrec.sqn import bellman_targets, q_loss

    current_q = target.model.q_values(tf.boolean_mask(lagged, q_mask))
    zeros = tf.zeros(tf.shape(current_q)[:1])
    y_neg = bellman_targets(zeros, current_q, zeros, gamma)
    sampled_actions = tf.random.uniform(
        [tf.shape(q)[0], negatives], 0, target.model.p.n_items, dtype=tf.int32
    )
    q_neg = tf.gather(q, sampled_actions, batch_dims=1)
    return q_loss(q_neg, y_neg[:, None])


def make_step(
    model: SasrecNet,
    target: TargetNetwork | None,
    optimizer: keras.optimizers.Optimizer,
    cfg: TrainConfig,
    sampled: int,
) -> TrainStep:
    """One compiled training step over a batch of windows (``WINDOW_KEYS`` order)."""
    import tensorflow as tf

    from recflow.models.sasrec.sqn import bellman_targets, q_loss

    gamma, q_weight, q_negatives = cfg.sqn.gamma, cfg.sqn.q_weight, cfg.sqn.negatives
    # One trace for every batch size and width (batches are trimmed to their longest
    # window): tracing is the slow part.
    spec = [
        tf.TensorSpec([None, None], dtype)
        for dtype in (tf.int32, tf.int32, tf.float32, tf.float32, tf.bool)
    ] + [tf.TensorSpec([], tf.float32)]

    @tf.function(input_signature=spec, autograph=False)  # no tensor-dependent control flow
    def step(
        inputs: tf.Tensor,
        targets: tf.Tensor,
        rewards: tf.Tensor,
        done: tf.Tensor,
        q_mask: tf.Tensor,
        weight: tf.Tensor,
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        valid = targets > 0
        with tf.GradientTape() as tape:
            hidden = model(inputs, training=True)
            ce = supervised_loss(
                model, tf.boolean_mask(hidden, valid), tf.boolean_mask(targets, valid) - 1, sampled
            )
            ql = tf.constant(0.0)
            if target is not None:
                lagged = target.model(inputs, training=False)
                # State after action t is the next position's state; the last one is cut.
                next_hidden = tf.concat([lagged[:, 1:], lagged[:, -1:]], axis=1)
                next_q = target.model.q_values(tf.boolean_mask(next_hidden, q_mask))
                y = bellman_targets(
                    tf.boolean_mask(rewards, q_mask), next_q, tf.boolean_mask(done, q_mask), gamma
                )
                q = model.q_values(tf.boolean_mask(hidden, q_mask))
                taken = tf.boolean_mask(targets, q_mask) - 1
                ql = q_loss(tf.gather(q, taken, batch_dims=1), y)
                if q_negatives > 0:
                    ql = 0.5 * (ql + negative_q_loss(target, q, lagged, q_mask, gamma, q_negatives))
            loss = ce + q_weight * ql
            weighted = loss * weight
        variables = model.trainable_variables
        grads = tape.gradient(weighted, variables)
        optimizer.apply(grads, variables)
        return loss, ce, ql

    return step  # type: ignore[no-any-return]


def window_lengths(windows: dict[str, np.ndarray]) -> np.ndarray:
    """[S] positions with a target in each window (its real part is right-aligned)."""
    return np.count_nonzero(windows["targets"], axis=1)


def epoch_batches(
    lengths: np.ndarray, rng: np.random.Generator, batch_size: int
) -> list[np.ndarray]:
    """One epoch's batches of window indices, each of windows of similar length.

    The windows are shuffled, cut into chunks of ``CHUNK_BATCHES`` batches and sorted by
    length within each chunk (stable, so equal lengths stay shuffled); the chunks are cut
    into batches and the batches shuffled.
    """
    order = rng.permutation(lengths.size)
    chunk = batch_size * CHUNK_BATCHES
    batches: list[np.ndarray] = []
    for start in range(0, order.size, chunk):
        part = order[start : start + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches.extend(part[i : i + batch_size] for i in range(0, part.size, batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def run_epoch(
    step: TrainStep,
    windows: dict[str, np.ndarray],
    batches: list[np.ndarray],
    lengths: np.ndarray,
    cfg: TrainConfig,
    meter: Progress,
    target: TargetNetwork | None,
    steps: int,
) -> tuple[np.ndarray, int]:
    """``batches`` of ``windows``, each cut to its longest window; (mean loss, cross-entropy,
    Q loss; steps so far).

    The target network follows the online one every ``sqn_target_every`` steps, counted
    over the whole training (``steps`` carries the count between epochs).
    """
    import tensorflow as tf

    max_len = windows["inputs"].shape[1]
    # A batch's losses are means over its positions; batches of short windows would weigh
    # each of their positions more than batches of long ones. Scaling by the batch's share of
    # positions gives every position the same weight, as random batches do on average.
    per_batch = sum(int(lengths[take].sum()) for take in batches) / len(batches)
    sums = np.zeros(3)
    seen = 0
    for take in batches:
        cols = slice(max_len - int(lengths[take].max()), max_len)
        weight = tf.constant(float(lengths[take].sum()) / per_batch, tf.float32)
        out = step(*(tf.constant(windows[k][take, cols]) for k in WINDOW_KEYS), weight)
        seen += take.size
        meter.update(seen)
        sums += [float(v) for v in out]
        steps += 1
        if target is not None and steps % cfg.sqn.target_every == 0:
            target.update(cfg.sqn.tau)
    meter.finish()
    return sums / len(batches), steps


def train_sasrec(
    features: Features,
    split: Split,
    cfg: TrainConfig,
    *,
    q_head: bool = False,
    head: str = "supervised",
    progress: Callable[[str], None] = print,
    on_epoch: EpochCallback | None = None,
) -> TrainedSasrec:
    """Fit SASRec (and the SQN Q head when ``q_head``) on the chronological training split.

    With ``sasrec_patience_steps`` > 0 and validation events in ``split``, ``head``'s validation
    NDCG@10 is measured after each epoch and training stops early (:class:`BestEpoch`).
    ``on_epoch(epoch, model)`` may return extra numbers to log in the history (e.g. a
    validation metric while tuning).
    """
    import keras

    from recflow.models.sasrec.early_stopping import METRIC, BestEpoch, validation_ndcg
    from recflow.models.sasrec.sqn import TargetNetwork
    from recflow.models.sparse_adam import lazy_adam
    from recflow.progress import Progress

    p = SasrecParams.from_config(cfg, features.n_items, q_head=q_head)
    check_settings(cfg, q_head=q_head)
    seqs, windows = training_data(features, split, cfg, p.max_len)
    n_windows = windows["inputs"].shape[0]
    lengths = window_lengths(windows)
    keras.utils.set_random_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = build_network(p)
    optimizer = lazy_adam(cfg.sasrec.learning_rate, beta_2=0.98)
    target = TargetNetwork(model, build_network(p)) if q_head else None
    sampled = softmax_negatives(cfg, p.n_items)
    if sampled:
        progress(f"sasrec: sampled softmax with {sampled} negatives over {p.n_items} items")
    step = make_step(model, target, optimizer, cfg, sampled)
    patience = cfg.sasrec.patience_steps
    ndcg = (
        validation_ndcg(features, split, seqs, p.max_len, cfg.sasrec.validation_users, head)
        if patience > 0
        else None
    )
    best = BestEpoch(patience, cfg.sasrec.patience_epochs)

    history: dict[str, list[float]] = {"loss": [], "ce": []}
    if q_head:
        history["q_loss"] = []
    steps = 0
    clock = TrainingClock()
    epoch = 0
    for epoch in range(1, cfg.sasrec.epochs + 1):
        what = f"sasrec epoch {epoch}/{cfg.sasrec.epochs}"
        meter = Progress(what, n_windows, progress, unit="sequences", interval=cfg.progress_seconds)
        batches = epoch_batches(lengths, rng, cfg.sasrec.batch_size)
        means, steps = run_epoch(step, windows, batches, lengths, cfg, meter, target, steps)
        if not np.isfinite(means[0]):
            raise TrainingError(
                f"sasrec: expected a finite loss, found {means[0]} at epoch {epoch}; "
                "lower sasrec_learning_rate"
            )
        history["loss"].append(float(means[0]))
        history["ce"].append(float(means[1]))
        if q_head:
            history["q_loss"].append(float(means[2]))
        # The callback's own work (e.g. an evaluation) is not training time.
        extra = clock.exclude(lambda: on_epoch(epoch, model) if on_epoch else None)  # noqa: B023
        for name, value in (extra or {}).items():
            history.setdefault(name, []).append(float(value))
        stop = False
        if ndcg is not None:
            history.setdefault(METRIC, []).append(ndcg(model))
            stop = best.update(epoch, steps, history[METRIC][-1], model.get_weights)
        shown = ", ".join(f"{k} {v[-1]:.4f}" for k, v in history.items())
        progress(f"{what}: {shown}")
        if stop:
            progress(
                f"sasrec: stopping after epoch {epoch}: {METRIC} has not improved in "
                f"{epoch - best.epoch} epochs, {steps - best.steps} steps; keeping epoch "
                f"{best.epoch}'s weights ({best.value:.4f})"
            )
            break
    if best.weights is not None and best.epoch != epoch:
        model.set_weights(best.weights)
    seconds, cpu = clock.elapsed()
    kept = best.epoch if best.weights is not None else epoch
    return TrainedSasrec(model, p, seqs, history, seconds, cpu, epoch, kept)
