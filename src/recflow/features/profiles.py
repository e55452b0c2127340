"""Index maps and user/item profile features, computed from training data only."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from recflow.errors import DataError, DataSourceError
from recflow.schema import GENRE_SEPARATOR, GENRES, ITEM_ID, TITLE, USER_ID
from recflow.storage import atomic_directory
from recflow.types import Features

ARRAYS_FILE = "features.npz"
META_FILE = "features.json"
FORMAT_VERSION = 1
TOP_GENRES = 3
_ARRAY_FIELDS = (
    "user_ids",
    "item_ids",
    "item_titles",
    "train_user_idx",
    "train_item_idx",
    "user_genre_pref",
    "user_activity",
    "item_popularity",
    "item_genres",
)


def _require(frame: pd.DataFrame, name: str, columns: tuple[str, ...]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"{name}: expected columns {list(columns)}, missing {missing}")


def _unknown_error(kind: str, table: str, values: np.ndarray, rows: int) -> DataError:
    examples = sorted(set(values.tolist()))[:5]
    return DataError(
        f"train: expected every {kind} in the {table} table, found {rows} rows with "
        f"{len(set(values.tolist()))} unknown {kind}s (e.g. {examples}); validate the dataset "
        f"first or add them to the {table} table"
    )


def _scaled_log_counts(counts: np.ndarray) -> np.ndarray:
    logs = np.log1p(counts.astype(np.float64))
    top = logs.max() if logs.size else 0.0
    return (logs / top if top > 0 else logs).astype(np.float32)


def _genre_matrix(items: pd.DataFrame) -> tuple[tuple[str, ...], np.ndarray]:
    """Multi-hot [N, G] over the sorted genre names found in ``items``."""
    if GENRES not in items.columns:
        return (), np.zeros((len(items), 0), dtype=np.float32)
    exploded = items[GENRES].fillna("").astype(str).str.split(GENRE_SEPARATOR).explode()
    exploded = exploded.str.strip()
    exploded = exploded[exploded != ""]
    genres = tuple(sorted(set(exploded.tolist())))
    matrix = np.zeros((len(items), len(genres)), dtype=np.float32)
    if genres:
        col = pd.Index(genres).get_indexer(exploded.to_numpy())
        matrix[exploded.index.to_numpy(), col] = 1.0
    return genres, matrix


def build_features(
    train: pd.DataFrame, items: pd.DataFrame, users: pd.DataFrame | None = None
) -> Features:
    """Build :class:`Features` from the training split and the catalogue.

    Users are those with training events, sorted by id; items are the whole item table, sorted
    by id. ``user_genre_pref`` sums the genre multi-hot of a user's training events and
    normalises the row to 1 (an item with several genres counts once for each; items without
    genres contribute nothing). When ``users`` is given, every training user must be in it.
    """
    _require(train, "train", (USER_ID, ITEM_ID))
    _require(items, "items", (ITEM_ID,))
    if train.empty:
        raise DataError("train: expected training events, found none; check the split input")
    if items[ITEM_ID].isna().any() or items[ITEM_ID].duplicated().any():
        dups = items.loc[items[ITEM_ID].duplicated(), ITEM_ID].head(5).tolist()
        raise DataError(
            f"items: expected unique non-null {ITEM_ID}, found duplicates/nulls (e.g. {dups}); "
            "deduplicate the item table"
        )
    catalogue = items.assign(**{ITEM_ID: items[ITEM_ID].astype(str)})
    catalogue = catalogue.sort_values(ITEM_ID, kind="stable").reset_index(drop=True)
    item_ids = catalogue[ITEM_ID].to_numpy(dtype=str)
    titles = (
        catalogue[TITLE].fillna("").astype(str).to_numpy(dtype=str)
        if TITLE in catalogue.columns
        else np.full(item_ids.shape, "", dtype=str)
    )

    # Ids are mapped by hashing (object arrays of the frame's own strings), never as fixed-width
    # numpy strings of every event: those cost ~140 bytes per event for a pseudonym, plus sorted
    # copies (about 6 GB at 20M events).
    train_items = train[ITEM_ID].astype(str)
    item_idx = pd.Index(item_ids).get_indexer(train_items)
    if (item_idx < 0).any():
        unknown = train_items.to_numpy()[item_idx < 0]
        raise _unknown_error("item", "items", unknown, int((item_idx < 0).sum()))
    # sort=True: users sorted by id (code point order, as np.unique would sort them).
    user_idx, uniques = pd.factorize(train[USER_ID].astype(str), sort=True)
    user_ids = np.asarray(uniques, dtype=str)
    if users is not None:
        _require(users, "users", (USER_ID,))
        known = np.isin(user_ids, users[USER_ID].astype(str).to_numpy(dtype=str))
        if not known.all():
            rows = int((~known[user_idx]).sum())
            raise _unknown_error("user", "users", user_ids[~known], rows)
    n_users, n_items = user_ids.size, item_ids.size

    genres, item_genres = _genre_matrix(catalogue)
    # One bincount per genre keeps this O(G * T) without a dense user x item matrix.
    genre_counts = (
        np.stack(
            [
                np.bincount(user_idx, weights=item_genres[item_idx, g], minlength=n_users)
                for g in range(len(genres))
            ],
            axis=1,
        )
        if genres
        else np.zeros((n_users, 0))
    )
    totals = genre_counts.sum(axis=1, keepdims=True)
    pref = np.divide(genre_counts, totals, out=np.zeros_like(genre_counts), where=totals > 0)

    return Features(
        user_ids=user_ids,
        item_ids=item_ids,
        item_titles=titles,
        genres=genres,
        train_user_idx=user_idx.astype(np.int32),
        train_item_idx=item_idx.astype(np.int32),
        user_genre_pref=pref.astype(np.float32),
        user_activity=_scaled_log_counts(np.bincount(user_idx, minlength=n_users)),
        item_popularity=_scaled_log_counts(np.bincount(item_idx, minlength=n_items)),
        item_genres=item_genres,
    )


def save_features(features: Features, folder: Path) -> None:
    """Write arrays to ``features.npz`` and genres to ``features.json`` (atomically)."""
    with atomic_directory(Path(folder)) as scratch:
        np.savez(scratch / ARRAYS_FILE, **{f: getattr(features, f) for f in _ARRAY_FIELDS})
        meta = {
            "format_version": FORMAT_VERSION,
            "genres": list(features.genres),
            "n_users": features.n_users,
            "n_items": features.n_items,
        }
        (scratch / META_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")


def load_features(folder: Path) -> Features:
    """Read features written by :func:`save_features` (no pickle needed)."""
    folder = Path(folder)
    for name in (ARRAYS_FILE, META_FILE):
        if not (folder / name).is_file():
            raise DataSourceError(
                f"features folder {folder}: expected {name}, not found; re-run the features stage"
            )
    meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
    if meta.get("format_version") != FORMAT_VERSION:
        raise DataSourceError(
            f"{folder / META_FILE}: expected format_version {FORMAT_VERSION}, "
            f"found {meta.get('format_version')!r}; re-run the features stage"
        )
    with np.load(folder / ARRAYS_FILE, allow_pickle=False) as npz:
        arrays = {f: npz[f] for f in _ARRAY_FIELDS}
    return Features(genres=tuple(meta["genres"]), **arrays)


def profile_tables(features: Features) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Human-readable (user_profiles, item_profiles) tables, e.g. to write as parquet."""
    genre_names = np.asarray(features.genres, dtype=object)
    history = np.bincount(features.train_user_idx, minlength=features.n_users)
    pref = features.user_genre_pref
    n_top = min(TOP_GENRES, pref.shape[1])
    # Stable sort on -pref: equal shares keep the alphabetical genre order.
    top = np.argsort(-pref, axis=1, kind="stable")[:, :n_top]
    top_share = np.take_along_axis(pref, top, axis=1)
    top_names = genre_names[top] if n_top else np.empty((features.n_users, 0), dtype=object)
    top_genres = [
        GENRE_SEPARATOR.join(n for n, s in zip(names, shares, strict=True) if s > 0)
        for names, shares in zip(top_names, top_share, strict=True)
    ]
    users = pd.DataFrame(
        {
            USER_ID: pd.array(features.user_ids, dtype="string"),
            "history_length": history.astype(np.int64),
            "activity": features.user_activity,
            "top_genres": pd.array(top_genres, dtype="string"),
        }
    )
    item_genres = [
        GENRE_SEPARATOR.join(genre_names[row > 0].tolist()) for row in features.item_genres
    ]
    items = pd.DataFrame(
        {
            ITEM_ID: pd.array(features.item_ids, dtype="string"),
            TITLE: pd.array(features.item_titles, dtype="string"),
            "popularity_count": np.bincount(
                features.train_item_idx, minlength=features.n_items
            ).astype(np.int64),
            "popularity": features.item_popularity,
            GENRES: pd.array(item_genres, dtype="string"),
        }
    )
    return users, items
