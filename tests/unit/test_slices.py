"""Per-user rankings agree with evaluate_scorer; slices are the documented groups."""

from __future__ import annotations

import numpy as np
import pytest

from recflow.config import SyntheticConfig
from recflow.data import generate_synthetic
from recflow.evaluation import evaluate_scorer, popularity_scorer, random_scorer
from recflow.evaluation.slices import activity_levels, head_items, rank_users, sliced_metrics
from recflow.features import build_features, split_leave_last_out


@pytest.fixture(scope="module")
def data():
    ds = generate_synthetic(SyntheticConfig(n_users=120, n_items=80, seed=5))
    split = split_leave_last_out(ds.interactions)
    return split, build_features(split.train, ds.items)


@pytest.mark.parametrize("stage", ["validation", "test"])
def test_rank_users_reproduces_evaluate_scorer(data, stage: str) -> None:
    split, f = data
    # Random scores depend on the batch of users, so that one uses the same batch size.
    for scorer, batch in ((popularity_scorer(f), 37), (random_scorer(f, seed=3), 1024)):
        ranked = rank_users(scorer, split, f, k=10, stage=stage, batch_size=batch)
        assert ranked.metrics(f.n_items) == evaluate_scorer(scorer, split, f, k=10, stage=stage)
        assert ranked.per_user_ndcg().mean() == pytest.approx(ranked.metrics(f.n_items)["ndcg@10"])


def test_activity_terciles_and_head_share(data) -> None:
    _, f = data
    levels = activity_levels(f)
    counts = np.bincount(f.train_user_idx, minlength=f.n_users)
    assert counts[levels == "cold"].max() < counts[levels == "heavy"].min()
    assert counts[levels == "cold"].max() <= counts[levels == "medium"].min()
    head = head_items(f)
    assert head.sum() == int(np.ceil(0.2 * f.n_items))
    item_counts = np.bincount(f.train_item_idx, minlength=f.n_items)
    assert item_counts[head].min() >= item_counts[~head].max()


def test_slice_metrics_are_metrics_of_the_slice_users(data) -> None:
    split, f = data
    ranked = rank_users(popularity_scorer(f), split, f, k=10)
    slices = sliced_metrics(ranked, f)
    total = ranked.users.size
    act = [slices[f"activity:{x}"]["users"] for x in ("cold", "medium", "heavy")]
    assert sum(act) == total
    assert slices["popularity:head"]["users"] + slices["popularity:tail"]["users"] == total
    # Popularity favours head items: its head slice hits far more often than its tail.
    assert slices["popularity:head"]["hr@10"] > 2 * slices["popularity:tail"]["hr@10"]
    genre = f.genres[0]
    mask = f.item_genres[ranked.targets, 0] > 0
    assert slices[f"genre:{genre}"]["users"] == mask.sum()
    # A user-weighted mean of the activity slices is the overall metric.
    weighted = (
        sum(
            slices[f"activity:{x}"]["ndcg@10"] * n
            for x, n in zip(("cold", "medium", "heavy"), act, strict=True)
        )
        / total
    )
    assert weighted == pytest.approx(ranked.metrics(f.n_items)["ndcg@10"])
