"""SASRec's early stopping on the validation events (Keras' ``EarlyStopping`` with
``restore_best_weights``, on a ranking metric Keras cannot compute inside ``fit``).

After each epoch the network ranks the whole catalogue for a fixed sample of validation users
(the same users every epoch, :func:`recflow.evaluation.ranking.sample_users`), from their
training sequences, training items excluded, and NDCG@10 of their validation item is taken.
Training stops at the first epoch end that is both ``sasrec_patience_steps`` gradient steps and
``sasrec_patience_epochs`` epochs after the best epoch's end, and keeps the best epoch's weights.
The validation events are never trained on, and the test events are not read.

Why steps and not epochs (as Keras counts): whether a network still improves depends on how many
updates it has had, and a pass over 20M events holds ~200 times the steps of one over
MovieLens-100K; a fixed epoch count or epoch patience chosen on a small log over-trains and
over-spends on a large one. The patience default covers the longest plateau of MovieLens-100K's
validation curve (bench/results/sasrec-early-stopping.md). On a large log an epoch is longer than
that, and the epochs count instead: one epoch without improvement is not evidence enough, since
the metric moves by about +-0.01 from one epoch to the next at 20M events.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from recflow.evaluation.ranking import TrainItems, rank_users
from recflow.models.sasrec.network import score_sequences
from recflow.models.sasrec.sequences import Sequences, last_windows
from recflow.types import Features, Split

if TYPE_CHECKING:
    from recflow.models.sasrec.network import SasrecNet

K = 10
METRIC = f"val_ndcg@{K}"


@dataclass
class BestEpoch:
    """The best validation value so far, its epoch, step count and weights; when to stop."""

    patience_steps: int
    patience_epochs: int = 1
    value: float = -np.inf
    epoch: int = 0
    steps: int = 0
    weights: list[Any] | None = field(default=None, repr=False)

    def update(
        self, epoch: int, steps: int, value: float, weights: Callable[[], list[Any]]
    ) -> bool:
        """Record ``value`` at the end of ``epoch`` (``steps`` steps trained so far); True when
        training should stop.

        Only a strictly better value counts (a tie keeps the earlier, shorter-trained weights);
        ``weights`` is called only then, so copies are made only for a new best.
        """
        if value > self.value:
            self.value, self.epoch, self.steps, self.weights = value, epoch, steps, weights()
            return False
        return (
            steps - self.steps >= self.patience_steps and epoch - self.epoch >= self.patience_epochs
        )


def validation_ndcg(
    features: Features, split: Split, seqs: Sequences, max_len: int, users: int, head: str
) -> Callable[[SasrecNet], float] | None:
    """A function scoring a network's NDCG@10 on the validation events of a fixed sample of
    ``users`` users (0: all), or None when the split holds no validation events to stop on."""
    if len(split.validation) == 0:
        return None
    recent = last_windows(seqs, max_len)
    exclusions = TrainItems(features)  # built once: at 20M events it is a sort of the log

    def ndcg(model: SasrecNet) -> float:
        def score(user_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            rows = np.searchsorted(features.user_ids, user_ids)
            return score_sequences(model, recent[rows], head), features.item_ids

        ranked = rank_users(score, split, features, k=K, user_sample=users, exclusions=exclusions)
        return float(ranked.per_user_ndcg().mean())

    return ndcg
