"""recflow.validation: a clean dataset passes; each planted fault fails on the right expectation."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from recflow.config import ValidationConfig
from recflow.errors import ValidationFailed
from recflow.schema import GENRES, ITEM_ID, RATING, TIMESTAMP, TITLE, USER_ID
from recflow.types import Dataset
from recflow.validation import ValidationReport, validate_dataset

NOW = 1_700_000_000
N_USERS, N_ITEMS, PER_USER = 40, 30, 12
CFG = ValidationConfig(min_users=30, min_items=20, min_interactions=400, sample_rows=3)


def _clean() -> Dataset:
    rng = np.random.default_rng(0)
    users, items = [], []
    for u in range(N_USERS):
        users += [f"u{u}"] * PER_USER
        items += [f"i{i}" for i in rng.choice(N_ITEMS, PER_USER, replace=False)]
    n = len(users)
    interactions = pd.DataFrame(
        {
            USER_ID: pd.array(users, dtype="string"),
            ITEM_ID: pd.array(items, dtype="string"),
            RATING: pd.array(rng.integers(1, 6, n).astype(float), dtype="Float64"),
            TIMESTAMP: pd.array(NOW - 10_000_000 + rng.integers(0, 9_000_000, n), dtype="Int64"),
        }
    )
    item_table = pd.DataFrame(
        {
            ITEM_ID: pd.array([f"i{i}" for i in range(N_ITEMS)], dtype="string"),
            TITLE: pd.array([f"Title {i}" for i in range(N_ITEMS)], dtype="string"),
            GENRES: pd.array(["Drama|Comedy"] * N_ITEMS, dtype="string"),
        }
    )
    user_table = pd.DataFrame(
        {USER_ID: pd.array([f"u{u}" for u in range(N_USERS)], dtype="string")}
    )
    return Dataset(interactions, item_table, user_table)


@pytest.fixture()
def clean() -> Dataset:
    return _clean()


_KEEP: Any = object()


def _with(
    ds: Dataset, *, interactions: Any = _KEEP, items: Any = _KEEP, users: Any = _KEEP
) -> Dataset:
    return Dataset(
        ds.interactions if interactions is _KEEP else interactions,
        ds.items if items is _KEEP else items,
        ds.users if users is _KEEP else users,
    )


def _set(ds: Dataset, row: int, column: str, value: Any) -> Dataset:
    inter = ds.interactions.copy()
    inter.loc[row, column] = value
    return _with(ds, interactions=inter)


def _duplicate_event(ds: Dataset) -> Dataset:
    inter = pd.concat([ds.interactions, ds.interactions.iloc[[7]]], ignore_index=True)
    return _with(ds, interactions=inter)


def _few_users(ds: Dataset) -> Dataset:
    # Same rows and timestamps (no duplicates created), but only 10 distinct users.
    inter = ds.interactions.copy()
    inter[USER_ID] = pd.array([f"u{i % 10}" for i in range(len(inter))], dtype="string")
    return _with(ds, interactions=inter, users=None)


def _string_ratings(ds: Dataset) -> Dataset:
    inter = ds.interactions.copy()
    inter[RATING] = pd.Series([f"{v} stars" for v in inter[RATING]], dtype=object)
    return _with(ds, interactions=inter)


def _duplicate_item(ds: Dataset) -> Dataset:
    return _with(ds, items=pd.concat([ds.items, ds.items.iloc[[4]]], ignore_index=True))


def _null_user_row(ds: Dataset) -> Dataset:
    assert ds.users is not None
    users = ds.users.copy()
    users.loc[2, USER_ID] = pd.NA
    return _with(ds, users=users)


# name -> (fault, table, expectation, column, rows that must be among the sample rows or None
# when the expectation is table-level and has no rows to show)
FAULTS: dict[str, tuple[Callable[[Dataset], Dataset], str, str, str | None, list[int] | None]] = {
    "null user id": (
        lambda d: _set(d, 3, USER_ID, pd.NA),
        "interactions",
        "expect_column_values_to_not_be_null",
        USER_ID,
        [3],
    ),
    "rating out of range": (
        lambda d: _set(d, 5, RATING, 7.0),
        "interactions",
        "expect_column_values_to_be_between",
        RATING,
        [5],
    ),
    "duplicate event": (
        _duplicate_event,
        "interactions",
        "expect_compound_columns_to_be_unique",
        f"{USER_ID},{ITEM_ID},{TIMESTAMP}",
        [7, N_USERS * PER_USER],
    ),
    "timestamp in the future": (
        lambda d: _set(d, 9, TIMESTAMP, NOW + 2 * 86400),
        "interactions",
        "expect_column_values_to_be_between",
        TIMESTAMP,
        [9],
    ),
    "timestamp before 1990": (
        lambda d: _set(d, 11, TIMESTAMP, 86400),
        "interactions",
        "expect_column_values_to_be_between",
        TIMESTAMP,
        [11],
    ),
    "item missing from item table": (
        lambda d: _set(d, 13, ITEM_ID, "ghost"),
        "interactions",
        "expect_column_values_to_be_in_set",
        ITEM_ID,
        [13],
    ),
    "too few users": (
        _few_users,
        "interactions",
        "expect_column_unique_value_count_to_be_between",
        USER_ID,
        None,
    ),
    "missing column": (
        lambda d: _with(d, interactions=d.interactions.drop(columns=[RATING])),
        "interactions",
        "expect_table_columns_to_match_set",
        None,
        None,
    ),
    "non-numeric rating": (
        _string_ratings,
        "interactions",
        "expect_column_values_to_be_in_type_list",
        RATING,
        [0, 1, 2],
    ),
    "duplicate item id": (
        _duplicate_item,
        "items",
        "expect_column_values_to_be_unique",
        ITEM_ID,
        [4, N_ITEMS],
    ),
    "null id in user table": (
        _null_user_row,
        "users",
        "expect_column_values_to_not_be_null",
        USER_ID,
        [2],
    ),
}


def test_clean_dataset_passes_without_network(
    clean: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"validation tried to open a network connection: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)

    report = validate_dataset(clean, CFG, tmp_path / "docs", now=NOW)

    assert isinstance(report, ValidationReport)
    assert report.success
    stats = report.statistics
    assert stats["rows"] == N_USERS * PER_USER
    assert stats["users"] == N_USERS
    assert stats["items"] == len(set(clean.interactions[ITEM_ID]))
    assert stats["expectations_evaluated"] == len(report.results) > 20
    assert stats["expectations_failed"] == 0
    assert {r["table"] for r in report.results} == {"interactions", "items", "users"}
    assert all(r["success"] for r in report.results)
    assert Path(report.data_docs_index).is_file()
    json.dumps(report.to_dict())  # must be loggable as is


def test_rerun_in_same_docs_dir_and_pandas_default_dtypes(clean: Dataset, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    validate_dataset(clean, CFG, docs, now=NOW)
    # pandas 3's default `str` dtype and plain int64/float64, as a CSV reader may produce them.
    inter = clean.interactions.astype({USER_ID: "str", ITEM_ID: "str", RATING: "float64"})
    inter[TIMESTAMP] = inter[TIMESTAMP].astype("int64")
    items = clean.items.astype({ITEM_ID: "str", TITLE: "str", GENRES: "str"})
    report = validate_dataset(Dataset(inter, items), CFG, docs, now=NOW)
    assert report.success
    assert {r["table"] for r in report.results} == {"interactions", "items"}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_planted_fault_fails_on_the_right_expectation(
    fault: str, clean: Dataset, tmp_path: Path
) -> None:
    plant, table, expectation, column, rows = FAULTS[fault]
    docs = tmp_path / "docs"

    with pytest.raises(ValidationFailed) as info:
        validate_dataset(plant(clean), CFG, docs, now=NOW)

    err = info.value
    matching = [
        f
        for f in err.failures
        if (f["table"], f["expectation"], f["column"]) == (table, expectation, column)
    ]
    assert matching, f"{fault}: expected a failure of {expectation} on {table}.{column}: {err}"
    failure = matching[0]
    assert set(failure) >= {"table", "expectation", "column", "expected", "observed", "sample_rows"}
    sampled = [s["row"] for s in failure["sample_rows"]]
    if rows is None:
        assert sampled == []
    else:
        assert set(rows) <= set(sampled)
        assert len(sampled) <= CFG.sample_rows
    message = str(err)
    assert expectation in message and "Fix the source data" in message
    assert err.data_docs is not None and Path(err.data_docs).is_file()
    assert err.data_docs.endswith("index.html")
    json.dumps(err.failures)


def test_message_lists_every_failure_with_rows(clean: Dataset, tmp_path: Path) -> None:
    ds = _set(_set(clean, 5, RATING, 9.5), 3, USER_ID, pd.NA)
    with pytest.raises(ValidationFailed) as info:
        validate_dataset(ds, CFG, tmp_path / "docs", now=NOW)
    err = info.value
    assert len(err.failures) == 2
    message = str(err)
    assert "interactions.rating: expect_column_values_to_be_between" in message
    assert "interactions.user_id: expect_column_values_to_not_be_null" in message
    assert "9.5" in message and "'row': 3" in message
    assert "max_value" in message


def test_import_is_light() -> None:
    # DAG files import recflow at parse time: pandas and GX must wait until validation runs.
    import subprocess
    import sys

    code = (
        "import sys, recflow.validation\n"
        "heavy = [m for m in ('pandas', 'great_expectations') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_unreadable_values_are_reported_as_such_not_as_nulls(
    clean: Dataset, tmp_path: Path
) -> None:
    """Issue 13: text in the rating column was reported as "50 nulls"."""
    from recflow.data import read_dataset, read_table, write_dataset

    inter = clean.interactions.astype(object).copy()
    bad = list(range(0, 100, 2))  # 50 rows
    inter.loc[bad, RATING] = ["abc", "five"] * 25
    inter.loc[[1], RATING] = None  # and one that is simply empty
    inter.to_csv(tmp_path / "events.csv", index=False)
    clean.items.to_csv(tmp_path / "items.csv", index=False)
    ds = read_table(tmp_path / "events.csv", items_path=tmp_path / "items.csv")
    write_dataset(ds, tmp_path / "data")  # as ingest does; validate reads the run folder
    with pytest.raises(ValidationFailed) as info:
        validate_dataset(read_dataset(tmp_path / "data"), CFG, tmp_path / "docs", now=NOW)
    message = str(info.value)
    assert "interactions.rating: 50 values are not numbers, e.g. 'abc', 'five'" in message
    assert "1 more are empty" in message
    assert "found 51 of" not in message
    [failure] = info.value.failures
    assert failure["unreadable"]["count"] == 50
