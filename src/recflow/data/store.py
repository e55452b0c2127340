"""Canonical datasets on disk (one parquet file per table) and their content digest."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

from recflow import schema
from recflow.errors import DataError, DataSourceError
from recflow.jsontypes import JSONObject
from recflow.storage import atomic_directory

if TYPE_CHECKING:
    import pandas as pd

    from recflow.types import Dataset

_TABLES = (
    ("interactions", schema.INTERACTIONS_FILE, schema.INTERACTION_DTYPES),
    ("items", schema.ITEMS_FILE, schema.ITEM_DTYPES),
)


def _conform(df: pd.DataFrame, dtypes: dict[str, str], table: str) -> pd.DataFrame:
    """Canonical columns first, in canonical dtypes; a value that does not fit raises."""
    missing = [c for c in dtypes if c not in df.columns]
    if missing:
        raise DataError(
            f"{table}: expected columns {list(dtypes)}, missing {missing} (found "
            f"{list(df.columns)}); build tables with recflow.data readers"
        )
    out = df[[*dtypes, *[c for c in df.columns if c not in dtypes]]]
    try:
        # Strict casts: writing must not turn bad values into nulls behind the caller's back.
        return out.astype(dtypes).reset_index(drop=True)
    except (TypeError, ValueError) as exc:
        raise DataError(
            f"{table}: could not convert columns to {dtypes} ({exc}); "
            "fix the values or read the data through recflow.data readers"
        ) from None


# Beside the tables: what the readers could not read (see recflow.data.canonical.UNREADABLE_ATTR).
UNREADABLE_FILE = "unreadable.json"


def _unreadable(ds: Dataset) -> JSONObject:
    from recflow.data.canonical import UNREADABLE_ATTR

    found = {}
    for name in ("interactions", "items", "users"):
        df = getattr(ds, name)
        if df is not None and df.attrs.get(UNREADABLE_ATTR):
            found[name] = df.attrs[UNREADABLE_ATTR]
    return found


def write_dataset(ds: Dataset, folder: Path) -> None:
    """Write the tables as parquet into ``folder``, atomically replacing any previous content."""
    tables = [(file, _conform(getattr(ds, name), dtypes, name)) for name, file, dtypes in _TABLES]
    if ds.users is not None:
        tables.append((schema.USERS_FILE, _conform(ds.users, {schema.USER_ID: "string"}, "users")))
    unreadable = _unreadable(ds)
    with atomic_directory(Path(folder)) as scratch:
        for file, df in tables:
            df.to_parquet(scratch / file, index=False)
        if unreadable:
            (scratch / UNREADABLE_FILE).write_text(
                json.dumps(unreadable, indent=2, sort_keys=True), encoding="utf-8"
            )


def read_dataset(folder: Path) -> Dataset:
    """Read a folder written by ``write_dataset``; the users table is optional."""
    import pandas as pd

    from recflow.types import Dataset

    folder = Path(folder)
    if not folder.is_dir():
        raise DataSourceError(
            f"expected a dataset folder at {folder}, found nothing; run the ingest step first"
        )

    def load(file: str, dtypes: dict[str, str], table: str) -> pd.DataFrame:
        path = folder / file
        if not path.is_file():
            raise DataSourceError(
                f"{table}: expected {path}, found {sorted(p.name for p in folder.iterdir())}; "
                "the folder was not written by write_dataset, rerun the ingest step"
            )
        try:
            df = pd.read_parquet(path)
        except (OSError, ValueError) as exc:
            raise DataSourceError(f"{table}: could not read {path} as parquet ({exc})") from None
        try:
            return _conform(df, dtypes, table)
        except DataError as exc:
            raise DataSourceError(f"{path}: {exc}") from None

    interactions, items = (load(file, dtypes, name) for name, file, dtypes in _TABLES)
    users = None
    if (folder / schema.USERS_FILE).exists():
        users = load(schema.USERS_FILE, {schema.USER_ID: "string"}, "users")
    ds = Dataset(interactions=interactions, items=items, users=users)
    if (folder / UNREADABLE_FILE).is_file():
        from recflow.data.canonical import UNREADABLE_ATTR

        recorded = json.loads((folder / UNREADABLE_FILE).read_text(encoding="utf-8"))
        for name, columns in recorded.items():
            df = getattr(ds, name, None)
            if df is not None:
                df.attrs[UNREADABLE_ATTR] = columns
    return ds


def _column_bytes(s: pd.Series) -> list[bytes]:
    """An unambiguous byte encoding of one column: dtype family, null mask and values."""
    import numpy as np
    import pandas as pd

    mask = s.isna().to_numpy(dtype=bool)
    if pd.api.types.is_bool_dtype(s) or pd.api.types.is_integer_dtype(s):
        values = s.astype("Int64").to_numpy(dtype=np.int64, na_value=0)
        return [b"int", mask.tobytes(), values.tobytes()]
    if pd.api.types.is_float_dtype(s):
        values = s.astype("Float64").to_numpy(dtype=np.float64, na_value=0.0)
        return [b"float", mask.tobytes(), values.tobytes()]
    if pd.api.types.is_datetime64_any_dtype(s):
        return [b"datetime", mask.tobytes(), s.astype("int64").to_numpy().tobytes()]
    text = s.astype("string").fillna("")
    # Lengths make the concatenation unambiguous without an escape character.
    lengths = text.str.len().to_numpy(dtype=np.int64)
    return [b"str", mask.tobytes(), lengths.tobytes(), "".join(text.tolist()).encode("utf-8")]


def dataset_digest(ds: Dataset) -> str:
    """sha256 of the tables' content: names, dtype families, row order and every value.

    Independent of where or how the data is stored; any changed value changes it.
    """
    h = hashlib.sha256()
    tables = [("interactions", ds.interactions), ("items", ds.items)]
    if ds.users is not None:
        tables.append(("users", ds.users))
    for table, df in tables:
        h.update(f"table\0{table}\0{len(df)}\0{len(df.columns)}\0".encode())
        for col in df.columns:
            h.update(f"column\0{col}\0".encode())
            for part in _column_bytes(df[col]):
                h.update(len(part).to_bytes(8, "little"))
                h.update(part)
    return h.hexdigest()
