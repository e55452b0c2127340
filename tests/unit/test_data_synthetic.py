from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from recflow import schema
from recflow.config import SyntheticConfig
from recflow.data import generate_synthetic, synthetic_truth
from recflow.data.synthetic import AGE_GROUPS, END_TIMESTAMP, GENRE_NAMES, SPAN_SECONDS
from recflow.errors import ConfigError

CFG = SyntheticConfig()  # 400 users x 250 items, the pipeline default


@pytest.fixture(scope="module")
def ds():
    return generate_synthetic(CFG)


def _index(ids: pd.Series) -> np.ndarray:
    return ids.astype(int).to_numpy() - 1  # synthetic ids are "1".."n"


def test_deterministic_per_seed(tiny_synthetic_config: SyntheticConfig) -> None:
    a = generate_synthetic(tiny_synthetic_config)
    b = generate_synthetic(tiny_synthetic_config)
    pd.testing.assert_frame_equal(a.interactions, b.interactions)
    pd.testing.assert_frame_equal(a.items, b.items)
    c = generate_synthetic(dataclasses.replace(tiny_synthetic_config, seed=4))
    assert not a.interactions.equals(c.interactions)
    t1, t2 = synthetic_truth(tiny_synthetic_config), synthetic_truth(tiny_synthetic_config)
    np.testing.assert_array_equal(t1.user_taste, t2.user_taste)


def test_canonical_tables(ds) -> None:
    df = ds.interactions
    assert list(df.columns) == list(schema.INTERACTION_COLUMNS)
    assert df.dtypes.astype(str).to_dict() == schema.INTERACTION_DTYPES
    assert ds.items.dtypes.astype(str).to_dict() == schema.ITEM_DTYPES
    assert not df.isna().any().any() and not ds.items.isna().any().any()
    assert not df.duplicated([schema.USER_ID, schema.ITEM_ID]).any()
    assert set(df[schema.RATING].unique()) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    assert set(df[schema.ITEM_ID]) <= set(ds.items[schema.ITEM_ID])
    assert ds.users is not None and len(ds.users) == CFG.n_users
    assert set(ds.users["age_group"]) <= set(AGE_GROUPS)


def test_event_counts(ds) -> None:
    counts = ds.interactions.groupby(schema.USER_ID).size()
    assert len(counts) == CFG.n_users
    assert counts.min() >= 5 and counts.max() <= CFG.n_items
    assert abs(counts.mean() - CFG.mean_events_per_user) < 0.2 * CFG.mean_events_per_user
    assert counts.std() > 5  # activity varies between users
    capped = generate_synthetic(SyntheticConfig(n_users=20, n_items=10, mean_events_per_user=400))
    assert (capped.interactions.groupby(schema.USER_ID).size() == 10).all()


def test_timestamps_increase_within_a_user_over_a_year(ds) -> None:
    df = ds.interactions
    ts = df[schema.TIMESTAMP]
    assert ts.max() <= END_TIMESTAMP and ts.min() >= END_TIMESTAMP - SPAN_SECONDS
    steps = ts.groupby(df[schema.USER_ID]).diff().dropna()
    assert (steps >= 0).all()
    assert (steps > 0).mean() > 0.5
    assert ts.max() - ts.min() > 300 * 86400


def test_items_have_one_or_two_genres_and_titles(ds) -> None:
    truth = synthetic_truth(CFG)
    n_genres = truth.item_genres.sum(axis=1)
    assert set(np.unique(n_genres)) == {1, 2}
    assert truth.genres == GENRE_NAMES[: CFG.n_genres]
    for iid, title, genres, row in zip(
        ds.items[schema.ITEM_ID], ds.items[schema.TITLE], ds.items[schema.GENRES],
        truth.item_genres, strict=True,
    ):  # fmt: skip
        names = genres.split(schema.GENRE_SEPARATOR)
        assert names == [truth.genres[g] for g in np.flatnonzero(row)]
        assert title == f"Item {iid} ({names[0]})"
    assert synthetic_truth(SyntheticConfig(n_genres=20)).genres[-1] == "Genre 20"


def test_truth_shapes_and_long_tail() -> None:
    truth = synthetic_truth(CFG)
    assert truth.user_taste.shape == (CFG.n_users, CFG.n_genres)
    np.testing.assert_allclose(truth.user_taste.sum(axis=1), 1.0)
    np.testing.assert_allclose(truth.item_popularity.sum(), 1.0)
    top_decile = np.sort(truth.item_popularity)[::-1][: CFG.n_items // 10].sum()
    assert top_decile > 0.4  # Zipf-like: a few items carry much of the weight
    # Concentrated tastes: most users put over half of their taste on their top two genres.
    top2 = np.sort(truth.user_taste, axis=1)[:, -2:].sum(axis=1)
    assert np.median(top2) > 0.6


def test_ratings_follow_taste_match(ds) -> None:
    truth = synthetic_truth(CFG)
    df = ds.interactions
    u, i = _index(df[schema.USER_ID]), _index(df[schema.ITEM_ID])
    in_top = truth.item_genres[i, truth.user_top_genre[u]]
    rating = df[schema.RATING].to_numpy(dtype=float)
    assert rating[in_top].mean() - rating[~in_top].mean() > 1.0


def test_planted_tastes_are_learnable_on_held_out_last_events(ds) -> None:
    truth = synthetic_truth(CFG)
    df = ds.interactions
    last = df.groupby(schema.USER_ID, sort=False).tail(1)  # rows are in time order per user
    u, i = _index(last[schema.USER_ID]), _index(last[schema.ITEM_ID])
    top = truth.user_top_genre[u]
    held_out_share = truth.item_genres[i, top].mean()
    # What popularity alone predicts: the share of all events in that genre.
    genre_share = truth.item_genres[_index(df[schema.ITEM_ID])].mean(axis=0)
    baseline = genre_share[top].mean()
    assert held_out_share > 1.8 * baseline, (held_out_share, baseline)


def test_invalid_config() -> None:
    with pytest.raises(ConfigError, match="synthetic_users: expected >= 10, found 0"):
        generate_synthetic(SyntheticConfig(n_users=0))


def test_large_sizes_point_to_the_streaming_generator() -> None:
    with pytest.raises(ConfigError, match=r"recflow\.data\.stream"):
        generate_synthetic(SyntheticConfig(n_users=100_000, n_items=20_000))
