"""Full ranking at scale: bounded chunks, and a fixed user sample with its interval."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import recflow.evaluation.ranking as ranking
from recflow.evaluation.ranking import chunk_users, rank_users, sample_users
from recflow.features import build_features, split_leave_last_out
from recflow.schema import GENRES, ITEM_ID, TIMESTAMP, TITLE, USER_ID
from recflow.types import Features, Split


def random_problem(n_users: int, n_items: int, n_events: int = 800) -> tuple[Split, Features]:
    rng = np.random.default_rng(0)
    events = pd.DataFrame(
        {
            USER_ID: [f"u{u:03d}" for u in rng.integers(0, n_users, n_events)],
            ITEM_ID: [f"i{i:03d}" for i in rng.integers(0, n_items, n_events)],
            TIMESTAMP: rng.integers(0, 50, n_events),
        }
    ).drop_duplicates([USER_ID, ITEM_ID])
    items = pd.DataFrame({ITEM_ID: [f"i{i:03d}" for i in range(n_items)], TITLE: "t", GENRES: ""})
    split = split_leave_last_out(events)
    return split, build_features(split.train, items)


def table_scorer(table: np.ndarray, features: Features):
    row = {u: i for i, u in enumerate(features.user_ids)}
    return lambda ids: (table[[row[u] for u in ids]], features.item_ids)


def test_chunks_stay_under_the_cell_budget_at_any_catalogue_size() -> None:
    assert chunk_users(1_000) == 1024  # small catalogues: the requested batch
    for n_items in (50_000, 1_000_000, 10_000_000):
        assert 1 <= chunk_users(n_items) * n_items <= max(ranking.MAX_CHUNK_CELLS, n_items)


def test_small_chunks_give_the_same_ranking(monkeypatch) -> None:
    split, f = random_problem(n_users=60, n_items=40)
    table = np.random.default_rng(3).normal(size=(f.n_users, f.n_items))
    whole = rank_users(table_scorer(table, f), split, f, k=5)
    monkeypatch.setattr(ranking, "MAX_CHUNK_CELLS", 3 * f.n_items)  # 3 users a chunk
    calls: list[tuple[int, int]] = []
    chunked = rank_users(
        table_scorer(table, f), split, f, k=5, progress=lambda d, t: calls.append((d, t))
    )
    np.testing.assert_array_equal(whole.topk, chunked.topk)
    assert calls[0] == (3, whole.users.size) and calls[-1] == (whole.users.size,) * 2


def test_user_sample_is_fixed_and_carries_its_interval() -> None:
    split, f = random_problem(n_users=200, n_items=30, n_events=3_000)
    rng = np.random.default_rng(4)
    a = rank_users(table_scorer(rng.normal(size=(f.n_users, f.n_items)), f), split, f, k=5,
                   user_sample=50)  # fmt: skip
    b = rank_users(table_scorer(rng.normal(size=(f.n_users, f.n_items)), f), split, f, k=5,
                   user_sample=50)  # fmt: skip
    np.testing.assert_array_equal(a.users, b.users)  # candidate and champion: same users
    m = a.metrics(f.n_items)
    assert m["users"] == 50 and m["sampled_from"] > 50
    ndcg = a.per_user_ndcg()
    n, pop = 50, m["sampled_from"]
    expected = 1.959964 * ndcg.std(ddof=1) / np.sqrt(n) * np.sqrt((pop - n) / (pop - 1))
    assert m["ndcg@5.sample_halfwidth"] == pytest.approx(expected)
    assert m["hr@5.sample_halfwidth"] > 0
    full = rank_users(table_scorer(np.zeros((f.n_users, f.n_items)), f), split, f, k=5)
    assert "sampled_from" not in full.metrics(f.n_items)


def test_sample_of_everyone_is_everyone() -> None:
    users = np.arange(10, 20)
    np.testing.assert_array_equal(sample_users(users, 0), np.arange(10))
    np.testing.assert_array_equal(sample_users(users, 10), np.arange(10))
    assert sample_users(users, 4).size == 4
