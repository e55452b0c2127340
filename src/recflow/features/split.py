"""Chronological leave-last-out split, and its parquet round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from recflow.errors import DataError, DataSourceError
from recflow.schema import ITEM_ID, TIMESTAMP, USER_ID
from recflow.storage import atomic_directory
from recflow.types import Split

SPLIT_FILES = {"train": "train.parquet", "validation": "validation.parquet", "test": "test.parquet"}
MIN_EVENTS_TO_EVALUATE = 3


def split_leave_last_out(interactions: pd.DataFrame) -> Split:
    """Per user, chronologically: last event -> test, second last -> validation, rest -> train.

    Tie-break: events are ordered by a *stable* sort on the timestamp, so among events of one
    user with equal timestamps the one that comes later in the source log (row order of
    ``interactions``) counts as later. MovieLens-100K has many such ties at the end of
    histories; the rule makes the split reproducible for a given input file.

    Users with fewer than 3 events keep all their events in train and are not evaluated.
    Rows keep all input columns; train is ordered by user then time, validation/test by user.
    """
    missing = [c for c in (USER_ID, ITEM_ID, TIMESTAMP) if c not in interactions.columns]
    if missing:
        raise DataError(
            f"interactions: expected columns {[USER_ID, ITEM_ID, TIMESTAMP]}, missing {missing}; "
            "map the source columns with DataConfig.column_mapping"
        )
    for col in (USER_ID, TIMESTAMP):
        n_null = int(interactions[col].isna().sum())
        if n_null:
            raise DataError(
                f"interactions: expected no null {col!r}, found {n_null} nulls; "
                "run validation first, it reports the offending rows"
            )
    df = interactions.reset_index(drop=True)
    # Integer codes sorted by user id: the sort then also orders users deterministically.
    codes, _ = pd.factorize(df[USER_ID], sort=True)
    timestamps = df[TIMESTAMP].to_numpy(dtype=np.int64)
    # np.lexsort is stable: within (user, timestamp) ties the source row order is kept.
    order = np.lexsort((timestamps, codes))
    counts = np.bincount(codes)
    sorted_codes = codes[order]
    last_pos = np.cumsum(counts)[sorted_codes] - 1
    from_end = last_pos - np.arange(order.size)  # 0 = user's last event
    evaluated = counts[sorted_codes] >= MIN_EVENTS_TO_EVALUATE
    ordered = df.iloc[order].reset_index(drop=True)
    test_mask = evaluated & (from_end == 0)
    validation_mask = evaluated & (from_end == 1)
    train_mask = ~(test_mask | validation_mask)
    return Split(
        train=ordered[train_mask].reset_index(drop=True),
        validation=ordered[validation_mask].reset_index(drop=True),
        test=ordered[test_mask].reset_index(drop=True),
    )


def save_split(split: Split, folder: Path) -> None:
    """Write train/validation/test as parquet files into ``folder`` (atomically, replacing)."""
    with atomic_directory(Path(folder)) as scratch:
        for name, file in SPLIT_FILES.items():
            getattr(split, name).to_parquet(scratch / file, index=False)


def load_split(folder: Path) -> Split:
    """Read a split written by :func:`save_split`."""
    folder = Path(folder)
    missing = [f for f in SPLIT_FILES.values() if not (folder / f).is_file()]
    if missing:
        raise DataSourceError(
            f"split folder {folder}: expected files {sorted(SPLIT_FILES.values())}, "
            f"missing {missing}; re-run the split stage"
        )
    frames = {name: pd.read_parquet(folder / file) for name, file in SPLIT_FILES.items()}
    return Split(**frames)
