"""Per-user leave-last-out rankings and metrics sliced by user activity, item popularity, genre.

Slices (names as the gate's ``slice_floors`` use them):
    activity:cold / activity:medium / activity:heavy   terciles of the user's training events
                                                         (cold <= 1/3 quantile < medium <=
                                                         2/3 quantile < heavy)
    popularity:head / popularity:tail                  the held-out item is among the top 20 %
                                                         of catalogue items by training count
                                                         (ties broken by catalogue index) / not
    genre:<name>                                       the held-out item carries the genre (an
                                                         item with two genres is in both slices)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from recflow.errors import ConfigError, DataError
from recflow.evaluation.metrics import per_user_ndcg, ranking_metrics
from recflow.evaluation.ranking import STAGES, _CatalogueMap, _held_out, _TrainItems, top_k
from recflow.types import Features, ScoreFn, Split

HEAD_SHARE = 0.2
ACTIVITY_LEVELS = ("cold", "medium", "heavy")


@dataclass(frozen=True)
class RankedUsers:
    """Evaluated users (indices into ``features.user_ids``), their held-out item, their top-k."""

    users: np.ndarray  # [U] int64
    targets: np.ndarray  # [U] int64
    topk: np.ndarray  # [U, k] int64, -1 for "no item"
    k: int

    def metrics(self, n_items: int) -> dict[str, float]:
        """The same dict ``evaluate_scorer`` returns."""
        out = ranking_metrics(self.topk, self.targets, n_items, self.k)
        out["users"] = float(self.users.size)
        return out

    def per_user_ndcg(self) -> np.ndarray:
        return per_user_ndcg(self.topk, self.targets, self.k)


def rank_users(
    score_fn: ScoreFn,
    split: Split,
    features: Features,
    *,
    k: int,
    stage: str = "validation",
    batch_size: int = 1024,
) -> RankedUsers:
    """``evaluate_scorer``'s ranking (same users, exclusions and tie rule), kept per user."""
    if stage not in STAGES:
        raise ConfigError(f"stage: expected one of {STAGES}, found {stage!r}")
    if k < 1 or batch_size < 1:
        raise ConfigError(f"expected k >= 1 and batch_size >= 1, found k={k}, {batch_size=}")
    frame = split.validation if stage == "validation" else split.test
    users, targets = _held_out(frame, features, stage)
    if users.size == 0:
        raise DataError(
            f"no users to evaluate on {stage!r}: expected held-out rows for training users, "
            f"found none among {len(frame)} rows; check that users have at least 3 events"
        )
    also_excluded = None
    if stage == "test":
        val_users, val_items = _held_out(split.validation, features, "validation")
        by_user = np.full(features.n_users, -1, dtype=np.int64)
        by_user[val_users] = val_items
        also_excluded = by_user[users]
    exclusions = _TrainItems(features)
    catalogue = _CatalogueMap(features.item_ids)
    topk = np.empty((users.size, k), dtype=np.int64)
    for start in range(0, users.size, batch_size):
        batch = slice(start, start + batch_size)
        batch_users = users[batch]
        scores = catalogue.align(*score_fn(features.user_ids[batch_users]), len(batch_users))
        exclusions.mask(scores, batch_users)
        if also_excluded is not None:
            extra = also_excluded[batch]
            rows = np.flatnonzero(extra >= 0)
            scores[rows, extra[rows]] = -np.inf
        topk[batch] = top_k(scores, targets[batch], k)
    return RankedUsers(users, targets, topk, k)


def activity_levels(features: Features) -> np.ndarray:
    """[U] str: "cold", "medium" or "heavy" by terciles of training events per user."""
    counts = np.bincount(features.train_user_idx, minlength=features.n_users).astype(np.float64)
    q1, q2 = np.quantile(counts, [1 / 3, 2 / 3]) if counts.size else (0.0, 0.0)
    level = np.where(counts <= q1, 0, np.where(counts <= q2, 1, 2))
    return np.asarray(ACTIVITY_LEVELS)[level]


def head_items(features: Features, share: float = HEAD_SHARE) -> np.ndarray:
    """[N] bool: the top ``share`` of catalogue items by training count."""
    counts = np.bincount(features.train_item_idx, minlength=features.n_items)
    order = np.argsort(-counts, kind="stable")
    head = np.zeros(features.n_items, dtype=bool)
    head[order[: math.ceil(share * features.n_items)]] = True
    return head


def slice_masks(
    features: Features, users: np.ndarray, targets: np.ndarray
) -> dict[str, np.ndarray]:
    """Slice name -> bool mask over the evaluated users (empty slices are left out)."""
    masks: dict[str, np.ndarray] = {}
    levels = activity_levels(features)[users]
    for level in ACTIVITY_LEVELS:
        masks[f"activity:{level}"] = levels == level
    head = head_items(features)[targets]
    masks["popularity:head"], masks["popularity:tail"] = head, ~head
    for g, name in enumerate(features.genres):
        masks[f"genre:{name}"] = features.item_genres[targets, g] > 0
    return {name: m for name, m in masks.items() if m.any()}


def sliced_metrics(ranked: RankedUsers, features: Features) -> dict[str, dict[str, float]]:
    """Slice name -> metrics (as ``evaluate_scorer``, incl. ``users``) on that slice's users."""
    out = {}
    for name, mask in slice_masks(features, ranked.users, ranked.targets).items():
        m = ranking_metrics(ranked.topk[mask], ranked.targets[mask], features.n_items, ranked.k)
        m["users"] = float(mask.sum())
        out[name] = m
    return out
