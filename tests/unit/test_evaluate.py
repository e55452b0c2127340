from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recflow.errors import ConfigError, ContractError, DataError
from recflow.evaluation import evaluate_scorer, popularity_scorer, random_scorer, ranking_metrics
from recflow.evaluation.ranking import top_k
from recflow.features import build_features, split_leave_last_out
from recflow.schema import GENRES, ITEM_ID, TIMESTAMP, TITLE, USER_ID
from recflow.types import Features, Split


def random_problem(
    n_users: int = 40, n_items: int = 30, n_events: int = 500, seed: int = 0
) -> tuple[Split, Features]:
    rng = np.random.default_rng(seed)
    events = pd.DataFrame(
        {
            USER_ID: [f"u{u:03d}" for u in rng.integers(0, n_users, n_events)],
            ITEM_ID: [f"i{i:03d}" for i in rng.integers(0, n_items, n_events)],
            TIMESTAMP: rng.integers(0, 50, n_events),
        }
    ).drop_duplicates([USER_ID, ITEM_ID])
    items = pd.DataFrame(
        {ITEM_ID: [f"i{i:03d}" for i in range(n_items)], TITLE: "t", GENRES: "Drama"}
    )
    split = split_leave_last_out(events)
    return split, build_features(split.train, items)


def table_scorer(table: np.ndarray, features: Features):
    """Scores from a fixed [U, N] table, by user id (for brute-force comparisons)."""
    row = {u: i for i, u in enumerate(features.user_ids)}

    def score(user_ids: np.ndarray):
        return table[[row[u] for u in user_ids]], features.item_ids

    return score


def brute_force(
    table: np.ndarray, split: Split, f: Features, k: int, stage: str
) -> dict[str, float]:
    """Per-user Python loop with the documented rules, as a reference."""
    frame = split.validation if stage == "validation" else split.test
    item_pos = {i: j for j, i in enumerate(f.item_ids)}
    val_item = dict(zip(split.validation[USER_ID], split.validation[ITEM_ID], strict=True))
    topk, targets = [], []
    for ui, user in enumerate(f.user_ids):
        held = frame.loc[frame[USER_ID] == user, ITEM_ID]
        if held.empty:
            continue
        target = item_pos[held.iloc[0]]
        seen = set(f.train_item_idx[f.train_user_idx == ui].tolist())
        if stage == "test":
            seen.add(item_pos[val_item[user]])
        cands = [j for j in range(f.n_items) if j not in seen and np.isfinite(table[ui, j])]
        cands.sort(key=lambda j: (-table[ui, j], f.n_items if j == target else j))
        topk.append((cands[:k] + [-1] * k)[:k])
        targets.append(target)
    m = ranking_metrics(np.array(topk), np.array(targets), f.n_items, k)
    m["users"] = float(len(targets))
    return m


@pytest.mark.parametrize("stage", ["validation", "test"])
@pytest.mark.parametrize("batch_size", [1, 7, 1024])
def test_matches_brute_force_with_heavy_ties(stage: str, batch_size: int) -> None:
    split, f = random_problem()
    rng = np.random.default_rng(1)
    table = rng.integers(0, 3, (f.n_users, f.n_items)).astype(np.float32)  # many ties
    table[rng.random(table.shape) < 0.05] = np.nan  # NaN counts as -inf
    got = evaluate_scorer(table_scorer(table, f), split, f, k=5, stage=stage, batch_size=batch_size)
    want = brute_force(table, split, f, k=5, stage=stage)
    assert got == pytest.approx(want)
    assert got["users"] == split.validation[USER_ID].isin(f.user_ids).sum() > 0


def test_constant_scorer_gets_no_credit_from_ties() -> None:
    split, f = random_problem()

    def constant(user_ids: np.ndarray):
        return np.ones((len(user_ids), f.n_items), dtype=np.float32), f.item_ids

    m = evaluate_scorer(constant, split, f, k=5)
    assert m["hr@5"] == 0.0 and m["ndcg@5"] == 0.0


def test_top_k_orders_ties_by_index_with_the_target_last() -> None:
    scores = np.array([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0], [0.0, 2.0, 1.0, 2.0]])
    got = top_k(scores, np.array([0, 3, 1]), k=2)
    np.testing.assert_array_equal(got, [[1, 2], [0, 1], [3, 1]])
    masked = np.array([[-np.inf, 3.0, -np.inf]])
    np.testing.assert_array_equal(top_k(masked, np.array([0]), k=4), [[1, -1, -1, -1]])


