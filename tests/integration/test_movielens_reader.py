"""The MovieLens-100K reader against the real data set (skipped where it is not installed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from recflow import schema
from recflow.data import read_movielens_100k

ML100K = Path(os.environ.get("RECFLOW_ML100K", "/work/shared/datasets/movielens-100k"))

pytestmark = pytest.mark.skipif(
    not (ML100K / "u.data").is_file(), reason=f"MovieLens-100K not found at {ML100K}"
)


def test_real_movielens_100k() -> None:
    ds = read_movielens_100k(ML100K)
    df = ds.interactions
    assert len(df) == 100_000
    assert df[schema.USER_ID].nunique() == 943
    assert df[schema.ITEM_ID].nunique() == 1682
    assert len(ds.items) == 1682
    assert not df.isna().any().any() and not ds.items.isna().any().any()
    assert set(df[schema.RATING].unique()) == {1.0, 2.0, 3.0, 4.0, 5.0}
    items = ds.items.set_index(schema.ITEM_ID)
    assert items.loc["1", schema.TITLE] == "Toy Story (1995)"
    assert items.loc["1", schema.GENRES] == "Animation|Children's|Comedy"
    assert items.loc["543", schema.TITLE] == "Misérables, Les (1995)"  # Latin-1
    assert ds.users is not None and len(ds.users) == 943
