"""Data sources: synthetic generator, MovieLens / CSV / Parquet readers, storage, download.

Attributes are imported on first use (PEP 562), so importing ``recflow.data`` at DAG-parse
time does not load pandas or numpy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from recflow.data.download import download_movielens
    from recflow.data.movielens import read_movielens_1m, read_movielens_100k
    from recflow.data.readers import load_source, read_table
    from recflow.data.store import dataset_digest, read_dataset, write_dataset
    from recflow.data.synthetic import SyntheticTruth, generate_synthetic, synthetic_truth
    from recflow.types import Dataset

_WHERE = {
    "Dataset": "recflow.types",
    "generate_synthetic": "recflow.data.synthetic",
    "synthetic_truth": "recflow.data.synthetic",
    "SyntheticTruth": "recflow.data.synthetic",
    "read_movielens_100k": "recflow.data.movielens",
    "read_movielens_1m": "recflow.data.movielens",
    "read_table": "recflow.data.readers",
    "load_source": "recflow.data.readers",
    "write_dataset": "recflow.data.store",
    "read_dataset": "recflow.data.store",
    "dataset_digest": "recflow.data.store",
    "download_movielens": "recflow.data.download",
}

__all__ = [
    "Dataset",
    "SyntheticTruth",
    "dataset_digest",
    "download_movielens",
    "generate_synthetic",
    "load_source",
    "read_dataset",
    "read_movielens_100k",
    "read_movielens_1m",
    "read_table",
    "synthetic_truth",
    "write_dataset",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'recflow.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
