from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recflow.errors import DataError, DataSourceError
from recflow.features import load_split, save_split, split_leave_last_out
from recflow.schema import ITEM_ID, RATING, TIMESTAMP, USER_ID


def frame(rows: list[tuple[str, str, int]]) -> pd.DataFrame:
    users, items, times = zip(*rows, strict=True)
    return pd.DataFrame(
        {
            USER_ID: pd.array(users, dtype="string"),
            ITEM_ID: pd.array(items, dtype="string"),
            RATING: pd.array([4.0] * len(rows), dtype="Float64"),
            TIMESTAMP: pd.array(times, dtype="Int64"),
        }
    )


def reference_split(df: pd.DataFrame) -> dict[str, set[int]]:
    """Row numbers per part, by a plain Python loop over users."""
    parts: dict[str, set[int]] = {"train": set(), "validation": set(), "test": set()}
    for _, group in df.groupby(USER_ID):
        rows = sorted(group.index, key=lambda i: (df.at[i, TIMESTAMP], i))
        if len(rows) < 3:
            parts["train"].update(rows)
            continue
        parts["train"].update(rows[:-2])
        parts["validation"].add(rows[-2])
        parts["test"].add(rows[-1])
    return parts


def test_last_event_is_test_second_last_validation_regardless_of_row_order() -> None:
    df = frame([("u", "c", 30), ("u", "e", 50), ("u", "a", 10), ("u", "d", 40), ("u", "b", 20)])
    split = split_leave_last_out(df)
    assert split.train[ITEM_ID].tolist() == ["a", "b", "c"]
    assert split.validation[ITEM_ID].tolist() == ["d"]
    assert split.test[ITEM_ID].tolist() == ["e"]


def test_equal_timestamps_are_ordered_by_position_in_the_source_log() -> None:
    df = frame([("u", "a", 10), ("u", "x", 99), ("u", "y", 99), ("u", "z", 99)])
    split = split_leave_last_out(df)
    assert split.test[ITEM_ID].tolist() == ["z"]
    assert split.validation[ITEM_ID].tolist() == ["y"]
    assert sorted(split.train[ITEM_ID].tolist()) == ["a", "x"]
    reversed_log = df.iloc[::-1].reset_index(drop=True)
    again = split_leave_last_out(reversed_log)
    assert again.test[ITEM_ID].tolist() == ["x"]
    assert again.validation[ITEM_ID].tolist() == ["y"]


def test_users_with_fewer_than_three_events_stay_in_train() -> None:
    df = frame([("a", "1", 1), ("a", "2", 2), ("b", "1", 1), ("c", "1", 1), ("c", "2", 2)])
    df = pd.concat([df, frame([("c", "3", 3)])], ignore_index=True)
    split = split_leave_last_out(df)
    assert split.validation[USER_ID].tolist() == ["c"]
    assert split.test[USER_ID].tolist() == ["c"]
    assert sorted(split.train[USER_ID].tolist()) == ["a", "a", "b", "c"]


def test_matches_a_per_user_reference_on_random_data_with_many_ties() -> None:
    rng = np.random.default_rng(5)
    n = 3000
    df = frame(
        list(
            zip(
                rng.integers(0, 200, n).astype(str).tolist(),
                rng.integers(0, 50, n).astype(str).tolist(),
                rng.integers(0, 6, n).tolist(),  # few distinct times: ties everywhere
                strict=True,
            )
        )
    )
    df["row"] = np.arange(n)
    split = split_leave_last_out(df)
    expected = reference_split(df)
    for part in ("train", "validation", "test"):
        assert set(getattr(split, part)["row"].tolist()) == expected[part]
    assert len(split.train) + len(split.validation) + len(split.test) == n
    assert split.validation[USER_ID].is_unique and split.test[USER_ID].is_unique
    assert list(split.train.columns) == list(df.columns)
    assert split.train[USER_ID].dtype == df[USER_ID].dtype


def test_missing_column_and_null_user_raise_data_error() -> None:
    with pytest.raises(DataError, match="missing \\['timestamp'\\]"):
        split_leave_last_out(frame([("u", "a", 1)]).drop(columns=[TIMESTAMP]))
    df = frame([("u", "a", 1), ("u", "b", 2)])
    df.loc[0, USER_ID] = pd.NA
    with pytest.raises(DataError, match="found 1 nulls"):
        split_leave_last_out(df)


def test_save_and_load_round_trip(tmp_path) -> None:
    df = frame([(u, str(i), i) for u in ("a", "b") for i in range(5)])
    split = split_leave_last_out(df)
    save_split(split, tmp_path / "split")
    loaded = load_split(tmp_path / "split")
    for part in ("train", "validation", "test"):
        pd.testing.assert_frame_equal(getattr(loaded, part), getattr(split, part))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    with pytest.raises(DataSourceError, match="re-run the split"):
        load_split(tmp_path / "nowhere")
