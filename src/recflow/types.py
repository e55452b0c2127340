"""Data structures passed between pipeline stages (no behaviour beyond small helpers)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Dataset:
    """Canonical tables (see ``recflow.schema``)."""

    interactions: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame | None = None


@dataclass(frozen=True)
class Split:
    """Chronological leave-last-out split; validation/test hold one row per eligible user."""

    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame


@dataclass(frozen=True)
class Features:
    """Index maps and profile features, computed from training data only.

    Row i of every user array is user ``user_ids[i]``; row j of every item array is item
    ``item_ids[j]``. The catalogue is the item table (items without training events included).
    """

    user_ids: np.ndarray  # [U] str
    item_ids: np.ndarray  # [N] str
    item_titles: np.ndarray  # [N] str
    genres: tuple[str, ...]  # [G]
    train_user_idx: np.ndarray  # [T] int32: training interactions as indices
    train_item_idx: np.ndarray  # [T] int32
    user_genre_pref: np.ndarray  # [U, G] float32, each row sums to 1 (or 0 with no genres)
    user_activity: np.ndarray  # [U] float32, log1p(#train events) scaled to [0, 1]
    item_popularity: np.ndarray  # [N] float32, log1p(#train events) scaled to [0, 1]
    item_genres: np.ndarray  # [N, G] float32 multi-hot

    @property
    def n_users(self) -> int:
        return int(self.user_ids.shape[0])

    @property
    def n_items(self) -> int:
        return int(self.item_ids.shape[0])


# Model-agnostic scorer used by evaluation: user ids [B] -> (scores [B, N], catalogue ids [N]).
# Scores are raw (nothing excluded); unknown users must still get a row (e.g. popularity).
ScoreFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
