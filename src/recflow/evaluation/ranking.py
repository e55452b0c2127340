"""Offline full-ranking evaluation of any scorer on a leave-last-out split."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from recflow.arrays import sorted_unique
from recflow.errors import ConfigError, ContractError, DataError
from recflow.evaluation.metrics import per_user_ndcg, ranking_metrics
from recflow.schema import ITEM_ID, USER_ID
from recflow.types import Features, ScoreFn, Split

STAGES = ("validation", "test")
# Score cells (users x items) per chunk: top_k holds a handful of [B, N] arrays, so a chunk
# needs ~50 bytes a cell; 2**22 cells keep one chunk near 200 MB whatever the catalogue.
MAX_CHUNK_CELLS = 2**22
SAMPLE_SEED = 20240601  # fixed: candidate, popularity and champion see the same users
Z_95 = 1.959964


def chunk_users(n_items: int, batch_size: int = 1024) -> int:
    """Users per scoring chunk: at most ``batch_size`` and at most MAX_CHUNK_CELLS cells."""
    return max(1, min(batch_size, MAX_CHUNK_CELLS // max(1, n_items)))


def sample_users(users: np.ndarray, sample: int) -> np.ndarray:
    """Positions of a fixed random ``sample`` of ``users`` (all when 0 or >= their number).

    Seeded by SAMPLE_SEED and the sorted users, so two scorers on the same split are
    evaluated on the same users.
    """
    if sample <= 0 or sample >= users.size:
        return np.arange(users.size)
    rng = np.random.default_rng(SAMPLE_SEED)
    return np.sort(rng.choice(users.size, size=sample, replace=False))


@dataclass(frozen=True)
class RankedUsers:
    """Evaluated users (indices into ``features.user_ids``), their held-out item, their top-k."""

    users: np.ndarray  # [U] int64
    targets: np.ndarray  # [U] int64
    topk: np.ndarray  # [U, k] int64, -1 for "no item"
    k: int
    population: int = 0  # evaluable users the sample was drawn from (0: no sampling)

    def metrics(self, n_items: int) -> dict[str, float]:
        """The same dict ``evaluate_scorer`` returns.

        On a user sample it adds ``sampled_from`` (the evaluable users) and, for HR and NDCG,
        ``<metric>.sample_halfwidth``: the 95 % normal half-width of the sample mean with the
        finite-population correction, i.e. how far the all-user value may lie.
        """
        out = ranking_metrics(self.topk, self.targets, n_items, self.k)
        out["users"] = float(self.users.size)
        if self.population > self.users.size:
            n, pop = self.users.size, self.population
            ndcg = self.per_user_ndcg()
            fpc = np.sqrt((pop - n) / max(pop - 1, 1))
            for name, values in ((f"hr@{self.k}", ndcg > 0), (f"ndcg@{self.k}", ndcg)):
                sd = float(np.std(values.astype(np.float64), ddof=1)) if n > 1 else 0.0
                out[f"{name}.sample_halfwidth"] = Z_95 * sd / np.sqrt(n) * float(fpc)
            out["sampled_from"] = float(pop)
        return out

    def per_user_ndcg(self) -> np.ndarray:
        return per_user_ndcg(self.topk, self.targets, self.k)


def rank_users(
    score_fn: ScoreFn,
    split: Split,
    features: Features,
    *,
    k: int,
    stage: str = "validation",
    batch_size: int = 1024,
    user_sample: int = 0,
    progress: Callable[[int, int], None] | None = None,
    exclusions: TrainItems | None = None,
) -> RankedUsers:
    """Each evaluated user's top-k under the rules of :func:`evaluate_scorer`, kept per user.

    Users are scored in chunks of :func:`chunk_users` (bounded memory at any catalogue size).
    ``user_sample`` > 0 evaluates a fixed random sample of that many users (:func:`sample_users`).
    ``progress(done, total)`` is called after each chunk. ``exclusions`` may pass the
    features' :class:`TrainItems` when ranking repeatedly (e.g. after every epoch).
    """
    if stage not in STAGES:
        raise ConfigError(f"stage: expected one of {STAGES}, found {stage!r}")
    if k < 1 or batch_size < 1:
        raise ConfigError(f"expected k >= 1 and batch_size >= 1, found k={k}, {batch_size=}")
    frame = split.validation if stage == "validation" else split.test
    users, targets = held_out_pairs(frame, features, stage)
    if users.size == 0:
        raise DataError(
            f"no users to evaluate on {stage!r}: expected held-out rows for users with training "
            f"events, found {len(frame)} {stage} rows and none for the {features.n_users} "
            "training users; check that users have at least 3 events"
        )
    population = users.size
    chosen = sample_users(users, user_sample)
    users, targets = users[chosen], targets[chosen]
    also_excluded = None
    if stage == "test":
        val_users, val_items = held_out_pairs(split.validation, features, "validation")
        by_user = np.full(features.n_users, -1, dtype=np.int64)
        by_user[val_users] = val_items
        also_excluded = by_user[users]
    exclusions = exclusions or TrainItems(features)
    catalogue = _CatalogueMap(features.item_ids)
    topk = np.empty((users.size, k), dtype=np.int64)
    batch_size = chunk_users(features.n_items, batch_size)
    for start in range(0, users.size, batch_size):
        batch = slice(start, start + batch_size)
        batch_users = users[batch]
        scores = catalogue.align(*score_fn(features.user_ids[batch_users]), len(batch_users))
        exclusions.mask(scores, batch_users)
        if also_excluded is not None:
            extra = also_excluded[batch]
            rows = np.flatnonzero(extra >= 0)
            scores[rows, extra[rows]] = -np.inf
        topk[batch] = top_k(scores, targets[batch], k)
        if progress is not None:
            progress(min(start + batch_size, users.size), users.size)
    return RankedUsers(users, targets, topk, k, population if user_sample > 0 else 0)


def evaluate_scorer(
    score_fn: ScoreFn,
    split: Split,
    features: Features,
    *,
    k: int,
    stage: str = "validation",
    batch_size: int = 1024,
) -> dict[str, float]:
    """Rank the whole catalogue for each evaluated user and score the held-out item.

    Evaluated users are those in ``features.user_ids`` with a row in the stage's frame. Each
    user's training items are excluded (as at serving time, so an item re-consumed after
    training cannot be hit), and for ``stage="test"`` also the user's validation item. Items
    the scorer does not know score -inf; items only the scorer knows are ignored; NaN scores
    count as -inf. Items left at -inf are never recommended.

    Ties: items with equal scores are ordered by catalogue index, except that the held-out
    item goes after all items tied with it. Ties therefore never favour the target, so a
    constant scorer scores zero rather than perfectly.

    Returns ``hr@k``, ``ndcg@k``, ``mrr@k``, ``coverage@k`` and ``users`` (count evaluated).
    """
    return rank_users(score_fn, split, features, k=k, stage=stage, batch_size=batch_size).metrics(
        features.n_items
    )


def top_k(scores: np.ndarray, target: np.ndarray, k: int) -> np.ndarray:
    """Top-k item indices per row [B, k], best first; -1 where an item would be at -inf.

    Ties are ordered by item index with each row's ``target`` placed after its ties (see
    :func:`evaluate_scorer`). Only the k-th largest score is found by partition; the tie
    group at that boundary is cut by a cumulative count, then the k winners are sorted.
    """
    n_rows, n_items = scores.shape
    rows = np.arange(n_rows)
    kk = min(k, n_items)
    kth = -np.partition(-scores, kk - 1, axis=1)[:, kk - 1]
    above = scores > kth[:, None]
    equal = scores == kth[:, None]
    need = kk - above.sum(axis=1)
    tie_pos = np.cumsum(equal, axis=1) - 1  # position among the tied items, by item index
    target_tied = equal[rows, target]
    # Move the target to the end of its tie group: later tied items step up by one.
    tie_pos -= (np.arange(n_items)[None, :] > target[:, None]) & target_tied[:, None]
    tie_pos[rows, target] = np.where(target_tied, equal.sum(axis=1) - 1, tie_pos[rows, target])
    chosen = above | (equal & (tie_pos < need[:, None]))
    cols = np.nonzero(chosen)[1].reshape(n_rows, kk)
    chosen_scores = np.take_along_axis(scores, cols, axis=1)
    tie_key = np.where(cols == target[:, None], n_items, cols)
    order = np.lexsort((tie_key, -chosen_scores), axis=-1)
    best = np.take_along_axis(cols, order, axis=1)
    best[np.take_along_axis(chosen_scores, order, axis=1) == -np.inf] = -1
    if kk < k:
        best = np.pad(best, ((0, 0), (0, k - kk)), constant_values=-1)
    return best


def held_out_pairs(
    frame: pd.DataFrame, features: Features, stage: str
) -> tuple[np.ndarray, np.ndarray]:
    """(user index, item index) of the stage's rows for users known to ``features``."""
    missing = [c for c in (USER_ID, ITEM_ID) if c not in frame.columns]
    if missing:
        raise DataError(f"{stage} split: expected columns {[USER_ID, ITEM_ID]}, missing {missing}")
    user_idx = pd.Index(features.user_ids).get_indexer(frame[USER_ID].astype(str).to_numpy())
    known = user_idx >= 0
    user_idx = user_idx[known]
    items = frame[ITEM_ID].astype(str).to_numpy()[known]
    distinct = sorted_unique(user_idx).size
    if distinct != user_idx.size:
        raise DataError(
            f"{stage} split: expected one held-out row per user, found "
            f"{user_idx.size - distinct} duplicate users; rebuild the split "
            "with split_leave_last_out"
        )
    item_idx = pd.Index(features.item_ids).get_indexer(items)
    if (item_idx < 0).any():
        examples = sorted(set(items[item_idx < 0].tolist()))[:5]
        raise DataError(
            f"{stage} split: expected held-out items in the catalogue, found "
            f"{int((item_idx < 0).sum())} unknown (e.g. {examples}); validate the dataset"
        )
    order = np.argsort(user_idx, kind="stable")
    return user_idx[order].astype(np.int64), item_idx[order].astype(np.int64)


