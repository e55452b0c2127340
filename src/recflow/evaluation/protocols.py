"""Two evaluation protocols: leave-last-out (primary) and Microsoft Recommenders' MovieLens one.

``leave-last-out``: each user's last event is held out, the whole catalogue is ranked minus
the user's training items; HR@k, NDCG@k, MRR@k (``recflow.evaluation.evaluate_scorer``).

``ms-recommenders``: the protocol of their MovieLens benchmark notebook
(examples/06_benchmarks/movielens.ipynb), so our numbers sit beside their published table:
    split    ``python_stratified_split(df, ratio=0.75, min_rating=1, filter_by="item", seed=42)``
             -- per ITEM, a random 75 % of its ratings train, the rest test (reproduced here
             draw for draw: legacy ``np.random.seed(42)`` + ``rand(n)`` over the rows in file
             order, ranked within each item);
    ranking  top-k over the items the user has not rated in training (``remove_seen``),
             for users with both training and test ratings, all ratings relevant;
    metrics  their ``python_evaluation`` definitions: Precision@k = hits/k; Recall@k =
             hits/|relevant|; nDCG@k binary with IDCG over min(|relevant|, k) positions; MAP =
             sum of precision at each hit rank / |relevant| (their ``map``; the published table
             was computed by ``map_at_k`` before 1.2.0, which normalised the same way -- the
             newer ``map_at_k`` divides by min(|relevant|, k) instead and is reported too).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from recflow.arrays import sorted_unique
from recflow.errors import ConfigError, DataError
from recflow.schema import ITEM_ID, USER_ID
from recflow.types import Features, ScoreFn

PROTOCOLS = ("leave-last-out", "ms-recommenders")
MS_RATIO = 0.75
MS_SEED = 42


def ms_stratified_split(
    interactions: pd.DataFrame,
    *,
    ratio: float = MS_RATIO,
    seed: int = MS_SEED,
    filter_by: str = "item",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, test) as MS Recommenders' ``python_stratified_split`` (rows in input order).

    Row order matters: the random key of row r is the r-th draw, as in their code.
    """
    if filter_by not in ("user", "item"):
        raise ConfigError(f"filter_by: expected 'user' or 'item', found {filter_by!r}")
    if not 0.0 < ratio < 1.0:
        raise ConfigError(f"ratio: expected in (0, 1), found {ratio}")
    col = USER_ID if filter_by == "user" else ITEM_ID
    df = interactions.reset_index(drop=True)
    key = np.random.RandomState(seed).rand(len(df))
    codes = pd.factorize(df[col])[0]
    order = np.lexsort((key, codes))
    counts = np.bincount(codes)
    sorted_codes = codes[order]
    first = np.cumsum(counts) - counts
    rank = np.empty(len(df), dtype=np.float64)
    rank[order] = (np.arange(len(df)) - first[sorted_codes] + 1) / counts[sorted_codes]
    in_train = rank <= ratio
    return df[in_train].reset_index(drop=True), df[~in_train].reset_index(drop=True)


@dataclass(frozen=True)
class RelevantSets:
    """Each evaluated user's relevant (test) items as CSR over catalogue indices."""

    users: np.ndarray  # [U] int64 indices into features.user_ids
    splits: np.ndarray  # [U+1] int64
    items: np.ndarray  # [R] int64

    def counts(self) -> np.ndarray:
        return np.diff(self.splits)


def relevant_sets(test: pd.DataFrame, features: Features) -> RelevantSets:
    """Test items per user known to ``features`` (users without training ratings are left out,
    as their evaluation keeps only users in both truth and predictions)."""
    u = pd.Index(features.user_ids).get_indexer(test[USER_ID].astype(str).to_numpy())
    i = pd.Index(features.item_ids).get_indexer(test[ITEM_ID].astype(str).to_numpy())
    if (i < 0).any():
        raise DataError(
            f"test split: expected items of the catalogue, found {int((i < 0).sum())} unknown; "
            "build features from the full item table"
        )
    keep = u >= 0
    keys = sorted_unique(u[keep].astype(np.int64) * features.n_items + i[keep])
    users_all, items = keys // features.n_items, keys % features.n_items
    users, counts = np.unique(users_all, return_counts=True)
    if users.size == 0:
        raise DataError("test split: expected test ratings of training users, found none")
    splits = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return RelevantSets(users.astype(np.int64), splits, items.astype(np.int64))


