"""What every reader shares: conversion of source columns to the canonical tables of
``recflow.schema``, the record of values a reader could not read, and the file check.

Values that are present but bad (rating "abc", an empty user id) are kept as nulls in their
row and recorded under ``UNREADABLE_ATTR``, so that validation reports them instead of the
reader silently dropping or fixing them. ``recflow.data.store`` persists that record.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from recflow import schema
from recflow.errors import DataSourceError

if TYPE_CHECKING:
    import pandas as pd


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


def require_file(path: Path, what: str, hint: str) -> Path:
    if not path.is_file():
        found = "a folder" if path.is_dir() else "nothing"
        raise DataSourceError(f"{what}: expected a file at {path}, found {found}; {hint}")
    return path
