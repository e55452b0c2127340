"""SASRec (Kang & McAuley, ICDM 2018): a causal Transformer over each user's item sequence.

Item ids are shifted by one so that 0 pads; sequences are left-padded, so the most recent
item always sits at the last position, which is the state serving reads. Training predicts
the next item at every position with a full softmax over the catalogue (sampled softmax
when ``sasrec_negatives > 0``), optionally joined by the SQN Q head (``recflow.models.sqn``).
"""

from __future__ import annotations

import functools
import json
import math
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recflow.config import TrainConfig
from recflow.errors import ConfigError, TrainingError
from recflow.schema import ITEM_ID, RATING, TIMESTAMP, USER_ID
from recflow.types import Features, Split

HEADS = ("supervised", "q")
META_FILE = "sasrec.json"
WEIGHTS_FILE = "sasrec.weights.h5"
HISTORIES_FILE = "histories.npz"
HISTORY_FILE = "history.json"
PAD = 0


@dataclass(frozen=True)
class SasrecParams:
    """Architecture; enough to rebuild the network before loading its weights.

    Built from the checked settings block (``TrainConfig.sasrec``; bounds and the heads/dim
    rule are declared there) or read back from the run's meta file.
    """

    n_items: int
    max_len: int
    dim: int
    blocks: int
    heads: int
    dropout: float
    q_head: bool = False

    @classmethod
    def from_config(cls, cfg: TrainConfig, n_items: int, *, q_head: bool) -> SasrecParams:
        s = cfg.sasrec
        return cls(n_items, s.max_len, s.dim, s.blocks, s.heads, s.dropout, q_head=q_head)


@dataclass(frozen=True)
class Sequences:
    """Each user's training items in chronological order, CSR over ``features.user_ids``."""

    splits: np.ndarray  # [U+1] int64
    items: np.ndarray  # [T] int32 catalogue index
    rewards: np.ndarray  # [T] float32 reward of each event (SQN)

    def lengths(self) -> np.ndarray:
        return np.diff(self.splits)


def user_sequences(
    features: Features, train: pd.DataFrame, *, other_reward: float = 0.0
) -> Sequences:
    """Chronological per-user sequences of ``train`` mapped onto ``features``' indices.

    The split's order is kept among equal timestamps (its documented tie-break) by a stable
    sort on (user, timestamp).
    """
    from recflow.models.sqn import rewards_from_ratings

    user_idx = pd.Index(features.user_ids).get_indexer(train[USER_ID].astype(str).to_numpy())
    item_idx = pd.Index(features.item_ids).get_indexer(train[ITEM_ID].astype(str).to_numpy())
    unknown = int(((user_idx < 0) | (item_idx < 0)).sum())
    if unknown:
        raise TrainingError(
            f"sasrec: expected every training event's user and item in the features, found "
            f"{unknown} events that are not; rebuild features from the same split"
        )
    stamps = train[TIMESTAMP].to_numpy(dtype=np.int64)
    order = np.lexsort((stamps, user_idx))
    ratings = (
        train[RATING].to_numpy(dtype=np.float64, na_value=np.nan)
        if RATING in train.columns
        else np.ones(len(train))
    )
    counts = np.bincount(user_idx, minlength=features.n_users)
    return Sequences(
        splits=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        items=item_idx[order].astype(np.int32),
        rewards=rewards_from_ratings(ratings[order], other_reward=other_reward),
    )