def test_training_items_are_excluded_so_a_history_echo_cannot_hide_the_target() -> None:
    split, f = random_problem()
    table = np.zeros((f.n_users, f.n_items), dtype=np.float32)
    table[f.train_user_idx, f.train_item_idx] = 10.0  # a model that just repeats history
    target = pd.Index(f.item_ids).get_indexer(split.validation[ITEM_ID])
    rows = pd.Index(f.user_ids).get_indexer(split.validation[USER_ID])
    table[rows, target] = 5.0
    m = evaluate_scorer(table_scorer(table, f), split, f, k=1)
    assert m["hr@1"] == 1.0 and m["ndcg@1"] == 1.0 and m["mrr@1"] == 1.0


def test_test_stage_also_excludes_the_validation_item() -> None:
    split, f = random_problem()
    table = np.zeros((f.n_users, f.n_items), dtype=np.float32)
    for part, value in ((split.validation, 9.0), (split.test, 8.0)):
        rows = pd.Index(f.user_ids).get_indexer(part[USER_ID])
        table[rows, pd.Index(f.item_ids).get_indexer(part[ITEM_ID])] = value
    assert evaluate_scorer(table_scorer(table, f), split, f, k=1, stage="test")["hr@1"] == 1.0
    assert evaluate_scorer(table_scorer(table, f), split, f, k=1, stage="validation")["hr@1"] == 1.0


def test_scorer_catalogue_is_mapped_by_id() -> None:
    split, f = random_problem()
    base = popularity_scorer(f)
    perm = np.random.default_rng(2).permutation(f.n_items)

    def shuffled(user_ids: np.ndarray):
        scores, ids = base(user_ids)
        extra = np.array(["not-in-catalogue"])
        return (
            np.hstack([scores[:, perm], np.full((len(user_ids), 1), 1e9)]),
            np.concatenate([ids[perm], extra]).astype(bytes),  # SavedModels return bytes
        )

    assert evaluate_scorer(shuffled, split, f, k=5) == evaluate_scorer(base, split, f, k=5)

    def partial(user_ids: np.ndarray):  # knows only the first half: the rest is never ranked
        scores, ids = base(user_ids)
        half = f.n_items // 2
        return scores[:, :half] + 1.0, ids[:half]

    m = evaluate_scorer(partial, split, f, k=5)
    assert m["coverage@5"] <= (f.n_items // 2) / f.n_items


def test_only_users_known_to_features_are_evaluated() -> None:
    split, f = random_problem()
    extra = pd.DataFrame({USER_ID: ["stranger"], ITEM_ID: [f.item_ids[0]], TIMESTAMP: [1]})
    widened = Split(split.train, pd.concat([split.validation, extra]), split.test)
    m = evaluate_scorer(popularity_scorer(f), widened, f, k=5)
    assert m["users"] == len(split.validation)


def test_popularity_scorer_ranks_by_training_count_for_any_user() -> None:
    split, f = random_problem()
    scores, ids = popularity_scorer(f)(np.array(["unknown-user", f.user_ids[0]]))
    counts = np.bincount(f.train_item_idx, minlength=f.n_items)
    np.testing.assert_array_equal(scores[0], counts)
    np.testing.assert_array_equal(scores[1], counts)
    np.testing.assert_array_equal(ids, f.item_ids)


def test_random_scorer_is_deterministic_per_seed() -> None:
    _, f = random_problem()
    users = f.user_ids[:4]
    a, _ = random_scorer(f, 3)(users)
    b, _ = random_scorer(f, 3)(users)
    c, _ = random_scorer(f, 4)(users)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_bad_scorers_and_arguments_raise() -> None:
    split, f = random_problem()
    with pytest.raises(ConfigError, match="stage"):
        evaluate_scorer(popularity_scorer(f), split, f, k=5, stage="train")

    def dup(user_ids):
        return np.zeros((len(user_ids), 2)), np.array([f.item_ids[0], f.item_ids[0]])

    def wrong_shape(user_ids):
        return np.zeros((len(user_ids), 3)), f.item_ids

    def foreign(user_ids):
        return np.zeros((len(user_ids), 2)), np.array(["x", "y"])

    for scorer, msg in ((dup, "duplicates"), (wrong_shape, "shape"), (foreign, "found none")):
        with pytest.raises(ContractError, match=msg):
            evaluate_scorer(scorer, split, f, k=5)
    empty = Split(split.train, split.validation.iloc[0:0], split.test)
    with pytest.raises(DataError, match="no users to evaluate"):
        evaluate_scorer(popularity_scorer(f), empty, f, k=5)
