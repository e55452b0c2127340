"""MS Recommenders protocol: their stratified split reproduced, their metrics hand-checked."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from recflow.evaluation.protocols import (
    RelevantSets,
    evaluate_ms,
    ms_per_user,
    ms_stratified_split,
    top_k_unseen,
)
from recflow.features import build_features
from recflow.schema import GENRES, ITEM_ID, RATING, TIMESTAMP, TITLE, USER_ID


def _reference_split(df: pd.DataFrame, ratio: float, seed: int, col: str):
    """Their _do_stratification, step by step with pandas (random, sort, rank/count)."""
    data = df.copy()
    # Their np.random.seed(seed) + np.random.rand(n), as a local stream (the same numbers,
    # without touching numpy's global state for the other tests).
    data["random"] = np.random.RandomState(seed).rand(data.shape[0])
    data = data.sort_values([col, "random"])
    groups = data.groupby(col)
    data["rank"] = (groups.cumcount() + 1) / groups[col].transform("count")
    return set(data.index[data["rank"] <= ratio]), set(data.index[data["rank"] > ratio])


@pytest.mark.parametrize("filter_by", ["item", "user"])
def test_split_matches_their_algorithm_row_for_row(filter_by: str) -> None:
    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {
            USER_ID: rng.integers(0, 40, 800).astype(str),
            ITEM_ID: rng.integers(0, 60, 800).astype(str),
            RATING: 4.0,
            TIMESTAMP: np.arange(800),
        }
    )
    col = ITEM_ID if filter_by == "item" else USER_ID
    train, test = ms_stratified_split(df, filter_by=filter_by)
    ref_train, ref_test = _reference_split(df, 0.75, 42, col)
    assert set(train[TIMESTAMP]) == ref_train and set(test[TIMESTAMP]) == ref_test
    # 75 % per group (rounded down by the rank <= ratio rule): 4 ratings -> 3 train.
    counts = df.groupby(col).size()
    in_train = train.groupby(col).size().reindex(counts.index, fill_value=0)
    assert (in_train == np.floor(0.75 * counts + 1e-9)).all()


def test_metrics_against_hand_computed_values() -> None:
    # user 0: relevant {1, 5, 9}; ranking [1, 2, 5, 3] -> hits at ranks 1 and 3
    # user 1: relevant {4};       ranking [0, 2, 3, 7] -> no hit
    rel = RelevantSets(
        users=np.array([0, 1]), splits=np.array([0, 3, 4]), items=np.array([1, 5, 9, 4])
    )
    topk = np.array([[1, 2, 5, 3], [0, 2, 3, 7]])
    m = ms_per_user(topk, rel, k=4)
    np.testing.assert_allclose(m["precision@4"], [2 / 4, 0])
    np.testing.assert_allclose(m["recall@4"], [2 / 3, 0])
    dcg = 1 / math.log(2) + 1 / math.log(4)
    idcg = 1 / math.log(2) + 1 / math.log(3) + 1 / math.log(4)
    np.testing.assert_allclose(m["ndcg@4"], [dcg / idcg, 0])
    # MAP (their `map`): (1/1 + 2/3) / |relevant| = 3; map@k divides by min(3, k) = 3 too.
    np.testing.assert_allclose(m["map"], [(1 + 2 / 3) / 3, 0])
    m2 = ms_per_user(topk[:, :2], rel, k=2)
    np.testing.assert_allclose(m2["map"], [1 / 3, 0])
    np.testing.assert_allclose(m2["map@2"], [1 / 2, 0])  # min(|relevant|, k) = 2


def test_padding_never_hits_and_ties_go_by_index() -> None:
    scores = np.array([[0.5, 0.9, 0.5, -np.inf]])
    np.testing.assert_array_equal(top_k_unseen(scores, 5), [[1, 0, 2, -1, -1]])
    rel = RelevantSets(np.array([0]), np.array([0, 1]), np.array([3]))
    assert ms_per_user(np.array([[1, 0, 2, -1, -1]]), rel, 5)["recall@5"][0] == 0.0


def test_evaluate_excludes_training_items_and_skips_users_without_training() -> None:
    train = pd.DataFrame(
        {USER_ID: ["a", "a", "b"], ITEM_ID: ["i1", "i2", "i1"], RATING: 1.0, TIMESTAMP: 0}
    )
    test = pd.DataFrame({USER_ID: ["a", "b", "zz"], ITEM_ID: ["i3", "i2", "i1"]})
    items = pd.DataFrame(
        {ITEM_ID: ["i1", "i2", "i3"], TITLE: ["x", "y", "z"], GENRES: ["A", "A", "B"]}
    )
    f = build_features(train, items)

    def loves_seen_items(user_ids):
        return np.tile([3.0, 2.0, 1.0], (len(user_ids), 1)), f.item_ids

    metrics, per_user = evaluate_ms(loves_seen_items, test, f, k=1)
    assert metrics["users"] == 2  # "zz" has no training ratings
    # a: i1, i2 seen -> top-1 is i3 (hit); b: i1 seen -> top-1 is i2 (hit)
    np.testing.assert_allclose(per_user["precision@1"], [1.0, 1.0])
