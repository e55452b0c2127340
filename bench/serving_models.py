"""The models `bench/serving.py` serves, each trained and exported by the pipeline's own code.

toy             the ranking MLP, one epoch on the default synthetic data (400 users x 250 items)
ml100k          the default model (ranking MLP, config defaults) trained on MovieLens-100K
two_stage_50k   model=two_stage (config defaults: N=200 candidates) on a generated log with a
                50,000-item catalogue, drawn by :func:`sparse_log` below

Why a sampler here: ``recflow.data.synthetic.generate_synthetic`` builds dense users x items
arrays (taste match, Gumbel keys, argsort: 10k x 50k x 8 bytes = 4 GB each), so this file
draws the same kind of log (power-law item popularity, users with one or two favourite
genres, sessions of timestamps) event by event, in memory linear in events + items + users.

Each builder trains into ``<cache>/<name>/train`` and exports to ``<cache>/<name>/export``;
a later run with the same cache reuses the train folder (training the 50k model takes ~10
minutes on a loaded machine) but always exports again; the results file records the reuse.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

TOP_K = 10
MOVIELENS_100K = Path("/work/shared/datasets/movielens-100k")


def sparse_log(
    n_users: int,
    n_items: int,
    mean_events: int,
    *,
    n_genres: int = 18,
    zipf: float = 1.0,
    seed: int = 11,
) -> Any:
    """A ``recflow.types.Dataset`` drawn without dense users x items arrays.

    Each item has a primary genre and a Zipf popularity rank; each user a Dirichlet(0.25)
    taste over genres (so one or two dominate, plus 10 % spread evenly) and a negative-binomial
    event count (at least 5). An event picks a genre from the user's taste, then an item of
    that genre with probability proportional to popularity; repeats of a (user, item) pair are
    dropped. Timestamps are sorted uniform draws over a year per user.
    """
    import pandas as pd

    from recflow import schema
    from recflow.types import Dataset

    rng = np.random.default_rng(seed)
    genre = rng.choice(n_genres, size=n_items, p=rng.dirichlet(np.full(n_genres, 2.0)))
    popularity = 1.0 / (rng.permutation(n_items) + 1.0) ** zipf
    by_genre = [np.flatnonzero(genre == g) for g in range(n_genres)]
    cdfs = [np.cumsum(popularity[ids]) / popularity[ids].sum() for ids in by_genre]
    taste = rng.dirichlet(np.full(n_genres, 0.25), size=n_users) * 0.9 + 0.1 / n_genres
    counts = 5 + rng.negative_binomial(1.5, 1.5 / (1.5 + max(mean_events - 5, 1)), n_users)
    draws = (counts * 1.3).astype(np.int64) + 2  # extra draws make up for dropped repeats
    users = np.repeat(np.arange(n_users), draws)
    cum_taste = np.cumsum(taste, axis=1)
    picked_genre = (rng.random(users.size)[:, None] > cum_taste[users]).sum(axis=1)
    picked_genre = np.minimum(picked_genre, n_genres - 1)
    items = np.empty(users.size, np.int64)
    for g in range(n_genres):
        rows = np.flatnonzero(picked_genre == g)
        if by_genre[g].size == 0:  # an empty genre: fall back to the most popular item
            items[rows] = int(np.argmax(popularity))
            continue
        pos = np.searchsorted(cdfs[g], rng.random(rows.size))
        items[rows] = by_genre[g][np.minimum(pos, by_genre[g].size - 1)]
    keys, first = np.unique(users * n_items + items, return_index=True)
    keep = np.sort(first)  # first draw of each pair, in draw order
    users, items = users[keep], items[keep]
    # At most counts[u] events per user: rank within user, drop the rest.
    starts = np.concatenate([[0], np.cumsum(np.bincount(users, minlength=n_users))[:-1]])
    rank = np.arange(users.size) - starts[users]
    keep = rank < counts[users]
    users, items = users[keep], items[keep]
    end = 1735689600
    stamps = end - rng.integers(0, 365 * 86400, size=users.size)
    order = np.lexsort((stamps, users))
    users, items, stamps = users[order], items[order], stamps[order]
    user_ids = np.array([str(u + 1) for u in range(n_users)])
    item_ids = np.array([str(i + 1) for i in range(n_items)])
    names = [f"Genre {g + 1}" for g in range(n_genres)]
    interactions = pd.DataFrame(
        {
            schema.USER_ID: user_ids[users],
            schema.ITEM_ID: item_ids[items],
            schema.RATING: np.full(users.size, 4.0),
            schema.TIMESTAMP: stamps,
        }
    ).astype(schema.INTERACTION_DTYPES)
    catalogue = pd.DataFrame(
        {
            schema.ITEM_ID: item_ids,
            schema.TITLE: [f"Item {i} ({names[g]})" for i, g in zip(item_ids, genre, strict=True)],
            schema.GENRES: [names[g] for g in genre],
        }
    ).astype(schema.ITEM_DTYPES)
    return Dataset(interactions=interactions, items=catalogue, users=None)


def _fit_export(kind_name: str, ds: Any, cfg: Any, out: Path) -> dict[str, Any]:
    """Split, features, fit and export through the zoo, as the training DAG does.

    A train folder left by an earlier run with the same cache (``fit.json`` written last) is
    reused: the fit is skipped, the export always runs with the current code.
    """
    from recflow.features import build_features, split_leave_last_out
    from recflow.models.zoo import get_kind

    t0 = time.perf_counter()
    split = split_leave_last_out(ds.interactions)
    features = build_features(split.train, ds.items)
    kind = get_kind(kind_name)
    done = out / "train" / "fit.json"
    if done.exists():
        fitted = json.loads(done.read_text())
        fitted["reused_fit"] = str(out / "train")
    else:
        fitted = kind.fit(
            features, split, cfg, lambda line: print(f"[fit] {line}", flush=True), out / "train"
        )
        fitted["fit_seconds"] = round(time.perf_counter() - t0, 1)
        done.write_text(json.dumps({k: v for k, v in fitted.items() if k != "history"}))
    users = [str(u) for u in features.user_ids]
    kind.export(out / "train", features, out / "export", TOP_K, users[:8])
    return {
        "kind": kind_name,
        "users": features.n_users,
        "items": features.n_items,
        "events": int(len(ds.interactions)),
        "top_k": TOP_K,
        "config": {
            k: getattr(cfg, k)
            for k in ("epochs", "batch_size", "embedding_dim", "negatives_per_positive")
        },
        "fit_metrics": fitted.get("metrics", {}),
        "split_and_fit_seconds": fitted.get("fit_seconds"),
        "fit_reused_from": fitted.get("reused_fit"),
        "user_ids": users,
    }


def build(name: str, cache: Path) -> tuple[Path, dict[str, Any]]:
    """(SavedModel folder, description) of model ``name``, reusing ``cache`` when it has it."""
    from recflow.config import SyntheticConfig, TrainConfig

    folder = cache / name
    if (folder / "export").exists():
        shutil.rmtree(folder / "export")  # always exported by the current code
    folder.mkdir(parents=True, exist_ok=True)
    if name == "toy":
        from recflow.data import generate_synthetic

        ds = generate_synthetic(SyntheticConfig())
        info = _fit_export("ranking_mlp", ds, TrainConfig(epochs=1), folder)
        info["data"] = "default synthetic data (recflow.data.generate_synthetic)"
    elif name == "ml100k":
        from recflow.data import read_movielens_100k

        ds = read_movielens_100k(MOVIELENS_100K)
        info = _fit_export("ranking_mlp", ds, TrainConfig(), folder)
        info["data"] = f"MovieLens-100K ({MOVIELENS_100K}), leave-last-out split"
    elif name == "two_stage_50k":
        t0 = time.perf_counter()
        ds = sparse_log(10_000, 50_000, 50)
        generate = round(time.perf_counter() - t0, 1)
        info = _fit_export("two_stage", ds, TrainConfig(model="two_stage"), folder)
        info["data"] = (
            "bench/serving_models.sparse_log(10000 users, 50000 items, mean 50 events, seed 11)"
            f", generated in {generate} s; leave-last-out split"
        )
        cfg = TrainConfig()
        info["config"]["two_stage_candidates"] = cfg.two_stage.candidates
        info["config"]["two_stage_tower_epochs"] = cfg.two_stage.tower_epochs
    else:
        raise SystemExit(f"unknown bench model {name!r}: expected toy, ml100k or two_stage_50k")
    info["name"] = name
    return folder / "export", info
