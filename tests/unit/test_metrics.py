from __future__ import annotations

import math

import numpy as np
import pytest

from recflow.errors import ConfigError, DataError
from recflow.evaluation import per_user_ndcg, ranking_metrics

TOPK = np.array([[3, 1, 2], [0, 5, 6], [7, 8, 9]])
TARGET = np.array([1, 6, 4])  # ranks 2, 3, miss


def test_hand_computed_metrics() -> None:
    m = ranking_metrics(TOPK, TARGET, n_items=10, k=3)
    assert set(m) == {"hr@3", "ndcg@3", "mrr@3", "coverage@3"}
    assert m["hr@3"] == pytest.approx(2 / 3)
    assert m["ndcg@3"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(4)) / 3)
    assert m["mrr@3"] == pytest.approx((1 / 2 + 1 / 3) / 3)
    assert m["coverage@3"] == pytest.approx(9 / 10)


def test_only_the_first_k_columns_count() -> None:
    m = ranking_metrics(TOPK, TARGET, n_items=10, k=2)
    assert m["hr@2"] == pytest.approx(1 / 3)  # rank-3 hit of user 2 falls outside k=2
    assert m["ndcg@2"] == pytest.approx(1 / math.log2(3) / 3)
    assert m["coverage@2"] == pytest.approx(6 / 10)


def test_rank_one_hit_is_perfect() -> None:
    m = ranking_metrics(np.array([[4, 0], [2, 1]]), np.array([4, 2]), n_items=5, k=2)
    assert m == {"hr@2": 1.0, "ndcg@2": 1.0, "mrr@2": 1.0, "coverage@2": pytest.approx(4 / 5)}


def test_padding_never_hits_or_covers() -> None:
    m = ranking_metrics(np.array([[2, -1, -1], [-1, -1, -1]]), np.array([0, 1]), n_items=4, k=3)
    assert m["hr@3"] == 0.0 and m["coverage@3"] == pytest.approx(1 / 4)


def test_per_user_ndcg() -> None:
    np.testing.assert_allclose(per_user_ndcg(TOPK, TARGET, k=3), [1 / math.log2(3), 0.5, 0.0])
    mean = ranking_metrics(TOPK, TARGET, n_items=10, k=3)["ndcg@3"]
    assert per_user_ndcg(TOPK, TARGET, k=3).mean() == pytest.approx(mean)


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="k: expected >= 1"):
        ranking_metrics(TOPK, TARGET, 10, k=0)
    with pytest.raises(ValueError, match="at least k=4 columns"):
        ranking_metrics(TOPK, TARGET, 10, k=4)
    with pytest.raises(ValueError, match="expected topk_idx"):
        ranking_metrics(TOPK, TARGET[:2], 10, k=3)
    with pytest.raises(ValueError, match="target_idx >= 0"):
        ranking_metrics(TOPK, np.array([1, -1, 2]), 10, k=3)
    with pytest.raises(DataError, match="no users to evaluate"):
        ranking_metrics(np.zeros((0, 3), dtype=int), np.zeros(0, dtype=int), 10, k=3)
