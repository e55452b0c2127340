"""Top-k ranking metrics for one held-out item per user (vectorised over users)."""

from __future__ import annotations

import numpy as np

from recflow.errors import ConfigError, DataError


def _hit_ranks(topk_idx: np.ndarray, target_idx: np.ndarray, k: int) -> np.ndarray:
    """1-based rank of the target in each top-k row, 0 when it is absent."""
    if k < 1:
        raise ConfigError(f"k: expected >= 1, found {k}")
    topk = np.asarray(topk_idx)
    target = np.asarray(target_idx)
    if topk.ndim != 2 or target.ndim != 1 or topk.shape[0] != target.shape[0]:
        raise ValueError(
            f"expected topk_idx [U, >=k] and target_idx [U], found {topk.shape} and {target.shape}"
        )
    if topk.shape[1] < k:
        raise ValueError(f"expected at least k={k} columns in topk_idx, found {topk.shape[1]}")
    if (target < 0).any():
        raise ValueError("expected target_idx >= 0 (an item index), found negative entries")
    if target.shape[0] == 0:
        raise DataError("no users to evaluate: expected at least one held-out item, found none")
    hits = topk[:, :k] == target[:, None]
    # argmax finds the first hit; rows without a hit are zeroed by any().
    return np.where(hits.any(axis=1), hits.argmax(axis=1) + 1, 0)


def per_user_ndcg(topk_idx: np.ndarray, target_idx: np.ndarray, k: int) -> np.ndarray:
    """NDCG@k per user, [U] float64: 1/log2(rank+1) on a hit, else 0 (for bootstraps)."""
    ranks = _hit_ranks(topk_idx, target_idx, k)
    return np.where(ranks > 0, 1.0 / np.log2(np.maximum(ranks, 1) + 1.0), 0.0)


def ranking_metrics(
    topk_idx: np.ndarray, target_idx: np.ndarray, n_items: int, k: int
) -> dict[str, float]:
    """HR, NDCG, MRR and catalogue coverage at k.

    ``topk_idx`` [U, >=k] holds item indices best first (only the first k columns count);
    negative entries mean "no item" (fewer than k rankable items) and never hit or cover.
    ``target_idx`` [U] holds each user's single held-out item.
    """
    ranks = _hit_ranks(topk_idx, target_idx, k)
    hit = ranks > 0
    safe = np.maximum(ranks, 1)
    recommended = np.unique(np.asarray(topk_idx)[:, :k])
    n_covered = int((recommended >= 0).sum())
    return {
        f"hr@{k}": float(hit.mean()),
        f"ndcg@{k}": float(np.where(hit, 1.0 / np.log2(safe + 1.0), 0.0).mean()),
        f"mrr@{k}": float(np.where(hit, 1.0 / safe, 0.0).mean()),
        f"coverage@{k}": n_covered / n_items if n_items > 0 else 0.0,
    }