def training_windows(seqs: Sequences, max_len: int) -> dict[str, np.ndarray]:
    """Next-item training windows [S, max_len], left-padded, cut from each user's end.

    A user of n events has n-1 transitions (input x_t -> target x_{t+1}), cut into
    ceil((n-1)/max_len) windows so long histories are used in full. ``done`` marks the
    user's last transition (terminal for Q-learning); ``q_mask`` drops the last position of
    earlier windows, whose next state lies outside the window.
    """
    lengths = seqs.lengths()
    n_windows = np.maximum(lengths - 1, 0)
    n_windows = -(-n_windows // max_len)
    base = np.cumsum(n_windows) - n_windows
    user_of = np.repeat(np.arange(lengths.size), lengths)
    local = np.arange(seqs.items.size) - seqs.splits[:-1][user_of]
    is_target = local >= 1
    g = np.flatnonzero(is_target)
    from_end = lengths[user_of[g]] - 1 - local[g]
    window = from_end // max_len
    row = base[user_of[g]] + window
    col = max_len - 1 - from_end % max_len
    shape = (int(n_windows.sum()), max_len)
    out = {
        "inputs": np.zeros(shape, np.int32),
        "targets": np.zeros(shape, np.int32),
        "rewards": np.zeros(shape, np.float32),
        "done": np.zeros(shape, np.float32),
        "q_mask": np.zeros(shape, bool),
    }
    out["inputs"][row, col] = seqs.items[g - 1] + 1
    out["targets"][row, col] = seqs.items[g] + 1
    out["rewards"][row, col] = seqs.rewards[g]
    out["done"][row, col] = from_end == 0
    out["q_mask"][row, col] = ~((col == max_len - 1) & (window > 0))
    return out


def last_windows(seqs: Sequences, max_len: int) -> np.ndarray:
    """[U, max_len] each user's most recent items (index + 1), left-padded: serving input."""
    lengths = seqs.lengths()
    user_of = np.repeat(np.arange(lengths.size), lengths)
    from_end = seqs.splits[1:][user_of] - 1 - np.arange(seqs.items.size)
    keep = from_end < max_len
    out = np.zeros((lengths.size, max_len), np.int32)
    out[user_of[keep], max_len - 1 - from_end[keep]] = seqs.items[keep] + 1
    return out


@functools.cache
def _network_class() -> type:
    import keras
    from keras import layers, ops

    from recflow.models.sparse_adam import row_embedding

    class SasrecNet(keras.Model):  # type: ignore[misc]
        """Hidden states [B, L, dim] of left-padded sequences; two heads on top."""

        def __init__(self, p: SasrecParams) -> None:
            super().__init__(name="sasrec")
            self.p = p
            self.item_embedding = row_embedding(p.n_items + 1, p.dim, name="item_embedding")
            self.position_embedding = layers.Embedding(p.max_len, p.dim, name="position_embedding")
            self.input_dropout = layers.Dropout(p.dropout)
            self.attn_norm = [layers.LayerNormalization(epsilon=1e-6) for _ in range(p.blocks)]
            self.attn = [
                layers.MultiHeadAttention(p.heads, p.dim // p.heads, dropout=p.dropout)
                for _ in range(p.blocks)
            ]
            self.ffn_norm = [layers.LayerNormalization(epsilon=1e-6) for _ in range(p.blocks)]
            self.ffn_in = [layers.Dense(p.dim, activation="relu") for _ in range(p.blocks)]
            self.ffn_out = [layers.Dense(p.dim) for _ in range(p.blocks)]
            self.dropout = layers.Dropout(p.dropout)
            self.final_norm = layers.LayerNormalization(epsilon=1e-6)
            self.item_bias = self.add_weight(
                shape=(p.n_items,), initializer="zeros", name="item_bias"
            )
            self.q_head = layers.Dense(p.n_items, name="q_head") if p.q_head else None

        def build(self, input_shape: Any) -> None:
            # Sub-layers build on the first call (build_network makes one, eagerly).
            self.built = True

        def call(self, seq: Any, training: bool = False) -> Any:
            real = ops.not_equal(seq, PAD)
            keep = ops.cast(real, "float32")[..., None]
            length = ops.shape(seq)[1]
            x = self.item_embedding(seq) * math.sqrt(self.p.dim)
            x = x + self.position_embedding(ops.arange(length))[None, :, :]
            x = self.input_dropout(x, training=training) * keep
            # Keys must be real items; causality is added by the layer.
            key_mask = ops.broadcast_to(real[:, None, :], (ops.shape(seq)[0], length, length))
            for b in range(self.p.blocks):
                h = self.attn_norm[b](x)
                a = self.attn[b](
                    h, h, attention_mask=key_mask, use_causal_mask=True, training=training
                )
                x = x + self.dropout(a, training=training)
                h = self.ffn_norm[b](x)
                f = self.ffn_out[b](self.dropout(self.ffn_in[b](h), training=training))
                x = (x + self.dropout(f, training=training)) * keep
            return self.final_norm(x)

        def item_matrix(self) -> Any:
            return self.item_embedding.embeddings[1:]  # output layer tied to the inputs

        def logits(self, hidden: Any) -> Any:
            return ops.matmul(hidden, ops.transpose(self.item_matrix())) + self.item_bias

        def q_values(self, hidden: Any) -> Any:
            if self.q_head is None:
                raise ConfigError("q head: expected a network built with q_head=True, found none")
            return self.q_head(hidden)

        def head_scores(self, seq: Any, head: str) -> Any:
            """Scores [B, N] of the state after the last position of ``seq``."""
            last = self.call(seq, training=False)[:, -1, :]
            return self.q_values(last) if head == "q" else self.logits(last)

    return SasrecNet


def build_network(p: SasrecParams) -> Any:
    """A built SASRec network (all weights created, so weights can be loaded or copied)."""
    net = _network_class()(p)
    hidden = net(np.zeros((1, p.max_len), np.int32))
    net.logits(hidden)
    if p.q_head:
        net.q_values(hidden)
    return net


@dataclass
class TrainedSasrec:
    model: Any  # SasrecNet
    params: SasrecParams
    sequences: Sequences
    history: dict[str, list[float]]
    seconds: float
    cpu_seconds: float


EpochCallback = Callable[[int, Any], dict[str, float] | None]


def _cpu_seconds() -> float:
    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime


def train_sasrec(
    features: Features,
    split: Split,
    cfg: TrainConfig,
    *,
    q_head: bool = False,
    progress: Callable[[str], None] = print,
    on_epoch: EpochCallback | None = None,
) -> TrainedSasrec:
    """Fit SASRec (and the SQN Q head when ``q_head``) on the chronological training split.

    ``on_epoch(epoch, model)`` may return extra numbers to log in the history (e.g. a
    validation metric while tuning).
    """
    import keras
    import tensorflow as tf

    from recflow.models.sparse_adam import lazy_adam
    from recflow.models.sqn import TargetNetwork, bellman_targets, q_loss
    from recflow.progress import Progress

    p = SasrecParams.from_config(cfg, features.n_items, q_head=q_head)
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
    seqs = user_sequences(features, split.train, other_reward=cfg.sqn.negative_reward)
    windows = training_windows(seqs, p.max_len)
    n_windows = windows["inputs"].shape[0]
    if n_windows == 0:
        raise TrainingError(
            "sasrec: expected users with at least 2 training events, found none; "
            "sequential models need histories"
        )
    keras.utils.set_random_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = build_network(p)
    optimizer = lazy_adam(cfg.sasrec.learning_rate, beta_2=0.98)
    target = TargetNetwork(model, build_network(p)) if q_head else None
    sampled = softmax_negatives(cfg, p.n_items)
    if sampled:
        progress(f"sasrec: sampled softmax with {sampled} negatives over {p.n_items} items")
    gamma, q_weight, q_negatives = cfg.sqn.gamma, cfg.sqn.q_weight, cfg.sqn.negatives
    n_items = p.n_items

    def supervised_loss(hidden: Any, labels: Any) -> Any:
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

    def negative_q_loss(q: Any, lagged: Any, q_mask: Any) -> Any:
        """SNQN (Xin et al. 2022): an action the user did not take earns 0 and leaves the
        state as it was, so its target is gamma * max_a Q'(s_t, a); without such negatives
        the Q values of never-taken items are never trained and the Q head ranks at random.
        """
        current_q = target.model.q_values(tf.boolean_mask(lagged, q_mask))  # type: ignore[union-attr]
        zeros = tf.zeros(tf.shape(current_q)[:1])
        y_neg = bellman_targets(zeros, current_q, zeros, gamma)
        sampled_actions = tf.random.uniform(
            [tf.shape(q)[0], q_negatives], 0, n_items, dtype=tf.int32
        )
        q_neg = tf.gather(q, sampled_actions, batch_dims=1)
        return q_loss(q_neg, y_neg[:, None])

    # One trace for every batch size (the last batch is smaller): tracing is the slow part.
    spec = [
        tf.TensorSpec([None, p.max_len], dtype)
        for dtype in (tf.int32, tf.int32, tf.float32, tf.float32, tf.bool)
    ]

    @tf.function(input_signature=spec, autograph=False)  # no tensor-dependent control flow
    def step(inputs: Any, targets: Any, rewards: Any, done: Any, q_mask: Any) -> Any:
        valid = targets > 0
        with tf.GradientTape() as tape:
            hidden = model(inputs, training=True)
            ce = supervised_loss(
                tf.boolean_mask(hidden, valid), tf.boolean_mask(targets, valid) - 1
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
                    ql = 0.5 * (ql + negative_q_loss(q, lagged, q_mask))
            loss = ce + q_weight * ql
        variables = model.trainable_variables
        grads = tape.gradient(loss, variables)
        optimizer.apply(grads, variables)
        return loss, ce, ql

    history: dict[str, list[float]] = {"loss": [], "ce": []}
    if q_head:
        history["q_loss"] = []
    steps = 0
    wall0, cpu0 = time.perf_counter(), _cpu_seconds()
    for epoch in range(1, cfg.sasrec.epochs + 1):
        order = rng.permutation(n_windows)
        sums = np.zeros(3)
        batches = 0
        meter = Progress(
            f"sasrec epoch {epoch}/{cfg.sasrec.epochs}",
            n_windows,
            progress,
            unit="sequences",
            interval=cfg.progress_seconds,
        )
        for start in range(0, n_windows, cfg.sasrec.batch_size):
            take = order[start : start + cfg.sasrec.batch_size]
            out = step(*(tf.constant(windows[k][take]) for k in windows))
            meter.update(start + take.size)
            sums += [float(v) for v in out]
            batches += 1
            steps += 1
            if target is not None and steps % cfg.sqn.target_every == 0:
                target.update(cfg.sqn.tau)
        meter.finish()
        means = sums / batches
        if not np.isfinite(means[0]):
            raise TrainingError(
                f"sasrec: expected a finite loss, found {means[0]} at epoch {epoch}; "
                "lower sasrec_learning_rate"
            )
        history["loss"].append(float(means[0]))
        history["ce"].append(float(means[1]))
        if q_head:
            history["q_loss"].append(float(means[2]))
        outside = time.perf_counter(), _cpu_seconds()
        extra = on_epoch(epoch, model) if on_epoch else None
        # The callback's own work (e.g. an evaluation) is not training time.
        wall0 += time.perf_counter() - outside[0]
        cpu0 += _cpu_seconds() - outside[1]
        for name, value in (extra or {}).items():
            history.setdefault(name, []).append(float(value))
        shown = ", ".join(f"{k} {v[-1]:.4f}" for k, v in history.items())
        progress(f"sasrec epoch {epoch}/{cfg.sasrec.epochs}: {shown}")
    seconds = time.perf_counter() - wall0
    cpu = _cpu_seconds() - cpu0
    return TrainedSasrec(model, p, seqs, history, seconds, cpu)


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


def score_sequences(model: Any, padded: np.ndarray, head: str = "supervised") -> np.ndarray:
    """Scores [B, N] of left-padded histories (item index + 1) with the chosen head."""
    if head not in HEADS:
        raise ConfigError(f"sqn_serve_head: expected one of {HEADS}, found {head!r}")
    out = [
        np.asarray(model.head_scores(padded[i : i + 256], head), np.float32)
        for i in range(0, padded.shape[0], 256)
    ]
    return np.concatenate(out) if out else np.zeros((0, model.p.n_items), np.float32)


def save_trained(trained: TrainedSasrec, features: Features, head: str, train_dir: Path) -> None:
    """Weights, architecture, serving head and each user's recent items (ids, not indices)."""
    train_dir.mkdir(parents=True, exist_ok=True)
    trained.model.save_weights(train_dir / WEIGHTS_FILE)
    meta = {"params": asdict(trained.params), "head": head}
    (train_dir / META_FILE).write_text(json.dumps(meta, indent=2))
    recent = last_windows(trained.sequences, trained.params.max_len)
    ids = np.concatenate([[""], features.item_ids.astype(str)])[recent]
    np.savez(train_dir / HISTORIES_FILE, user_ids=features.user_ids.astype(str), items=ids)
    (train_dir / HISTORY_FILE).write_text(json.dumps(trained.history))


def load_trained(train_dir: Path, features: Features) -> tuple[Any, str, np.ndarray]:
    """(network, serving head, [U, L] recent items of ``features``' users as index + 1)."""
    missing = [
        f for f in (META_FILE, WEIGHTS_FILE, HISTORIES_FILE) if not (train_dir / f).is_file()
    ]
    if missing:
        raise TrainingError(
            f"sasrec export: expected {missing} in {train_dir}, found none; run the train stage"
        )
    meta = json.loads((train_dir / META_FILE).read_text())
    p = SasrecParams(**meta["params"])
    if p.n_items != features.n_items:
        raise TrainingError(
            f"sasrec export: expected a catalogue of {p.n_items} items as trained, found "
            f"{features.n_items}; export with the features the model was trained on"
        )
    model = build_network(p)
    model.load_weights(train_dir / WEIGHTS_FILE)
    with np.load(train_dir / HISTORIES_FILE, allow_pickle=False) as npz:
        user_ids, items = npz["user_ids"], npz["items"]
    # Map stored ids onto this catalogue / user order ("" -> 0 = padding).
    item_pos = pd.Index(features.item_ids.astype(str)).get_indexer(items.reshape(-1)) + 1
    recent_by_stored = item_pos.reshape(items.shape).astype(np.int32)
    rows = pd.Index(user_ids).get_indexer(features.user_ids.astype(str))
    recent = np.zeros((features.n_users, p.max_len), np.int32)
    recent[rows >= 0] = recent_by_stored[rows[rows >= 0]]
    return model, str(meta["head"]), recent


# -- model-kind interface (recflow.models.zoo) ------------------------------------------------
SASREC = "sasrec"
SASREC_SQN = "sasrec_sqn"


def fit(
    kind: str,
    features: Features,
    split: Split,
    cfg: TrainConfig,
    progress: Callable[[str], None],
    train_dir: Path,
) -> dict[str, Any]:
    """Zoo ``fit`` of ``sasrec`` (supervised head) and ``sasrec_sqn`` (+ Q head, SQN)."""
    if kind not in (SASREC, SASREC_SQN):
        raise ConfigError(f"model: expected {SASREC!r} or {SASREC_SQN!r}, found {kind!r}")
    head = cfg.sqn.serve_head if kind == SASREC_SQN else "supervised"
    if head not in HEADS:
        raise ConfigError(f"sqn_serve_head: expected one of {HEADS}, found {head!r}")
    trained = train_sasrec(features, split, cfg, q_head=kind == SASREC_SQN, progress=progress)
    save_trained(trained, features, head, Path(train_dir))
    ratio = trained.cpu_seconds / trained.seconds if trained.seconds > 0 else 0.0
    progress(
        f"{kind}: trained in {trained.seconds:.1f} s wall, {trained.cpu_seconds:.1f} s CPU "
        f"(ratio {ratio:.2f}); serving head {head!r}"
    )
    return {
        "history": trained.history,
        "seconds": trained.seconds,
        "cpu_seconds": trained.cpu_seconds,
        "serve_head": head,
    }


def export(
    train_dir: Path, features: Features, out_dir: Path, top_k: int, warmup: Sequence[str]
) -> Path:
    """Zoo ``export``: rebuild the network, load its weights, write the SavedModel."""
    from recflow.models.export_sequential import export_sequential

    model, head, recent = load_trained(Path(train_dir), features)
    return export_sequential(
        model, features, recent, out_dir, head=head, top_k=top_k, warmup_user_ids=warmup
    )
