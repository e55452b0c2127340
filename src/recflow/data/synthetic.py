"""A seeded synthetic catalogue with planted, learnable structure.

Users have Dirichlet tastes over genres concentrated on one or two genres; items carry one or
two genres and a long-tail (Zipf-like) popularity. Each user's events are drawn without
repeats with probability proportional to popularity x taste match, so a model that learns
tastes beats popularity. ``synthetic_truth`` returns the planted quantities for tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from recflow import schema
from recflow.config import SyntheticConfig
from recflow.errors import ConfigError

if TYPE_CHECKING:
    from recflow.types import Dataset

GENRE_NAMES = (
    "Action", "Comedy", "Drama", "Romance", "Thriller", "Sci-Fi", "Horror", "Documentary",
    "Animation", "Adventure", "Crime", "Fantasy", "Musical", "Mystery", "War", "Western",
    "Children", "Film-Noir",
)  # fmt: skip
AGE_GROUPS = ("18-24", "25-34", "35-44", "45-54", "55+")

END_TIMESTAMP = 1735689600  # 2025-01-01T00:00:00Z: fixed so runs are reproducible
SPAN_SECONDS = 365 * 86400

TASTE_ALPHA = 0.25  # Dirichlet concentration: small -> each user prefers one or two genres
TASTE_FLOOR = 0.1  # share of taste spread evenly, so every item stays reachable
ZIPF_EXPONENT = 1.0
SECOND_GENRE_PROB = 0.4
MEAN_SESSION_EVENTS = 4.0
MIN_EVENTS = 5


@dataclass(frozen=True, eq=False)
class SyntheticTruth:
    """The planted structure. Row u of user arrays is ``user_ids[u]``, row i of item arrays
    is ``item_ids[i]``, column g of genre arrays is ``genres[g]``."""

    genres: tuple[str, ...]
    user_ids: np.ndarray  # [U] str
    item_ids: np.ndarray  # [N] str
    user_taste: np.ndarray  # [U, G] float64, rows sum to 1
    item_genres: np.ndarray  # [N, G] bool, one or two True per row
    item_popularity: np.ndarray  # [N] float64, sums to 1

    @property
    def user_top_genre(self) -> np.ndarray:
        """[U] index of each user's preferred genre."""
        return np.asarray(self.user_taste.argmax(axis=1))

    def taste_match(self) -> np.ndarray:
        """[U, N] how well each item's genres fit each user's taste (0..1)."""
        per_genre = self.item_genres / self.item_genres.sum(axis=1, keepdims=True)
        return np.asarray(self.user_taste @ per_genre.T)


# The generator holds several dense [users, items] float64 arrays (about 40 bytes a cell).
MAX_CELLS = 50_000_000


def _check(cfg: SyntheticConfig) -> None:
    for name in ("n_users", "n_items", "n_genres", "mean_events_per_user"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"synthetic {name}: expected >= 1, found {getattr(cfg, name)}")
    if cfg.n_users * cfg.n_items > MAX_CELLS:
        raise ConfigError(
            f"synthetic: expected users x items <= {MAX_CELLS:,} (this generator builds dense "
            f"users x items arrays, ~{40 * cfg.n_users * cfg.n_items / 2**30:.0f} GiB here), "
            f"found {cfg.n_users} x {cfg.n_items}; for large logs write parquet shards with "
            "recflow.data.stream (python -m recflow.data.stream) and read them with "
            "data_source=parquet"
        )


def _genre_names(n: int) -> tuple[str, ...]:
    return tuple(GENRE_NAMES[g] if g < len(GENRE_NAMES) else f"Genre {g + 1}" for g in range(n))


def _truth(cfg: SyntheticConfig, rng: np.random.Generator) -> SyntheticTruth:
    n_u, n_i, n_g = cfg.n_users, cfg.n_items, cfg.n_genres
    # Genres differ in size, as real catalogues do.
    genre_share = rng.dirichlet(np.full(n_g, 2.0))
    primary = rng.choice(n_g, size=n_i, p=genre_share)
    item_genres = np.zeros((n_i, n_g), dtype=bool)
    item_genres[np.arange(n_i), primary] = True
    if n_g > 1:
        second = (primary + rng.integers(1, n_g, size=n_i)) % n_g  # always != primary
        has_second = rng.random(n_i) < SECOND_GENRE_PROB
        item_genres[np.arange(n_i)[has_second], second[has_second]] = True
    rank = rng.permutation(n_i) + 1
    popularity = 1.0 / rank.astype(np.float64) ** ZIPF_EXPONENT
    popularity /= popularity.sum()
    taste = rng.dirichlet(np.full(n_g, TASTE_ALPHA), size=n_u)
    taste = (1 - TASTE_FLOOR) * taste + TASTE_FLOOR / n_g
    return SyntheticTruth(
        genres=_genre_names(n_g),
        user_ids=np.array([str(u + 1) for u in range(n_u)]),
        item_ids=np.array([str(i + 1) for i in range(n_i)]),
        user_taste=taste,
        item_genres=item_genres,
        item_popularity=popularity,
    )


