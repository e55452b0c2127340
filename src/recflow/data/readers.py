"""Readers that turn source files into canonical tables (see ``recflow.schema``).

Structural problems (missing files or columns, a file that does not split into the expected
fields) raise ``DataSourceError``. Values that are present but bad (rating "abc", an empty user
id) are kept as nulls in their row, so that validation reports them instead of the reader
silently dropping or fixing them.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recflow import schema
from recflow.errors import DataSourceError

if TYPE_CHECKING:
    import pandas as pd

    from recflow.config import DataConfig
    from recflow.types import Dataset

_ML_HINT = (
    "point data_path at the extracted MovieLens folder "
    "(recflow.data.download_movielens fetches and extracts it)"
)


# ---------------------------------------------------------------------------------------------
# Column conversions shared by every reader (and by recflow.data.store)


# DataFrame.attrs key of a table's unreadable values: column -> {"count", "expected",
# "examples", "rows"}. A reader keeps such values as nulls (see the module docstring) and
# records here what the text was, so that validation can say "50 values are not numbers,
# e.g. 'abc'" instead of "50 nulls". recflow.data.store persists it beside the tables.
UNREADABLE_ATTR = "recflow.unreadable"
UNREADABLE_EXAMPLES = 5
_EXAMPLE_CHARS = 40


def unreadable_values(raw: pd.Series, parsed: pd.Series, expected: str) -> dict[str, Any] | None:
    """Where ``raw`` held text that ``parsed`` could not read (null there, non-blank here)."""
    import numpy as np

    text = raw.astype("string").str.strip()
    bad = (
        parsed.isna().to_numpy(dtype=bool)
        & text.notna().to_numpy(dtype=bool)
        & (text != "").fillna(False).to_numpy(dtype=bool)
    )
    count = int(bad.sum())
    if not count:
        return None
    from recflow.validation.pii import looks_personal

    values = [str(v) for v in text[bad].tolist()]
    examples = []
    for value in list(dict.fromkeys(values))[:UNREADABLE_EXAMPLES]:
        # Examples end up in logs and Data Docs: personal data is named, never shown.
        kind = looks_personal(value)
        examples.append(f"<withheld: looks like {kind}>" if kind else value[:_EXAMPLE_CHARS])
    rows = [int(i) for i in np.flatnonzero(bad)[:UNREADABLE_EXAMPLES]]
    return {"count": count, "expected": expected, "examples": examples, "rows": rows}


def to_id(s: pd.Series) -> pd.Series:
    """Ids as nullable strings: 7 and 7.0 both become "7"; blank strings become null."""
    import pandas as pd

    if pd.api.types.is_bool_dtype(s) or pd.api.types.is_integer_dtype(s):
        return s.astype("string")
    if pd.api.types.is_float_dtype(s):
        out = s.astype("string")
        whole = s.notna() & (s % 1 == 0)
        out[whole] = s[whole].astype("int64").astype("string")
        return out
    out = s.astype("string").str.strip()
    return out.mask(out == "", pd.NA)


def to_float(s: pd.Series) -> pd.Series:
    """Nullable Float64; text that is not a number becomes null."""
    import pandas as pd

    if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
        return s.astype("Float64")
    return pd.to_numeric(s.astype("string").str.strip(), errors="coerce").astype("Float64")


def to_int(s: pd.Series) -> pd.Series:
    """Nullable Int64; text that is not a whole number (e.g. "3.5", "abc") becomes null."""
    import pandas as pd

    if pd.api.types.is_integer_dtype(s):
        return s.astype("Int64")
    num = to_float(s)
    return num.where(num % 1 == 0).astype("Int64")


def to_unix_seconds(s: pd.Series) -> pd.Series:
    """Unix seconds (Int64) from numbers (seconds, floored) or ISO-8601 datetimes (naive = UTC)."""
    import pandas as pd

    epoch = pd.Timestamp(0, tz="UTC")
    if pd.api.types.is_datetime64_any_dtype(s):
        dt = s.dt.tz_localize("UTC") if s.dt.tz is None else s.dt.tz_convert("UTC")
        return ((dt - epoch) // pd.Timedelta(seconds=1)).astype("Int64")
    num = to_float(s)
    out = num.where(num.isna(), num // 1)  # fractional seconds are a valid time: floor them
    text = s.astype("string").str.strip()
    needs_date = out.isna() & text.notna() & (text != "")
    if needs_date.any():
        dt = pd.to_datetime(text[needs_date], format="ISO8601", utc=True, errors="coerce")
        out[needs_date] = ((dt - epoch) // pd.Timedelta(seconds=1)).astype("Float64")
    return out.astype("Int64")


def to_text(s: pd.Series) -> pd.Series:
    """Nullable strings, blank -> null."""
    import pandas as pd

    out = s.astype("string")
    return out.mask(out.str.strip() == "", pd.NA)


def canonical_interactions(
    user_id: pd.Series,
    item_id: pd.Series,
    rating: pd.Series,
    timestamp: pd.Series,
    *,
    timestamp_raw: pd.Series | None = None,
    timestamp_expected: str = "whole numbers (unix seconds)",
) -> pd.DataFrame:
    """The canonical interactions table; ``timestamp`` is already converted, and
    ``timestamp_raw`` (the text it came from) lets unreadable times be recorded as such."""
    import pandas as pd

    ratings = to_float(rating)
    out = pd.DataFrame(
        {
            schema.USER_ID: to_id(user_id).to_numpy(),
            schema.ITEM_ID: to_id(item_id).to_numpy(),
            schema.RATING: ratings.to_numpy(),
            schema.TIMESTAMP: timestamp.to_numpy(),
        }
    ).astype(schema.INTERACTION_DTYPES)
    unreadable = {schema.RATING: unreadable_values(rating, ratings, "numbers")}
    if timestamp_raw is not None:
        unreadable[schema.TIMESTAMP] = unreadable_values(
            timestamp_raw, timestamp, timestamp_expected
        )
    found = {column: info for column, info in unreadable.items() if info}
    if found:
        out.attrs[UNREADABLE_ATTR] = found
    return out


def canonical_items(item_id: pd.Series, title: pd.Series, genres: pd.Series) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame(
        {
            schema.ITEM_ID: to_id(item_id).to_numpy(),
            schema.TITLE: to_text(title).to_numpy(),
            schema.GENRES: genres.astype("string").to_numpy(),
        }
    ).astype(schema.ITEM_DTYPES)


# ---------------------------------------------------------------------------------------------
# Low-level file access with uniform errors


def _require_file(path: Path, what: str, hint: str) -> Path:
    if not path.is_file():
        found = "a folder" if path.is_dir() else "nothing"
        raise DataSourceError(f"{what}: expected a file at {path}, found {found}; {hint}")
    return path


def _read_delimited(
    source: Path | io.StringIO, path: Path, *, sep: str, n_fields: int, what: str, **kw: Any
) -> pd.DataFrame:
    """Read a header-less delimited file as text columns and check its field count."""
    import pandas as pd

    try:
        df = pd.read_csv(
            source,
            sep=sep,
            header=None,
            dtype=str,
            quoting=csv.QUOTE_NONE,
            keep_default_na=False,
            na_filter=False,
            **kw,
        )
    except pd.errors.EmptyDataError:
        raise DataSourceError(
            f"{what}: {path} is empty; expected {n_fields} fields a line"
        ) from None
    except (pd.errors.ParserError, ValueError, OSError) as exc:
        raise DataSourceError(
            f"{what}: could not split {path} into {n_fields} {sep!r}-separated fields a line "
            f"({exc}); check that this is the right file and format"
        ) from None
    if df.shape[1] != n_fields:
        raise DataSourceError(
            f"{what}: expected {n_fields} {sep!r}-separated fields a line in {path}, "
            f"found {df.shape[1]}; check that this is the right file and format"
        )
    return df


def _read_double_colon(path: Path, n_fields: int, what: str) -> pd.DataFrame:
    # '::' needs pandas' slow regex engine; a control character that never occurs in the
    # MovieLens .dat files lets the C engine split the lines instead.
    text = path.read_bytes().decode("latin-1").replace("::", "\x1f")
    return _read_delimited(io.StringIO(text), path, sep="\x1f", n_fields=n_fields, what=what)


# ---------------------------------------------------------------------------------------------
# MovieLens


def _genre_names_100k(folder: Path) -> list[str]:
    path = _require_file(folder / "u.genre", "MovieLens-100K genres", _ML_HINT)
    names: dict[int, str] = {}
    for lineno, line in enumerate(path.read_text(encoding="latin-1").splitlines(), 1):
        if not line.strip():
            continue
        name, _, index = line.rpartition("|")
        if not name or not index.strip().isdigit():
            raise DataSourceError(
                f"MovieLens-100K genres: expected 'name|index' on line {lineno} of {path}, "
                f"found {line!r}"
            )
        names[int(index)] = name
    if sorted(names) != list(range(len(names))) or not names:
        raise DataSourceError(
            f"MovieLens-100K genres: expected indices 0..n-1 in {path}, found {sorted(names)}"
        )
    return [names[i] for i in range(len(names))]


def _join_flags(flags: pd.DataFrame, names: list[str]) -> pd.Series:
    """'1'/'0' genre flag columns -> names joined by '|'; a row with another value -> null."""
    import pandas as pd

    rows: list[list[str]] = flags.astype(str).to_numpy().tolist()
    ok = [set(row) <= {"0", "1"} for row in rows]
    hot = [[v == "1" for v in row] for row in rows]
    joined = [
        schema.GENRE_SEPARATOR.join(n for n, h in zip(names, row, strict=True) if h)
        if good
        else None
        for row, good in zip(hot, ok, strict=True)
    ]
    return pd.Series(joined, dtype="string")


def read_movielens_100k(folder: str | Path) -> Dataset:
    """Read the MovieLens-100K folder (u.data, u.item, u.genre, u.user)."""
    import pandas as pd

    from recflow.types import Dataset

    folder = Path(folder)
    what = "MovieLens-100K"
    ratings = _read_delimited(
        _require_file(folder / "u.data", f"{what} ratings", _ML_HINT),
        folder / "u.data",
        sep="\t",
        n_fields=4,
        what=f"{what} ratings",
    )
    genres = _genre_names_100k(folder)
    item_path = _require_file(folder / "u.item", f"{what} items", _ML_HINT)
    items = _read_delimited(
        item_path,
        item_path,
        sep="|",
        n_fields=5 + len(genres),
        what=f"{what} items",
        encoding="latin-1",
    )
    interactions = canonical_interactions(
        ratings[0], ratings[1], ratings[2], to_int(ratings[3]), timestamp_raw=ratings[3]
    )
    item_table = canonical_items(items[0], items[1], _join_flags(items.iloc[:, 5:], genres))
    users = None
    user_path = folder / "u.user"
    if user_path.exists():
        u = _read_delimited(
            user_path, user_path, sep="|", n_fields=5, what=f"{what} users", encoding="latin-1"
        )
        users = pd.DataFrame(
            {
                schema.USER_ID: to_id(u[0]),
                "age": to_int(u[1]),
                "gender": to_text(u[2]),
                "occupation": to_text(u[3]),
                "zip_code": to_text(u[4]),
            }
        )
    return Dataset(interactions=interactions, items=item_table, users=users)


def _movies_1m(path: Path) -> pd.DataFrame:
    import pandas as pd

    # Titles may contain ':' (even end with one), so split off the id at the first '::' and
    # the genres at the last one instead of splitting on every '::'.
    rows: list[tuple[str | None, str | None, str | None]] = []
    for line in path.read_bytes().decode("latin-1").splitlines():
        if not line.strip():
            continue
        head, sep1, rest = line.partition("::")
        title, sep2, genres = rest.rpartition("::")
        if not sep1 or not sep2:
            raise DataSourceError(
                f"MovieLens-1M movies: expected 'MovieID::Title::Genres' lines in {path}, "
                f"found {line!r}; check that this is the right file and format"
            )
        rows.append((head, title, genres))
    if not rows:
        raise DataSourceError(f"MovieLens-1M movies: {path} is empty; expected movie lines")
    return pd.DataFrame(rows, columns=[0, 1, 2], dtype="string")


def read_movielens_1m(folder: str | Path) -> Dataset:
    """Read the MovieLens-1M folder (ratings.dat, movies.dat, users.dat; '::'-separated)."""
    import pandas as pd

    from recflow.types import Dataset

    folder = Path(folder)
    what = "MovieLens-1M"
    ratings = _read_double_colon(
        _require_file(folder / "ratings.dat", f"{what} ratings", _ML_HINT), 4, f"{what} ratings"
    )
    movies = _movies_1m(_require_file(folder / "movies.dat", f"{what} movies", _ML_HINT))
    interactions = canonical_interactions(
        ratings[0], ratings[1], ratings[2], to_int(ratings[3]), timestamp_raw=ratings[3]
    )
    genres = movies[2].str.strip()
    item_table = canonical_items(movies[0], movies[1], genres.mask(genres.isna(), ""))
    users = None
    user_path = folder / "users.dat"
    if user_path.exists():
        u = _read_double_colon(user_path, 5, f"{what} users")
        users = pd.DataFrame(
            {
                schema.USER_ID: to_id(u[0]),
                "gender": to_text(u[1]),
                "age": to_int(u[2]),  # an age-group code in ML-1M
                "occupation": to_int(u[3]),  # a code in ML-1M
                "zip_code": to_text(u[4]),
            }
        )
    return Dataset(interactions=interactions, items=item_table, users=users)


def read_movielens_folder(folder: str | Path) -> Dataset:
    """MovieLens-100K (``u.data``) or MovieLens-1M (``ratings.dat``), by the folder's layout."""
    folder = Path(folder)
    if (folder / "u.data").is_file():
        return read_movielens_100k(folder)
    if (folder / "ratings.dat").is_file():
        return read_movielens_1m(folder)
    raise DataSourceError(
        f"MovieLens folder {folder}: expected u.data (MovieLens-100K) or ratings.dat "
        f"(MovieLens-1M), found neither; {_ML_HINT}"
    )


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
        _require_file(
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
