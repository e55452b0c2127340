"""Reference scorers: the popularity baseline the gate compares against, and a broken one."""

from __future__ import annotations

import zlib

import numpy as np

from recflow.types import Features, ScoreFn


def popularity_scorer(features: Features) -> ScoreFn:
    """Score every item by its number of training events, the same row for every user.

    Unknown users are fine (they get the same row). Exact counts rather than the scaled
    ``item_popularity`` so that ties are only true ties.
    """
    counts = np.bincount(features.train_item_idx, minlength=features.n_items).astype(np.float32)
    catalogue = features.item_ids.copy()

    def score(user_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.tile(counts, (len(user_ids), 1)), catalogue

    return score


def random_scorer(features: Features, seed: int) -> ScoreFn:
    """Uniform random scores, e.g. to check that the gate rejects a broken model.

    Deterministic for a given seed and batch of user ids, whatever was scored before.
    """
    catalogue = features.item_ids.copy()
    n_items = features.n_items

    def score(user_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        batch_key = zlib.crc32("\x1f".join(map(str, user_ids)).encode("utf-8"))
        rng = np.random.default_rng([seed, batch_key])
        return rng.random((len(user_ids), n_items), dtype=np.float32), catalogue

    return score
