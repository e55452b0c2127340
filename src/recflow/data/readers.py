"""Readers that turn source files into canonical tables (see ``recflow.schema``): generic
CSV/Parquet tables with a column mapping here, MovieLens folders in ``recflow.data.movielens``,
and ``load_source``, which picks one by ``DataConfig.source``.

Structural problems (missing files or columns, a file that does not split into the expected
fields) raise ``DataSourceError``. Values that are present but bad (rating "abc", an empty user
id) are kept as nulls in their row, so that validation reports them instead of the reader
silently dropping or fixing them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from recflow import schema
from recflow.data.canonical import (
    canonical_interactions,
    canonical_items,
    require_file,
    to_id,
    to_unix_seconds,
)
from recflow.data.movielens import read_movielens_1m, read_movielens_100k
from recflow.errors import DataSourceError

if TYPE_CHECKING:
    import pandas as pd

    from recflow.config import DataConfig
    from recflow.types import Dataset


# ---------------------------------------------------------------------------------------------
# Generic CSV / Parquet tables

_CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2", ".csv.zip", ".tsv", ".tsv.gz")
_PARQUET_SUFFIXES = (".parquet", ".pq")


def _format_of(path: Path, file_format: str | None) -> str:
    if path.is_dir() and file_format in (None, "parquet"):
        return "parquet"  # a folder of parquet shards (e.g. recflow.data.stream's output)
    name = path.name.lower()
    by_suffix = (
        "csv"
        if name.endswith(_CSV_SUFFIXES)
        else "parquet"
        if name.endswith(_PARQUET_SUFFIXES)
        else None
    )
    if file_format is None:
        if by_suffix is None:
            raise DataSourceError(
                f"cannot tell the format of {path}: expected a name ending in one of "
                f"{_CSV_SUFFIXES + _PARQUET_SUFFIXES}; rename the file"
            )
        return by_suffix
    if file_format not in ("csv", "parquet"):
        raise DataSourceError(f"file format: expected 'csv' or 'parquet', found {file_format!r}")
    if by_suffix is not None and by_suffix != file_format:
        raise DataSourceError(
            f"data_source is {file_format!r} but {path} looks like {by_suffix}; "
            "set data_source to match the file"
        )
    return file_format


def _read_frame(path: Path, fmt: str, what: str) -> pd.DataFrame:
    import pandas as pd

    if not (fmt == "parquet" and path.is_dir() and any(path.glob("*.parquet"))):
        require_file(
            path, what, "check the path in the config (data_path / items_path / users_path)"
        )
    try:
        if fmt == "parquet":
            return pd.read_parquet(path)
        sep = "\t" if ".tsv" in path.name.lower() else ","
        # Everything as text: the converters below turn bad values into nulls per cell.
        return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, na_values=[""])
    except pd.errors.EmptyDataError:
        raise DataSourceError(f"{what}: {path} is empty; expected a header and rows") from None
    except (pd.errors.ParserError, ValueError, OSError) as exc:
        raise DataSourceError(
            f"{what}: could not read {path} as {fmt} ({type(exc).__name__}: {exc}); "
            f"check that the file is a valid, complete {fmt} file"
        ) from None


def _column(
    df: pd.DataFrame, canonical: str, mapping: Mapping[str, str], path: Path, what: str
) -> pd.Series | None:
    """The file column for ``canonical`` or None when absent and not explicitly mapped."""
    name = mapping.get(canonical, canonical)
    if name in df.columns:
        return df[name]
    if canonical in mapping:
        raise DataSourceError(
            f"{what}: column_mapping maps {canonical!r} to {name!r}, but {path} has no such "
            f"column; found {list(df.columns)}; fix column_mapping"
        )
    return None


def _required(
    df: pd.DataFrame, canonical: str, mapping: Mapping[str, str], path: Path, what: str
) -> pd.Series:
    col = _column(df, canonical, mapping, path, what)
    if col is None:
        raise DataSourceError(
            f"{what}: expected a column {canonical!r} in {path}, found {list(df.columns)}; "
            f"rename it or add column_mapping={{{canonical!r}: '<column in file>'}}"
        )
    return col


def read_table(
    path: str | Path,
    *,
    items_path: str | Path,
    users_path: str | Path | None = None,
    column_mapping: Mapping[str, str] | None = None,
    file_format: str | None = None,
) -> Dataset:
    """Read interactions (+ items, + optional users) from CSV or Parquet files.

    ``column_mapping`` maps canonical names (``recflow.schema``) to the files' column names.
    Without a rating column every event gets rating 1.0 (implicit feedback); timestamps may be
    unix seconds or ISO-8601 datetimes. ``file_format`` ("csv"/"parquet") defaults to the suffix.
    The mapping applies to every file, so a column (e.g. the item id) has one name in all of them.
    """
    import pandas as pd

    from recflow.types import Dataset

    mapping = dict(column_mapping or {})
    known = {*schema.INTERACTION_COLUMNS, *schema.ITEM_COLUMNS}
    unknown = sorted(set(mapping) - known)
    if unknown:
        raise DataSourceError(
            f"column_mapping: expected keys among {sorted(known)}, found {unknown}; "
            "keys are canonical names, values the names in the file"
        )

    path = Path(path)
    what = "interactions"
    df = _read_frame(path, _format_of(path, file_format), what)
    rating = _column(df, schema.RATING, mapping, path, what)
    if rating is None:
        rating = pd.Series(1.0, index=df.index)
    raw_time = _required(df, schema.TIMESTAMP, mapping, path, what)
    interactions = canonical_interactions(
        _required(df, schema.USER_ID, mapping, path, what),
        _required(df, schema.ITEM_ID, mapping, path, what),
        rating,
        to_unix_seconds(raw_time),
        timestamp_raw=raw_time,
        timestamp_expected="unix seconds or ISO-8601 times",
    )

    ipath = Path(items_path)
    what = "items"
    it = _read_frame(ipath, _format_of(ipath, file_format), what)
    genres = _column(it, schema.GENRES, mapping, ipath, what)
    genres = (
        pd.Series("", index=it.index, dtype="string")
        if genres is None
        else genres.astype("string").fillna("")  # an empty cell is how CSV says "no genres"
    )
    items = canonical_items(
        _required(it, schema.ITEM_ID, mapping, ipath, what),
        _required(it, schema.TITLE, mapping, ipath, what),
        genres,
    )

    users = None
    if users_path is not None:
        upath = Path(users_path)
        what = "users"
        users = _read_frame(upath, _format_of(upath, file_format), what)
        uid = _required(users, schema.USER_ID, mapping, upath, what)
        users = users.drop(columns=[uid.name]).assign(**{schema.USER_ID: to_id(uid)})
        users = users[[schema.USER_ID, *[c for c in users.columns if c != schema.USER_ID]]]
        users = users.reset_index(drop=True)
    return Dataset(interactions=interactions, items=items, users=users)


# ---------------------------------------------------------------------------------------------


def load_source(cfg: DataConfig) -> Dataset:
    """Read the dataset ``cfg.source`` names."""
    source = cfg.source
    if source == "synthetic":
        from recflow.data.synthetic import generate_synthetic

        return generate_synthetic(cfg.synthetic)
    if source not in ("movielens-100k", "movielens-1m", "csv", "parquet"):
        raise DataSourceError(
            f"data_source: expected one of synthetic, movielens-100k, movielens-1m, csv, "
            f"parquet; found {source!r}"
        )
    if not cfg.path:
        raise DataSourceError(
            f"data_source={source!r} needs data_path: the folder (MovieLens) or file "
            "(csv/parquet) to read"
        )
    if source == "movielens-100k":
        return read_movielens_100k(cfg.path)
    if source == "movielens-1m":
        return read_movielens_1m(cfg.path)
    if not cfg.items_path:
        raise DataSourceError(
            f"data_source={source!r} needs items_path: a {source} file with columns "
            f"{schema.ITEM_ID}, {schema.TITLE} and optionally {schema.GENRES}"
        )
    return read_table(
        cfg.path,
        items_path=cfg.items_path,
        users_path=cfg.users_path,
        column_mapping=cfg.column_mapping,
        file_format=source,
    )
