"""MovieLens-100K and MovieLens-1M folders as canonical tables (see ``recflow.data.canonical``).

A file that does not split into the expected fields raises ``DataSourceError``; bad values are
kept as nulls and recorded for validation.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recflow import schema
from recflow.data.canonical import (
    canonical_interactions,
    canonical_items,
    require_file,
    to_id,
    to_int,
    to_text,
)
from recflow.errors import DataSourceError

if TYPE_CHECKING:
    import pandas as pd

    from recflow.types import Dataset

_ML_HINT = (
    "point data_path at the extracted MovieLens folder "
    "(recflow.data.download_movielens fetches and extracts it)"
)


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


def _genre_names_100k(folder: Path) -> list[str]:
    path = require_file(folder / "u.genre", "MovieLens-100K genres", _ML_HINT)
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
        require_file(folder / "u.data", f"{what} ratings", _ML_HINT),
        folder / "u.data",
        sep="\t",
        n_fields=4,
        what=f"{what} ratings",
    )
    genres = _genre_names_100k(folder)
    item_path = require_file(folder / "u.item", f"{what} items", _ML_HINT)
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
        require_file(folder / "ratings.dat", f"{what} ratings", _ML_HINT), 4, f"{what} ratings"
    )
    movies = _movies_1m(require_file(folder / "movies.dat", f"{what} movies", _ML_HINT))
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