class TrainItems:
    """Training items per user in CSR form, to mask a batch with one fancy-index write."""

    def __init__(self, features: Features) -> None:
        order = np.argsort(features.train_user_idx, kind="stable")
        self.items = features.train_item_idx[order].astype(np.int64)
        self.counts = np.bincount(features.train_user_idx, minlength=features.n_users)
        self.starts = np.cumsum(self.counts) - self.counts

    def mask(self, scores: np.ndarray, batch_users: np.ndarray) -> None:
        counts = self.counts[batch_users]
        rows = np.repeat(np.arange(batch_users.size), counts)
        offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        positions = np.repeat(self.starts[batch_users], counts) + offsets
        scores[rows, self.items[positions]] = -np.inf


def _as_str_ids(ids: np.ndarray) -> np.ndarray:
    ids = np.asarray(ids)
    if ids.dtype.kind == "S":
        return np.char.decode(ids, "utf-8")
    if ids.dtype.kind == "O":
        return np.array([i.decode("utf-8") if isinstance(i, bytes) else str(i) for i in ids])
    return ids.astype(str)


class _CatalogueMap:
    """Map a scorer's catalogue order onto ``features.item_ids`` (cached across batches)."""

    def __init__(self, item_ids: np.ndarray) -> None:
        self.item_ids = item_ids
        self.raw: np.ndarray | None = None
        self.cols = np.empty(0, dtype=np.int64)

    def _columns(self, catalogue: np.ndarray) -> np.ndarray:
        if self.raw is not None and np.array_equal(self.raw, catalogue):
            return self.cols
        ids = pd.Index(_as_str_ids(catalogue))
        if not ids.is_unique:
            dups = ids[ids.duplicated()].unique()[:5].tolist()
            raise ContractError(
                f"scorer catalogue: expected unique item ids, found duplicates (e.g. {dups}); "
                "re-export the model"
            )
        cols = ids.get_indexer(self.item_ids)
        if not (cols >= 0).any():
            raise ContractError(
                f"scorer catalogue: expected item ids of the evaluation catalogue (e.g. "
                f"{self.item_ids[:3].tolist()}), found none of them (scorer has e.g. "
                f"{ids[:3].tolist()}); check that model and features come from the same data"
            )
        self.raw, self.cols = np.array(catalogue, copy=True), cols
        return cols

    def align(self, scores: np.ndarray, catalogue: np.ndarray, n_rows: int) -> np.ndarray:
        scores = np.asarray(scores)
        catalogue = np.asarray(catalogue)
        if scores.shape != (n_rows, catalogue.shape[0]):
            raise ContractError(
                f"scorer: expected scores of shape ({n_rows}, {catalogue.shape[0]}) for "
                f"{n_rows} users and its catalogue, found {scores.shape}"
            )
        cols = self._columns(catalogue)
        known = cols >= 0
        out = np.full((n_rows, self.item_ids.shape[0]), -np.inf, dtype=np.float64)
        out[:, known] = scores[:, cols[known]]
        out[np.isnan(out)] = -np.inf
        return out