def top_k_unseen(scores: np.ndarray, k: int) -> np.ndarray:
    """[B, k] item indices by descending score (ties by index); -1 where the score is -inf."""
    n = scores.shape[1]
    kk = min(k, n)
    part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
    vals = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -vals), axis=-1)
    best = np.take_along_axis(part, order, axis=1)
    best[np.take_along_axis(vals, order, axis=1) == -np.inf] = -1
    # argpartition may cut a tie group arbitrarily; ties at the boundary are rare with real
    # scores and both sides are equally good, so only the order inside the top k is fixed.
    if kk < k:
        best = np.pad(best, ((0, 0), (0, k - kk)), constant_values=-1)
    return best


def ms_per_user(topk: np.ndarray, rel: RelevantSets, k: int) -> dict[str, np.ndarray]:
    """Per-user precision@k, recall@k, ndcg@k, map (by |relevant|) and map@k (by min(|rel|,k))."""
    n_users = rel.users.size
    if topk.shape[0] != n_users or topk.shape[1] < k:
        raise ValueError(f"expected topk [{n_users}, >={k}], found {topk.shape}")
    counts = rel.counts()
    # (row, item) pairs as one int64 key; base exceeds every item index (and -1 -> distinct).
    base = int(max(topk.max(initial=0), rel.items.max(initial=0))) + 2
    hit_keys = np.repeat(np.arange(n_users, dtype=np.int64), counts) * base + rel.items
    ranked = topk[:, :k]
    keys = np.arange(n_users, dtype=np.int64)[:, None] * base + ranked
    hits = np.isin(keys, hit_keys) & (ranked >= 0)
    ranks = np.arange(1, k + 1, dtype=np.float64)
    n_hits = hits.sum(axis=1)
    dcg = (hits / np.log(1.0 + ranks)).sum(axis=1)
    ideal = np.cumsum(1.0 / np.log(1.0 + ranks))[np.minimum(counts, k) - 1]
    prec_at_hits = (np.cumsum(hits, axis=1) / ranks * hits).sum(axis=1)
    return {
        f"precision@{k}": n_hits / k,
        f"recall@{k}": n_hits / counts,
        f"ndcg@{k}": dcg / ideal,
        "map": prec_at_hits / counts,
        f"map@{k}": prec_at_hits / np.minimum(counts, k),
    }


def evaluate_ms(
    score_fn: ScoreFn,
    test: pd.DataFrame,
    features: Features,
    *,
    k: int = 10,
    batch_size: int = 1024,
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """(mean metrics incl. ``users``, per-user arrays) under the MS Recommenders protocol.

    ``features`` must come from the protocol's training part; training items are excluded.
    """
    from recflow.evaluation.ranking import TrainItems, _CatalogueMap

    if k < 1:
        raise ConfigError(f"k: expected >= 1, found {k}")
    rel = relevant_sets(test, features)
    exclusions = TrainItems(features)
    catalogue = _CatalogueMap(features.item_ids)
    topk = np.empty((rel.users.size, k), dtype=np.int64)
    for start in range(0, rel.users.size, batch_size):
        batch_users = rel.users[start : start + batch_size]
        scores = catalogue.align(*score_fn(features.user_ids[batch_users]), len(batch_users))
        exclusions.mask(scores, batch_users)
        topk[start : start + batch_users.size] = top_k_unseen(scores, k)
    per_user = ms_per_user(topk, rel, k)
    metrics = {name: float(v.mean()) for name, v in per_user.items()}
    metrics["users"] = float(rel.users.size)
    return metrics, per_user