def synthetic_truth(cfg: SyntheticConfig) -> SyntheticTruth:
    """The planted tastes, item genres and popularity behind ``generate_synthetic(cfg)``."""
    _check(cfg)
    return _truth(cfg, np.random.default_rng(cfg.seed))


def _event_counts(cfg: SyntheticConfig, rng: np.random.Generator) -> np.ndarray:
    extra_mean = max(cfg.mean_events_per_user - MIN_EVENTS, 0)
    if extra_mean == 0:
        extra = np.zeros(cfg.n_users, dtype=np.int64)
    else:
        # Negative binomial: a long tail of heavy users around the requested mean.
        r = 1.5
        extra = rng.negative_binomial(r, r / (r + extra_mean), size=cfg.n_users)
    return np.minimum(MIN_EVENTS + extra, cfg.n_items)


def _user_timestamps(n: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted timestamps of ``n`` events in sessions spread over the user's active period."""
    start = END_TIMESTAMP - SPAN_SECONDS + int(rng.integers(0, SPAN_SECONDS * 3 // 4))
    n_sessions = max(1, int(np.ceil(n / MEAN_SESSION_EVENTS)))
    session_start = np.sort(rng.integers(start, END_TIMESTAMP - 3600, size=n_sessions))
    session_of = np.sort(rng.integers(0, n_sessions, size=n))
    # Gaps inside a session: zero sometimes (equal timestamps happen in real logs), else minutes.
    gaps = np.where(rng.random(n) < 0.15, 0, rng.integers(20, 600, size=n))
    offsets = np.zeros(n, dtype=np.int64)
    for s in np.unique(session_of):
        idx = np.flatnonzero(session_of == s)
        offsets[idx] = np.cumsum(gaps[idx]) - gaps[idx[0]]
    return np.sort(np.minimum(session_start[session_of] + offsets, END_TIMESTAMP))


def generate_synthetic(cfg: SyntheticConfig) -> Dataset:
    """A deterministic dataset for ``cfg`` (same seed, same tables)."""
    import pandas as pd

    from recflow.types import Dataset

    _check(cfg)
    rng = np.random.default_rng(cfg.seed)
    truth = _truth(cfg, rng)
    match = truth.taste_match()  # [U, N]
    weights = truth.item_popularity[None, :] * match
    counts = _event_counts(cfg, rng)

    # Gumbel top-k: the first n items of argsort(-(log w + Gumbel)) are a draw of n items
    # without replacement with probability proportional to w, for all users at once.
    keys = np.log(weights) + rng.gumbel(size=weights.shape)
    order = np.argsort(-keys, axis=1)

    users, items, stamps = [], [], []
    for u, n in enumerate(counts):
        chosen = rng.permutation(order[u, :n])  # time order independent of draw order
        users.append(np.full(n, u))
        items.append(chosen)
        stamps.append(_user_timestamps(int(n), rng))
    u_idx = np.concatenate(users)
    i_idx = np.concatenate(items)

    # Ratings rise with taste match relative to the user's best genre, plus noise.
    fit = match[u_idx, i_idx] / truth.user_taste[u_idx].max(axis=1)
    ratings = np.clip(np.rint(1.5 + 3.5 * fit + rng.normal(0.0, 0.7, size=fit.shape)), 1, 5)

    interactions = pd.DataFrame(
        {
            schema.USER_ID: truth.user_ids[u_idx],
            schema.ITEM_ID: truth.item_ids[i_idx],
            schema.RATING: ratings,
            schema.TIMESTAMP: np.concatenate(stamps),
        }
    ).astype(schema.INTERACTION_DTYPES)

    primary = truth.item_genres.argmax(axis=1)
    items = pd.DataFrame(
        {
            schema.ITEM_ID: truth.item_ids,
            schema.TITLE: [
                f"Item {iid} ({truth.genres[g]})"
                for iid, g in zip(truth.item_ids, primary, strict=True)
            ],
            schema.GENRES: [
                schema.GENRE_SEPARATOR.join(truth.genres[g] for g in np.flatnonzero(row))
                for row in truth.item_genres
            ],
        }
    ).astype(schema.ITEM_DTYPES)

    user_table = pd.DataFrame(
        {
            schema.USER_ID: truth.user_ids,
            "age_group": rng.choice(AGE_GROUPS, size=cfg.n_users, p=[0.2, 0.35, 0.2, 0.15, 0.1]),
        }
    ).astype("string")
    return Dataset(interactions=interactions, items=items, users=user_table)
