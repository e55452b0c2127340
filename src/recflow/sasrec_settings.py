"""SASRec's settings: ``TrainConfig.sasrec`` (the Transformer, its training and its large-catalogue
sampled softmax) and ``TrainConfig.sqn`` (the Q-learning head of ``sasrec_sqn``).

The other model kinds' blocks are in :mod:`recflow.model_settings`; ``recflow.train_config``
re-exports them all. Declared with :func:`recflow.settings.setting` (see that module for what
is derived).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from recflow.model_settings import MODEL
from recflow.settings import Settings, setting


@dataclass(frozen=True)
class SasrecSettings(Settings):
    """model=sasrec/sasrec_sqn (models/sasrec/): own epochs/batch/lr, since a Transformer
    over sequences wants other values than the ranking MLP."""

    FORM_SECTION: ClassVar[str] = MODEL
    FLAT_PREFIX: ClassVar[str] = "sasrec_"

    epochs: int = setting(
        40,
        "SASRec epochs",
        "model=sasrec/sasrec_sqn: passes over all users' training sequences (cut into windows of the maximum length), at most: early stopping (sasrec_patience_steps) may end training sooner. Default: chosen among 20, 40, 60 on MovieLens-100K's leave-one-out validation events (bench/PROTOCOL.md, bench/results/quality.md).",
        ge=1,
        le=1000,
    )
    patience_steps: int = setting(
        500,
        "SASRec early-stopping patience (steps)",
        "model=sasrec/sasrec_sqn: training stops at the first epoch end this many gradient steps (and sasrec_patience_epochs epochs) after the epoch with the best validation NDCG@10 and keeps that epoch's weights (Keras EarlyStopping with restore_best_weights, counted in steps so that it means the same on small and large logs); 0 = train every epoch. Default: covers the longest plateau of MovieLens-100K's validation curve (bench/results/sasrec-early-stopping.md).",
        ge=0,
        le=10_000_000,
    )
    patience_epochs: int = setting(
        2,
        "SASRec early-stopping patience (epochs)",
        "model=sasrec/sasrec_sqn with sasrec_patience_steps > 0: also at least this many epochs without a better validation NDCG@10 before stopping (on large logs an epoch holds more steps than the step patience, and one epoch's dip is within the metric's epoch-to-epoch noise).",
        ge=1,
        le=1000,
    )
    validation_users: int = setting(
        5000,
        "SASRec validation users",
        "model=sasrec/sasrec_sqn with sasrec_patience_steps > 0: fixed random sample of users whose validation event is ranked after each epoch (0 = all); the same users every epoch.",
        ge=0,
    )
    batch_size: int = setting(
        128,
        "SASRec batch size",
        "model=sasrec/sasrec_sqn: sequence windows per gradient step.",
        ge=1,
        le=4096,
    )
    learning_rate: float = setting(
        0.001,
        "SASRec learning rate",
        "model=sasrec/sasrec_sqn: Adam learning rate (beta_2 0.98).",
        gt=0,
        le=1,
    )
    max_len: int = setting(
        50,
        "SASRec maximum sequence length",
        "model=sasrec/sasrec_sqn: most recent items the Transformer reads (e.g. 50 or 200); longer histories are cut into several training windows.",
        ge=2,
        le=1000,
    )
    dim: int = setting(
        64,
        "SASRec hidden size",
        "model=sasrec/sasrec_sqn: item/position embedding and Transformer width (a multiple of the heads).",
        ge=2,
        le=1024,
    )
    blocks: int = setting(
        2,
        "SASRec blocks",
        "model=sasrec/sasrec_sqn: stacked causal self-attention blocks.",
        ge=1,
        le=12,
    )
    heads: int = setting(
        1,
        "SASRec attention heads",
        "model=sasrec/sasrec_sqn: heads per attention layer; must divide the hidden size.",
        ge=1,
        le=16,
    )
    dropout: float = setting(
        0.2,
        "SASRec dropout",
        "model=sasrec/sasrec_sqn: dropout on embeddings, attention and feed-forward layers.",
        ge=0,
        lt=1,
    )
    negatives: int = setting(
        0,
        "SASRec sampled negatives",
        "model=sasrec/sasrec_sqn: 0 = full softmax over the catalogue; > 0 = sampled softmax with this many uniform negatives (for large catalogues).",
        ge=0,
        le=100000,
    )
    # With negatives = 0, catalogues above full_softmax_max_items train with sampled softmax
    # over large_catalogue_negatives uniform negatives: the full softmax costs (and updates)
    # every item's embedding at every step.
    full_softmax_max_items: int = setting(
        10_000,
        "SASRec full-softmax catalogue limit",
        "model=sasrec/sasrec_sqn with sasrec_negatives = 0: catalogues larger than this train with sampled softmax (the full softmax updates every item at every step).",
        ge=1,
    )
    large_catalogue_negatives: int = setting(
        256,
        "SASRec negatives above the limit",
        "Sampled negatives per position when the catalogue exceeds the full-softmax limit.",
        ge=1,
        le=100000,
    )

    def rules(self) -> list[str]:
        if self.dim % self.heads:
            return [
                f"sasrec_heads: expected a divisor of sasrec_dim={self.dim}, found {self.heads}"
            ]
        return []


@dataclass(frozen=True)
class SqnSettings(Settings):
    """model=sasrec_sqn (models/sasrec/sqn.py): the Q-learning head next to SASRec's."""

    FORM_SECTION: ClassVar[str] = MODEL
    FLAT_PREFIX: ClassVar[str] = "sqn_"

    gamma: float = setting(
        0.5,
        "SQN discount",
        "model=sasrec_sqn: gamma of the Bellman target r + gamma * max Q'(s', a').",
        ge=0,
        lt=1,
    )
    negative_reward: float = setting(
        0.0,
        "SQN reward below rating 4",
        "model=sasrec_sqn: reward of an event rated below 4 (rated >= 4: 1; implicit data: every event 1).",
        ge=-1,
        le=1,
    )
    target_every: int = setting(
        100,
        "SQN target update period",
        "model=sasrec_sqn: training steps between updates of the target network.",
        ge=1,
        le=100000,
    )
    tau: float = setting(
        1.0,
        "SQN target update rate",
        "model=sasrec_sqn: 1 = copy the online network at each update; < 1 = Polyak averaging.",
        gt=0,
        le=1,
    )
    q_weight: float = setting(
        1.0,
        "SQN Q-loss weight",
        "model=sasrec_sqn: weight of the Q-learning loss next to the cross-entropy.",
        ge=0,
        le=100,
    )
    negatives: int = setting(
        0,
        "SQN negative actions",
        "model=sasrec_sqn: random unlogged items per state trained toward reward 0 with the state unchanged (SNQN); 0 = SQN as published. Needed to serve the Q head.",
        ge=0,
        le=1000,
    )
    serve_head: str = setting(
        "supervised",
        "SQN served head",
        "model=sasrec_sqn: which head the exported model ranks with (the paper serves the supervised one).",
        choices=("supervised", "q"),
    )
