from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from recflow import schema
from recflow.config import DataConfig, SyntheticConfig
from recflow.data import load_source, read_movielens_1m, read_movielens_100k, read_table
from recflow.errors import ConfigError, DataSourceError

GENRES = ["unknown", "Action", "Comedy", "Drama"]


def _flags(*on: str) -> str:
    return "|".join("1" if g in on else "0" for g in GENRES)


def write_ml100k(folder: Path, ratings: list[str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = ratings or ["1\t10\t4\t881250949", "1\t20\t3\t881250950", "2\t10\t5\t881250951"]
    (folder / "u.data").write_text("\n".join(rows) + "\n")
    (folder / "u.genre").write_text("".join(f"{g}|{i}\n" for i, g in enumerate(GENRES)) + "\n")
    items = [
        f"10|Toy Story (1995)|01-Jan-1995||http://x|{_flags('Comedy')}",
        f"20|Misérables, Les (1995)|01-Jan-1995||http://y|{_flags('Action', 'Drama')}",
        f"30|Nothing (1999)|01-Jan-1999||http://z|{_flags()}",
    ]
    (folder / "u.item").write_bytes(("\n".join(items) + "\n").encode("latin-1"))
    (folder / "u.user").write_text("1|24|M|technician|85711\n2|53|F|other|94043\n")
    return folder


def write_ml1m(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ratings.dat").write_text("1::1193::5::978300760\n1::661::abc::978302109\n")
    movies = [
        "1193::One Flew Over the Cuckoo's Nest (1975)::Drama",
        "661::Star Wars: Episode IV:::Action|Sci-Fi",  # title ending in ':'
        "3::Café (2000)::",
    ]
    (folder / "movies.dat").write_bytes(("\n".join(movies) + "\n").encode("latin-1"))
    (folder / "users.dat").write_text("1::F::1::10::48067\n")
    return folder


def test_movielens_100k_canonical_tables(tmp_path: Path) -> None:
    ds = read_movielens_100k(write_ml100k(tmp_path / "ml"))
    assert list(ds.interactions.columns) == list(schema.INTERACTION_COLUMNS)
    assert ds.interactions.dtypes.astype(str).to_dict() == schema.INTERACTION_DTYPES
    assert ds.interactions[schema.USER_ID].tolist() == ["1", "1", "2"]
    assert ds.interactions[schema.RATING].tolist() == [4.0, 3.0, 5.0]
    assert ds.interactions[schema.TIMESTAMP].tolist() == [881250949, 881250950, 881250951]
    items = ds.items.set_index(schema.ITEM_ID)
    assert items.loc["20", schema.TITLE] == "Misérables, Les (1995)"  # Latin-1 decoded
    assert items.loc["20", schema.GENRES] == "Action|Drama"
    assert items.loc["30", schema.GENRES] == ""
    assert ds.users is not None
    assert ds.users[schema.USER_ID].tolist() == ["1", "2"]
    assert ds.users["age"].tolist() == [24, 53]


def test_bad_values_are_kept_as_nulls_not_dropped(tmp_path: Path) -> None:
    rows = ["1\t10\tabc\t881250949", "\t20\t3\t881250950", "2\t10\t5\tsoon", "2\t20\t4.5\t1.5"]
    ds = read_movielens_100k(write_ml100k(tmp_path / "ml", rows))
    df = ds.interactions
    assert len(df) == 4
    assert df[schema.RATING].isna().tolist() == [True, False, False, False]
    assert df[schema.USER_ID].isna().tolist() == [False, True, False, False]
    assert df[schema.TIMESTAMP].isna().tolist() == [False, False, True, True]
    assert df[schema.RATING].iloc[3] == 4.5


def test_bad_genre_flag_gives_null_genres(tmp_path: Path) -> None:
    folder = write_ml100k(tmp_path / "ml")
    (folder / "u.item").write_text("10|T (1995)|d||u|0|x|0|0\n20|U (1995)|d||u|0|1|0|0\n")
    ds = read_movielens_100k(folder)
    assert ds.items[schema.GENRES].isna().tolist() == [True, False]


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    folder = write_ml100k(tmp_path / "ml")
    (folder / "u.data").unlink()
    with pytest.raises(DataSourceError, match=r"u\.data.*found nothing"):
        read_movielens_100k(folder)


@pytest.mark.parametrize(
    "content, found",
    [
        ("1,10,4,881250949\n", "found 1"),  # wrong separator
        ("1\t10\t4\t881250949\n1\t10\t4\t881250949\t7\n", "fields"),  # extra field
        ("", "empty"),
    ],
)
def test_unparsable_structure_raises(tmp_path: Path, content: str, found: str) -> None:
    folder = write_ml100k(tmp_path / "ml")
    (folder / "u.data").write_text(content)
    with pytest.raises(DataSourceError, match=found):
        read_movielens_100k(folder)


def test_movielens_1m(tmp_path: Path) -> None:
    ds = read_movielens_1m(write_ml1m(tmp_path / "ml1m"))
    df = ds.interactions
    assert df.dtypes.astype(str).to_dict() == schema.INTERACTION_DTYPES
    assert df[schema.ITEM_ID].tolist() == ["1193", "661"]
    assert df[schema.RATING].isna().tolist() == [False, True]  # "abc" kept as null
    items = ds.items.set_index(schema.ITEM_ID)
    assert items.loc["661", schema.TITLE] == "Star Wars: Episode IV:"
    assert items.loc["661", schema.GENRES] == "Action|Sci-Fi"
    assert items.loc["3", schema.TITLE] == "Café (2000)"
    assert items.loc["3", schema.GENRES] == ""
    assert ds.users is not None and ds.users["zip_code"].tolist() == ["48067"]


def test_movielens_1m_malformed_movie_line(tmp_path: Path) -> None:
    folder = write_ml1m(tmp_path / "ml1m")
    (folder / "movies.dat").write_text("1193|Title|Drama\n")
    with pytest.raises(DataSourceError, match="MovieID::Title::Genres"):
        read_movielens_1m(folder)


def _items_csv(tmp_path: Path, id_column: str = "item_id") -> Path:
    # column_mapping applies to every file: the item id column has one name in both.
    path = tmp_path / "items.csv"
    path.write_text(f"{id_column},name,genres\nA,Alpha,Drama|Comedy\nB,Beta,\n")
    return path


def test_read_table_csv_mapping_iso_timestamps_and_implicit_rating(tmp_path: Path) -> None:
    events = tmp_path / "events.csv"
    events.write_text(
        "uid,item,when,extra\n"
        "7,A,2024-01-01T00:00:00Z,x\n"
        "8,B,1704067201,y\n"
        " ,A,2024-01-01 01:00:00+01:00,z\n"
        "9,B,not a time,w\n"
    )
    ds = read_table(
        events,
        items_path=_items_csv(tmp_path, "item"),
        column_mapping={"user_id": "uid", "item_id": "item", "timestamp": "when", "title": "name"},
    )
    df = ds.interactions
    assert list(df.columns) == list(schema.INTERACTION_COLUMNS)
    assert df.dtypes.astype(str).to_dict() == schema.INTERACTION_DTYPES
    assert df[schema.USER_ID].tolist()[:2] == ["7", "8"]
    assert df[schema.USER_ID].isna().tolist() == [False, False, True, False]
    assert df[schema.TIMESTAMP].tolist()[:3] == [1704067200, 1704067201, 1704067200]
    assert df[schema.TIMESTAMP].isna().tolist() == [False, False, False, True]
    assert df[schema.RATING].tolist() == [1.0] * 4
    assert ds.items[schema.GENRES].tolist() == ["Drama|Comedy", ""]
    assert ds.items[schema.TITLE].tolist() == ["Alpha", "Beta"]


def test_read_table_keeps_bad_rating_as_null(tmp_path: Path) -> None:
    events = tmp_path / "events.csv"
    events.write_text("user_id,item_id,rating,timestamp\n1,A,abc,5\n1,B,4,6\n")
    ds = read_table(events, items_path=_items_csv(tmp_path), column_mapping={"title": "name"})
    assert ds.interactions[schema.RATING].isna().tolist() == [True, False]
    assert len(ds.interactions) == 2


def test_read_table_parquet_with_numeric_ids_and_users(tmp_path: Path) -> None:
    events = tmp_path / "events.parquet"
    pd.DataFrame(
        {
            "user_id": [1, 2],
            "item_id": [10.0, None],
            "rating": [3, 4],
            "timestamp": pd.to_datetime(["2024-01-01", "2024-01-02"]),
        }
    ).to_parquet(events)
    items = tmp_path / "items.parquet"
    pd.DataFrame({"item_id": [10], "title": ["Ten"]}).to_parquet(items)
    users = tmp_path / "users.parquet"
    pd.DataFrame({"age": [30, 40], "user_id": [1, 2]}).to_parquet(users)
    ds = read_table(events, items_path=items, users_path=users)
    df = ds.interactions
    assert df[schema.USER_ID].tolist() == ["1", "2"]
    assert df[schema.ITEM_ID].iloc[0] == "10" and pd.isna(df[schema.ITEM_ID].iloc[1])
    assert df[schema.TIMESTAMP].tolist() == [1704067200, 1704153600]
    assert ds.items[schema.ITEM_ID].tolist() == ["10"]
    assert ds.items[schema.GENRES].tolist() == [""]
    assert ds.users is not None
    assert list(ds.users.columns) == ["user_id", "age"]
    assert ds.users[schema.USER_ID].tolist() == ["1", "2"]


def test_read_table_structural_errors(tmp_path: Path) -> None:
    items = _items_csv(tmp_path)
    events = tmp_path / "events.csv"
    events.write_text("user,item_id,timestamp\n1,A,5\n")
    with pytest.raises(DataSourceError, match=r"expected a column 'user_id'.*column_mapping"):
        read_table(events, items_path=items, column_mapping={"title": "name"})
    with pytest.raises(DataSourceError, match=r"maps 'rating' to 'stars'.*no such column"):
        read_table(
            events,
            items_path=items,
            column_mapping={"user_id": "user", "title": "name", "rating": "stars"},
        )
    with pytest.raises(DataSourceError, match="expected keys among"):
        read_table(events, items_path=items, column_mapping={"usr": "user"})
    odd = tmp_path / "events.json"
    odd.write_text("{}")
    with pytest.raises(DataSourceError, match="cannot tell the format"):
        read_table(odd, items_path=items)
    with pytest.raises(DataSourceError, match="looks like csv"):
        read_table(events, items_path=items, file_format="parquet")
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet")
    with pytest.raises(DataSourceError, match="could not read"):
        read_table(broken, items_path=items)
    with pytest.raises(DataSourceError, match="found nothing"):
        read_table(tmp_path / "missing.csv", items_path=items)


def test_load_source_dispatch(tmp_path: Path) -> None:
    ds = load_source(
        DataConfig(source="synthetic", synthetic=SyntheticConfig(n_users=10, n_items=20))
    )
    assert ds.interactions[schema.USER_ID].nunique() == 10
    ml = write_ml100k(tmp_path / "ml")
    ds = load_source(DataConfig(source="movielens-100k", path=str(ml)))
    assert len(ds.interactions) == 3
    events = tmp_path / "events.csv"
    events.write_text("user_id,item_id,timestamp\n1,A,5\n")
    cfg = DataConfig(
        source="csv",
        path=str(events),
        items_path=str(_items_csv(tmp_path)),
        column_mapping={"title": "name"},
    )
    assert load_source(cfg).interactions[schema.ITEM_ID].tolist() == ["A"]
    # refused where the config is built, before any reader runs
    with pytest.raises(ConfigError, match="items_path is required"):
        DataConfig(source="csv", path=str(events))
    with pytest.raises(ConfigError, match="data_path is required"):
        DataConfig(source="movielens-1m")
    with pytest.raises(ConfigError, match="data_source: expected one of"):
        DataConfig(source="xlsx", path="x")


def test_unreadable_values_are_recorded_with_examples(tmp_path: Path) -> None:
    """Text in a numeric column is kept as null, and what the text was is kept beside it."""
    from recflow.data import read_dataset, write_dataset
    from recflow.data.canonical import UNREADABLE_ATTR

    events = tmp_path / "events.csv"
    lines = ["user_id,item_id,rating,timestamp", "1,A,abc,5", "1,B,4,6", "2,A,five,7",
             "2,B,,8", "3,A,abc,yesterday", "3,B,x@example.com,9"]  # fmt: skip
    events.write_text("\n".join(lines) + "\n")
    ds = read_table(events, items_path=_items_csv(tmp_path), column_mapping={"title": "name"})
    found = ds.interactions.attrs[UNREADABLE_ATTR]
    # the empty rating is a plain null, not an unreadable value; an email is never shown
    assert found[schema.RATING] == {
        "count": 4,
        "expected": "numbers",
        "examples": ["abc", "five", "<withheld: looks like email>"],
        "rows": [0, 2, 4, 5],
    }
    assert found[schema.TIMESTAMP]["examples"] == ["yesterday"]
    assert found[schema.TIMESTAMP]["expected"] == "unix seconds or ISO-8601 times"
    # the record survives the run folder (parquet tables + a side file)
    write_dataset(ds, tmp_path / "data")
    assert read_dataset(tmp_path / "data").interactions.attrs[UNREADABLE_ATTR] == found


def test_clean_files_record_nothing_unreadable(tmp_path: Path) -> None:
    from recflow.data import read_dataset, write_dataset
    from recflow.data.canonical import UNREADABLE_ATTR
    from recflow.data.store import UNREADABLE_FILE

    ds = read_movielens_100k(write_ml100k(tmp_path / "ml"))
    assert UNREADABLE_ATTR not in ds.interactions.attrs
    write_dataset(ds, tmp_path / "data")
    assert not (tmp_path / "data" / UNREADABLE_FILE).exists()
    assert UNREADABLE_ATTR not in read_dataset(tmp_path / "data").interactions.attrs


def write_generated_ml1m(folder: Path, n_users: int = 30, n_items: int = 40, seed: int = 0) -> Path:
    """A generated MovieLens-1M folder: '::' fields, Latin-1 titles with ':' inside."""
    import numpy as np

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for u in range(1, n_users + 1):
        items = rng.choice(n_items, size=8, replace=False) + 1
        for t, i in enumerate(items):
            lines.append(f"{u}::{i}::{rng.integers(1, 6)}::{978300000 + 10 * t}")
    (folder / "ratings.dat").write_text("\n".join(lines) + "\n")
    movies = [f"{i}::Café n°{i}: Part {i % 3}: (1999)::Drama|Comedy" for i in range(1, n_items + 1)]
    (folder / "movies.dat").write_bytes(("\n".join(movies) + "\n").encode("latin-1"))
    users = [f"{u}::F::25::4::12345" for u in range(1, n_users + 1)]
    (folder / "users.dat").write_text("\n".join(users) + "\n")
    return folder


def test_read_movielens_folder_by_layout(tmp_path: Path) -> None:
    from recflow.data.movielens import read_movielens_folder

    one_m = read_movielens_folder(write_generated_ml1m(tmp_path / "ml1m"))
    assert len(one_m.interactions) == 30 * 8
    assert one_m.interactions[schema.USER_ID].nunique() == 30
    titles = one_m.items.set_index(schema.ITEM_ID)[schema.TITLE]
    assert titles.loc["7"] == "Café n°7: Part 1: (1999)"  # Latin-1 decoded, ':' kept
    assert one_m.users is not None and len(one_m.users) == 30
    hundred_k = read_movielens_folder(write_ml100k(tmp_path / "ml100k"))
    assert hundred_k.interactions[schema.USER_ID].tolist() == ["1", "1", "2"]
    with pytest.raises(DataSourceError, match="u.data .* or ratings.dat"):
        read_movielens_folder(tmp_path)
