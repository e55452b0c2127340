from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recflow.errors import DataError, DataSourceError
from recflow.features import (
    build_features,
    load_features,
    profile_tables,
    save_features,
    split_leave_last_out,
)
from recflow.schema import GENRES, ITEM_ID, TIMESTAMP, TITLE, USER_ID


def items_table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            ITEM_ID: pd.array(["i3", "i1", "i2", "i4"], dtype="string"),
            TITLE: pd.array(["Three", "One", "Two", None], dtype="string"),
            GENRES: pd.array(["Drama", "Action|Comedy", "", "Comedy"], dtype="string"),
        }
    )


def train_table(pairs: list[tuple[str, str]]) -> pd.DataFrame:
    users, items = zip(*pairs, strict=True)
    return pd.DataFrame(
        {USER_ID: pd.array(users, dtype="string"), ITEM_ID: pd.array(items, dtype="string")}
    )


PAIRS = [("ub", "i1"), ("ub", "i2"), ("ua", "i3"), ("ua", "i1"), ("ua", "i3"), ("ub", "i1")]


def test_index_maps_are_sorted_and_interactions_map_back_to_ids() -> None:
    f = build_features(train_table(PAIRS), items_table())
    assert f.user_ids.tolist() == ["ua", "ub"]
    assert f.item_ids.tolist() == ["i1", "i2", "i3", "i4"]  # i4: catalogue item without events
    assert f.item_titles.tolist() == ["One", "Two", "Three", ""]
    assert f.genres == ("Action", "Comedy", "Drama")
    assert f.train_user_idx.dtype == np.int32 and f.train_item_idx.dtype == np.int32
    back = list(zip(f.user_ids[f.train_user_idx], f.item_ids[f.train_item_idx], strict=True))
    assert back == PAIRS


def test_genre_preferences_activity_and_popularity_by_hand() -> None:
    f = build_features(train_table(PAIRS), items_table())
    np.testing.assert_array_equal(f.item_genres, [[1, 1, 0], [0, 0, 0], [0, 0, 1], [0, 1, 0]])
    # ua: i3, i1, i3 -> Drama 2, Action 1, Comedy 1 -> shares 1/4, 1/4, 2/4
    # ub: i1, i2, i1 -> Action 2, Comedy 2 (i2 has no genre) -> 1/2, 1/2, 0
    np.testing.assert_allclose(f.user_genre_pref, [[0.25, 0.25, 0.5], [0.5, 0.5, 0.0]])
    np.testing.assert_allclose(f.user_activity, [1.0, 1.0])  # both have 3 events
    counts = np.array([3, 1, 2, 0])
    np.testing.assert_allclose(f.item_popularity, np.log1p(counts) / np.log1p(3), rtol=1e-6)
    assert f.user_genre_pref.dtype == np.float32 and f.item_genres.dtype == np.float32


def test_user_without_genred_events_has_zero_preferences_and_lower_activity() -> None:
    f = build_features(
        train_table([("ua", "i2"), ("ub", "i1"), ("ub", "i3"), ("ub", "i4")]), items_table()
    )
    np.testing.assert_array_equal(f.user_genre_pref[0], [0, 0, 0])
    np.testing.assert_allclose(f.user_activity, [np.log1p(1) / np.log1p(3), 1.0], rtol=1e-6)


def test_features_use_training_events_only() -> None:
    rows = [("u", "i1", 1), ("u", "i2", 2), ("u", "i3", 3), ("u", "i4", 4)]
    df = pd.DataFrame(rows, columns=[USER_ID, ITEM_ID, TIMESTAMP])
    split = split_leave_last_out(df)
    f = build_features(split.train, items_table())
    # i3 (validation) and i4 (test) must not leak into popularity or preferences
    np.testing.assert_array_equal(f.item_popularity[2:], [0.0, 0.0])
    np.testing.assert_allclose(f.user_genre_pref, [[0.5, 0.5, 0.0]])


def test_user_order_is_numpy_string_order() -> None:
    """Users are indexed in the order np.unique gives their ids (code points), whatever the
    ids look like; every event maps back to its own user."""
    ids = ["b", "B", "a10", "a9", "a", "é", "Z", "ab", "a", "b", "ß"]
    pairs = [(u, f"i{1 + n % 4}") for n, u in enumerate(ids)]
    f = build_features(train_table(pairs), items_table())
    assert f.user_ids.tolist() == np.unique(np.array(ids, dtype=str)).tolist()
    assert f.user_ids[f.train_user_idx].tolist() == ids


def test_unknown_items_or_users_raise_with_count_and_examples() -> None:
    train = train_table([("ua", "i1"), ("ua", "zz"), ("ub", "zz"), ("ub", "yy")])
    with pytest.raises(DataError, match=r"3 rows with 2 unknown items \(e.g. \['yy', 'zz'\]\)"):
        build_features(train, items_table())
    users = pd.DataFrame({USER_ID: ["ua"]})
    with pytest.raises(DataError, match=r"3 rows with 1 unknown users \(e.g. \['ub'\]\)"):
        build_features(train_table(PAIRS), items_table(), users)
    build_features(train_table(PAIRS), items_table(), pd.DataFrame({USER_ID: ["ua", "ub"]}))


def test_duplicate_catalogue_ids_raise() -> None:
    items = pd.concat([items_table(), items_table().head(1)], ignore_index=True)
    with pytest.raises(DataError, match="deduplicate"):
        build_features(train_table(PAIRS), items)


def test_save_and_load_round_trip(tmp_path) -> None:
    f = build_features(train_table(PAIRS), items_table())
    save_features(f, tmp_path / "features")
    loaded = load_features(tmp_path / "features")
    assert loaded.genres == f.genres
    for name in (
        "user_ids",
        "item_ids",
        "item_titles",
        "train_user_idx",
        "train_item_idx",
        "user_genre_pref",
        "user_activity",
        "item_popularity",
        "item_genres",
    ):
        got, want = getattr(loaded, name), getattr(f, name)
        assert got.dtype == want.dtype, name
        np.testing.assert_array_equal(got, want)
    with pytest.raises(DataSourceError, match="re-run the features stage"):
        load_features(tmp_path / "missing")


def test_profile_tables(tmp_path) -> None:
    f = build_features(train_table(PAIRS), items_table())
    users, items = profile_tables(f)
    assert users[USER_ID].tolist() == ["ua", "ub"]
    assert users["history_length"].tolist() == [3, 3]
    assert users["top_genres"].tolist() == ["Drama|Action|Comedy", "Action|Comedy"]
    assert items[ITEM_ID].tolist() == ["i1", "i2", "i3", "i4"]
    assert items["popularity_count"].tolist() == [3, 1, 2, 0]
    assert items[GENRES].tolist() == ["Action|Comedy", "", "Drama", "Comedy"]
    users.to_parquet(tmp_path / "u.parquet")
    items.to_parquet(tmp_path / "i.parquet")
