"""Each user's training items in chronological order, and the windows SASRec reads.

Item ids are shifted by one so that 0 pads; sequences are left-padded, so the most recent
item always sits at the last position, which is the state serving reads.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from recflow.errors import TrainingError
from recflow.schema import ITEM_ID, RATING, TIMESTAMP, USER_ID
from recflow.types import Features

PAD = 0


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
    from recflow.models.sasrec.sqn import rewards_from_ratings

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
