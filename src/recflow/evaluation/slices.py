"""Leave-last-out metrics sliced by user activity, item popularity and genre.

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

import numpy as np

from recflow.evaluation.metrics import ranking_metrics
from recflow.evaluation.ranking import RankedUsers, rank_users
from recflow.types import Features

__all__ = ["RankedUsers", "activity_levels", "head_items", "rank_users", "sliced_metrics"]

HEAD_SHARE = 0.2
ACTIVITY_LEVELS = ("cold", "medium", "heavy")


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
