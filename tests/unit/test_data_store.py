from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from recflow import schema
from recflow.config import SyntheticConfig
from recflow.data import Dataset, dataset_digest, generate_synthetic, read_dataset, write_dataset
from recflow.errors import DataError, DataSourceError


@pytest.fixture()
def ds(tiny_synthetic_config: SyntheticConfig) -> Dataset:
    return generate_synthetic(tiny_synthetic_config)


def _with_nulls() -> Dataset:
    inter = pd.DataFrame(
        {
            schema.USER_ID: ["1", None],
            schema.ITEM_ID: ["a", "b"],
            schema.RATING: [None, 4.0],
            schema.TIMESTAMP: [5, None],
        }
    ).astype(schema.INTERACTION_DTYPES)
    items = pd.DataFrame({schema.ITEM_ID: ["a"], schema.TITLE: ["A"], schema.GENRES: [""]})
    return Dataset(interactions=inter, items=items.astype(schema.ITEM_DTYPES))


def test_round_trip_restores_tables_and_digest(tmp_path: Path, ds: Dataset) -> None:
    folder = tmp_path / "run" / "data"
    write_dataset(ds, folder)
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [schema.INTERACTIONS_FILE, schema.ITEMS_FILE, schema.USERS_FILE]
    )
    back = read_dataset(folder)
    pd.testing.assert_frame_equal(back.interactions, ds.interactions)
    pd.testing.assert_frame_equal(back.items, ds.items)
    assert back.users is not None and ds.users is not None
    assert back.users[schema.USER_ID].tolist() == ds.users[schema.USER_ID].tolist()
    assert dataset_digest(back) == dataset_digest(ds)


def test_nulls_survive_and_users_are_optional(tmp_path: Path) -> None:
    original = _with_nulls()
    write_dataset(original, tmp_path / "d")
    assert not (tmp_path / "d" / schema.USERS_FILE).exists()
    back = read_dataset(tmp_path / "d")
    assert back.users is None
    assert back.interactions.dtypes.astype(str).to_dict() == schema.INTERACTION_DTYPES
    assert back.interactions.isna().sum().tolist() == [1, 0, 1, 1]


def test_rewrite_replaces_and_failed_write_leaves_old_content(tmp_path: Path, ds: Dataset) -> None:
    folder = tmp_path / "data"
    write_dataset(ds, folder)
    write_dataset(_with_nulls(), folder)  # a rerun replaces the folder, users file included
    assert not (folder / schema.USERS_FILE).exists()
    assert len(read_dataset(folder).interactions) == 2

    bad = Dataset(interactions=ds.interactions.assign(rating="abc"), items=ds.items)
    with pytest.raises(DataError, match="could not convert"):
        write_dataset(bad, folder)
    assert len(read_dataset(folder).interactions) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["data"]  # no scratch folders left


def test_crash_mid_write_leaves_no_folder(
    tmp_path: Path, ds: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"n": 0}
    real = pd.DataFrame.to_parquet

    def flaky(self: pd.DataFrame, path: Path, *args: object, **kwargs: object) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        real(self, path, *args, **kwargs)

    monkeypatch.setattr(pd.DataFrame, "to_parquet", flaky)
    with pytest.raises(OSError, match="disk full"):
        write_dataset(ds, tmp_path / "data")
    assert list(tmp_path.iterdir()) == []


def test_read_errors(tmp_path: Path, ds: Dataset) -> None:
    with pytest.raises(DataSourceError, match="expected a dataset folder"):
        read_dataset(tmp_path / "nowhere")
    write_dataset(ds, tmp_path / "d")
    (tmp_path / "d" / schema.ITEMS_FILE).unlink()
    with pytest.raises(DataSourceError, match=r"items\.parquet"):
        read_dataset(tmp_path / "d")
    (tmp_path / "d" / schema.ITEMS_FILE).write_bytes(b"garbage")
    with pytest.raises(DataSourceError, match="could not read"):
        read_dataset(tmp_path / "d")
    pd.DataFrame({"x": [1]}).to_parquet(tmp_path / "d" / schema.ITEMS_FILE)
    with pytest.raises(DataSourceError, match="missing"):
        read_dataset(tmp_path / "d")


def test_missing_columns_refused_on_write(tmp_path: Path, ds: Dataset) -> None:
    bad = Dataset(interactions=ds.interactions.drop(columns=[schema.TIMESTAMP]), items=ds.items)
    with pytest.raises(DataError, match=r"missing \['timestamp'\]"):
        write_dataset(bad, tmp_path / "d")


def test_digest_is_stable_and_sensitive(ds: Dataset) -> None:
    base = dataset_digest(ds)
    assert len(base) == 64 and base == dataset_digest(ds)
    copy = Dataset(ds.interactions.copy(), ds.items.copy(), ds.users.copy())  # type: ignore[union-attr]
    assert dataset_digest(copy) == base

    def changed(table: str, column: str, value: object) -> str:
        frames = {"interactions": ds.interactions.copy(), "items": ds.items.copy()}
        frames[table].loc[3, column] = value
        return dataset_digest(Dataset(frames["interactions"], frames["items"], ds.users))

    variants = {
        changed("interactions", schema.RATING, 0.5),
        changed("interactions", schema.RATING, pd.NA),
        changed("interactions", schema.TIMESTAMP, 1),
        changed("interactions", schema.USER_ID, "zzz"),
        changed("items", schema.TITLE, "Other"),
        changed("items", schema.GENRES, ""),
        dataset_digest(Dataset(ds.interactions, ds.items, None)),
        dataset_digest(Dataset(ds.interactions.iloc[::-1], ds.items, ds.users)),
    }
    assert base not in variants and len(variants) == 8
    # Moving characters between neighbouring strings must change it too.
    a = Dataset(ds.interactions, ds.items.assign(title=["ab", "c"] + ["x"] * (len(ds.items) - 2)))
    b = Dataset(ds.interactions, ds.items.assign(title=["a", "bc"] + ["x"] * (len(ds.items) - 2)))
    assert dataset_digest(a) != dataset_digest(b)
