"""Data settings: where interactions come from, the synthetic generator, validation limits.

Declared once here (see recflow.settings); ``recflow.config`` re-exports every name, and its
``PipelineConfig`` holds these blocks as ``data`` and ``validation``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Literal

from recflow.settings import Settings, block, setting

DataSource = Literal["synthetic", "movielens-100k", "movielens-1m", "csv", "parquet", "history"]

# "history": every batch landed by the recsys_ingest DAG (recflow.data.history); data_path
# optional (default work_dir/history).
DATA_SOURCES: tuple[str, ...] = (
    "synthetic",
    "movielens-100k",
    "movielens-1m",
    "csv",
    "parquet",
    "history",
)

DATA = "Data"
VALIDATION = "Validation"


# The synthetic generator holds several dense [users, items] float64 arrays (~40 bytes a cell).
SYNTHETIC_MAX_CELLS = 50_000_000


@dataclass(frozen=True)
class SyntheticConfig(Settings):
    """The seeded synthetic generator (recflow.data.synthetic)."""

    FORM_SECTION: ClassVar[str] = DATA
    FLAT_PREFIX: ClassVar[str] = "synthetic_"

    n_users: int = setting(
        400,
        "Synthetic users",
        "Number of users the synthetic generator creates.",
        ge=10,
        le=100000,
        flat="synthetic_users",
    )
    n_items: int = setting(
        250,
        "Synthetic items",
        "Catalogue size of the synthetic generator.",
        ge=10,
        le=50000,
        flat="synthetic_items",
    )
    n_genres: int = setting(
        8, "Synthetic genres", "Genres the generator plants.", ge=1, param=False
    )
    mean_events_per_user: int = setting(
        30, "Mean events per user", "Mean interactions per synthetic user.", ge=1, param=False
    )
    seed: int = setting(
        7,
        "Synthetic seed",
        "Seed of the synthetic generator; change it to get fresh data with the same structure.",
        ge=0,
    )

    def rules(self) -> list[str]:
        cells = self.n_users * self.n_items
        if cells <= SYNTHETIC_MAX_CELLS:
            return []
        return [
            f"expected users x items <= {SYNTHETIC_MAX_CELLS:,} (this generator builds dense "
            f"users x items arrays, ~{40 * cells / 2**30:.0f} GiB here), found "
            f"{self.n_users} x {self.n_items}; for large logs write parquet shards with "
            "recflow.data.stream (python -m recflow.data.stream) and read them with "
            "data_source=parquet"
        ]


@dataclass(frozen=True)
class DataConfig(Settings):
    """Where interactions come from."""

    FORM_SECTION: ClassVar[str] = DATA

    source: str = setting(
        "synthetic",
        "Data source",
        "Where interactions come from: the built-in seeded synthetic generator, MovieLens-100K/1M folders, or a generic CSV/Parquet file with a column mapping.",
        choices=DATA_SOURCES,
        flat="data_source",
    )
    path: str | None = setting(
        None,
        "Data path",
        "Folder (MovieLens) or interactions file (csv/parquet). Ignored for synthetic data.",
        flat="data_path",
    )
    items_path: str | None = setting(
        None,
        "Items file (csv/parquet)",
        "Item table with id, title and genres; required for csv/parquet sources.",
    )
    users_path: str | None = setting(
        None,
        "Users file (csv/parquet)",
        "Optional user attribute table.",
    )
    column_mapping: Mapping[str, str] = setting(
        title="Column mapping",
        help="csv/parquet only: canonical column (user_id, item_id, rating, timestamp, title, genres) -> column name in your files.",
        factory=dict,
    )
    synthetic: SyntheticConfig = block(SyntheticConfig)

    def rules(self) -> list[str]:
        out = []
        if self.source not in ("synthetic", "history") and not self.path:
            out.append(
                f"data_path is required for data_source={self.source!r}: give the folder (MovieLens) or file (csv/parquet) to read"
            )
        if self.source in ("csv", "parquet") and not self.items_path:
            out.append(
                f"items_path is required for data_source={self.source!r}: give a table with item_id, title and optionally genres"
            )
        return out


@dataclass(frozen=True)
class ValidationConfig(Settings):
    """Data validation limits (recflow.validation)."""

    FORM_SECTION: ClassVar[str] = VALIDATION

    min_users: int = setting(
        20,
        "Minimum users",
        "Validation fails with fewer distinct users.",
        ge=1,
    )
    min_items: int = setting(
        20,
        "Minimum items",
        "Validation fails with fewer distinct items.",
        ge=1,
    )
    min_interactions: int = setting(
        500,
        "Minimum interactions",
        "Validation fails with fewer interaction rows.",
        ge=1,
    )
    min_rating: float = setting(
        0.0,
        "Minimum rating",
        "Lowest valid rating (inclusive).",
    )
    max_rating: float = setting(
        5.0,
        "Maximum rating",
        "Highest valid rating (inclusive).",
    )
    min_events_per_user: int = setting(
        3,
        "Minimum events per user",
        "Leave-last-out needs train + validation + test.",
        ge=1,
        param=False,
    )
    earliest_timestamp: int = setting(
        631152000,
        "Earliest timestamp",
        "Timestamps before this (1990-01-01) are invalid.",
        param=False,
    )
    max_future_seconds: int = setting(
        86400,
        "Future tolerance (s)",
        "Timestamps may lie at most this far after now.",
        ge=0,
        param=False,
    )
    sample_rows: int = setting(5, "Sample rows", "Failing rows shown per check.", ge=0, param=False)

    def rules(self) -> list[str]:
        if self.min_rating > self.max_rating:
            return [f"min_rating {self.min_rating} exceeds max_rating {self.max_rating}"]
        return []
