"""Append-only history of landed batches: the "history" data source.

Layout under the history folder (default ``<work_dir>/history``)::

    batch=<batch id>/interactions.parquet   canonical tables written by ``write_dataset``,
    batch=<batch id>/items.parquet          user ids already pseudonymised
    batch=<batch id>/batch.json             when and from where it was landed, row counts

The batch id is the first 16 hex digits of the batch's content digest, so re-landing the same
batch finds its folder and changes nothing. Each folder appears by one rename (a reader never
sees half a batch) and is never modified afterwards.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

from recflow.errors import DataSourceError
from recflow.jsontypes import JSONObject
from recflow.storage import atomic_directory

if TYPE_CHECKING:
    from recflow.types import Dataset

BATCH_PREFIX = "batch="
MANIFEST = "batch.json"
ID_CHARS = 16


def batch_id(digest: str) -> str:
    return digest[:ID_CHARS]


def batch_dir(history: Path, bid: str) -> Path:
    return Path(history) / f"{BATCH_PREFIX}{bid}"


def list_batches(history: Path) -> list[Path]:
    """Complete batch folders, oldest landing first (ties by id)."""
    history = Path(history)
    if not history.is_dir():
        return []
    found = [
        p for p in history.iterdir() if p.name.startswith(BATCH_PREFIX) and (p / MANIFEST).is_file()
    ]

    def landed(p: Path) -> tuple[float, str]:
        meta = json.loads((p / MANIFEST).read_text(encoding="utf-8"))
        return float(meta.get("landed_at", 0.0)), p.name

    return sorted(found, key=landed)


def append_batch(history: Path, ds: Dataset, digest: str, meta: JSONObject) -> tuple[Path, bool]:
    """Write ``ds`` as a new batch; (its folder, whether it was new). Idempotent per digest."""
    from recflow.data.store import write_dataset

    final = batch_dir(history, batch_id(digest))
    if (final / MANIFEST).is_file():
        return final, False
    try:
        with atomic_directory(final, replace=False) as scratch:
            write_dataset(ds, scratch / "tables")
            for f in (scratch / "tables").iterdir():
                f.rename(scratch / f.name)
            (scratch / "tables").rmdir()
            manifest = {"digest": digest, "landed_at": time.time(), **meta}
            (scratch / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    except FileExistsError:
        return final, False  # landed concurrently by another run: same content by construction
    return final, True


def read_history(history: Path) -> Dataset:
    """Every landed batch as one dataset: interactions concatenated in landing order; for items
    (and users) a later batch's row replaces an earlier one with the same id."""
    import pandas as pd

    from recflow.data.store import read_dataset
    from recflow.schema import ITEM_ID, USER_ID
    from recflow.types import Dataset

    batches = list_batches(history)
    if not batches:
        raise DataSourceError(
            f"history: expected landed batches (batch=<id>/ folders) in {history}, found none; "
            "land data with the recsys_ingest DAG first"
        )
    parts = [read_dataset(p) for p in batches]
    interactions = pd.concat([p.interactions for p in parts], ignore_index=True)
    items = (
        pd.concat([p.items for p in parts], ignore_index=True)
        .drop_duplicates(subset=[ITEM_ID], keep="last")
        .reset_index(drop=True)
    )
    user_parts = [p.users for p in parts if p.users is not None]
    users = (
        pd.concat(user_parts, ignore_index=True)
        .drop_duplicates(subset=[USER_ID], keep="last")
        .reset_index(drop=True)
        if user_parts
        else None
    )
    return Dataset(interactions=interactions, items=items, users=users)
