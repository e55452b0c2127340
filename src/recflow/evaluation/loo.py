"""Leave-one-out test scoring from a score table, in two variants.

``ours``   the test input is the training history (the validation item withheld); training
           and validation items are excluded from the ranking (:func:`rank_users`).
``peers``  RecBole's default sequential evaluation: the test input is the training history
           plus the validation item (the caller builds the table from that input); full
           ranking. RecBole masks the history (training + validation items) only for
           non-sequential models (``mask_history``); sequential models rank every item.

Both return the evaluated users' ids and per-user HR@k, NDCG@k and MRR@k, with the same tie
rule as :func:`recflow.evaluation.ranking.top_k` (ties never favour the held-out item).
"""

from __future__ import annotations

import numpy as np

from recflow.evaluation.ranking import TrainItems, held_out_pairs, rank_users, top_k
from recflow.types import Features, ScoreFn, Split


def table_scorer(features: Features, table: np.ndarray) -> ScoreFn:
    """A scorer answering rows of ``table`` [U, N] (features' user and item order)."""
    if table.shape != (features.n_users, features.n_items):
        raise ValueError(
            f"expected a score table of shape ({features.n_users}, {features.n_items}), "
            f"found {table.shape}"
        )

    def score(user_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return table[np.searchsorted(features.user_ids, user_ids)], features.item_ids

    return score


def per_user_metrics(topk: np.ndarray, targets: np.ndarray, k: int) -> dict[str, np.ndarray]:
    hits = topk[:, :k] == targets[:, None]
    hit = hits.any(axis=1)
    rank = hits.argmax(axis=1) + 1
    return {
        f"hr@{k}": hit.astype(np.float64),
        f"ndcg@{k}": np.where(hit, 1.0 / np.log2(rank + 1.0), 0.0),
        f"mrr@{k}": np.where(hit, 1.0 / rank, 0.0),
    }


def ours_test(
    score_fn: ScoreFn, split: Split, features: Features, k: int
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(user ids, per-user metrics) on the test events, validation item withheld and masked."""
    ranked = rank_users(score_fn, split, features, k=k, stage="test")
    return features.user_ids[ranked.users].astype(str), per_user_metrics(
        ranked.topk, ranked.targets, k
    )


def validation_items(split: Split, features: Features) -> tuple[np.ndarray, np.ndarray]:
    """(user index, item index) of each evaluated user's validation event."""
    return held_out_pairs(split.validation, features, "validation")


def with_validation_item(x: np.ndarray, split: Split, features: Features) -> np.ndarray:
    """The binary input rows [U, N] plus each user's validation item (the peers' input)."""
    users, items = validation_items(split, features)
    out = np.array(x, dtype=np.float32, copy=True)
    out[users, items] = 1.0
    return out


def peers_test(
    table: np.ndarray, split: Split, features: Features, k: int, *, mask_history: bool
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(user ids, per-user metrics) of the peers' variant from a table scored on its input."""
    users, targets = held_out_pairs(split.test, features, "test")
    scores = np.array(table[users], dtype=np.float64, copy=True)
    scores[np.isnan(scores)] = -np.inf
    if mask_history:
        TrainItems(features).mask(scores, users)
        v_users, v_items = validation_items(split, features)
        row = np.full(features.n_users, -1, dtype=np.int64)
        row[users] = np.arange(users.size)
        keep = row[v_users] >= 0
        scores[row[v_users][keep], v_items[keep]] = -np.inf
    topk = top_k(scores, targets, k)
    return features.user_ids[users].astype(str), per_user_metrics(topk, targets, k)
