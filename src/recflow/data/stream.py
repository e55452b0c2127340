"""A streaming synthetic event log of any size, written as parquet shards.

Unlike ``recflow.data.synthetic`` (dense users x items weights, for tests and demos), nothing
here is users x items: memory is O(users + items + one shard).

- Items: one primary genre (genre sizes differ) and sometimes a second; popularity a power
  law over a random rank, ``p_i ~ rank^-item_exponent``.
- Users: activity a power law, ``a_u ~ rank^-user_exponent``; every user gets at least
  ``MIN_EVENTS`` events (leave-last-out needs 3) and the rest of ``n_events`` is split by
  activity. Each user belongs to one taste cluster (a genre).
- Events: with probability ``taste`` an item of the user's cluster (by popularity inside the
  genre), else an item of the whole catalogue (by popularity). With ``distinct`` (default) a
  user's repeated items are re-drawn a few times, so (user, item) pairs are almost all
  distinct; that flattens the realised item skew (the manifest records it).
- Timestamps: strictly increasing per user inside the user's active period of the year.

Users are generated in chunks and the rows cut into shards of exactly ``shard_events`` rows
(the last may be smaller): ``interactions/part-00000.parquet`` ..., plus ``items.parquet``
and ``users.parquet``. ``pandas.read_parquet`` reads the ``interactions`` folder as one table,
so the folder is a ``data_source=parquet`` input (``data_path`` = the folder).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from recflow import schema
from recflow.errors import ConfigError

MIN_EVENTS = 3
REDRAW_ROUNDS = 10
END_TIMESTAMP = 1735689600  # 2025-01-01T00:00:00Z
SPAN_SECONDS = 365 * 86400
INTERACTIONS_DIR = "interactions"
ITEMS_FILE = "items.parquet"
USERS_FILE = "users.parquet"
MANIFEST_FILE = "manifest.json"


@dataclass(frozen=True)
class StreamConfig:
    n_events: int
    n_users: int
    n_items: int
    n_genres: int = 18
    item_exponent: float = 1.0
    user_exponent: float = 0.8
    taste: float = 0.7  # share of events drawn from the user's taste cluster
    shard_events: int = 1_000_000
    seed: int = 7
    # Re-draw a user's repeated items (a log of distinct (user, item) pairs, as ratings are).
    # Heavy users then cannot take the top items again, which flattens the item skew below
    # the drawn law; False keeps repeats (re-consumption) and the exact law.
    distinct: bool = True

    def check(self) -> None:
        problems = []
        if self.n_users < 1 or self.n_items < 2 or self.n_genres < 1 or self.shard_events < 1:
            problems.append(
                f"expected n_users >= 1, n_items >= 2, n_genres >= 1, shard_events >= 1; found "
                f"{self.n_users}, {self.n_items}, {self.n_genres}, {self.shard_events}"
            )
        if self.n_events < MIN_EVENTS * self.n_users:
            problems.append(
                f"expected n_events >= {MIN_EVENTS} x n_users = {MIN_EVENTS * self.n_users} "
                f"(leave-last-out needs {MIN_EVENTS} events a user), found {self.n_events}; "
                "lower n_users or raise n_events"
            )
        if not 0.0 <= self.taste <= 1.0:
            problems.append(f"taste: expected in [0, 1], found {self.taste}")
        if problems:
            raise ConfigError("streaming generator: " + "; ".join(problems))


@dataclass(frozen=True, eq=False)
class StreamTruth:
    """The planted quantities (O(users + items)): what the shards are drawn from."""

    item_genre: np.ndarray  # [N] primary genre
    item_second: np.ndarray  # [N] second genre or -1
    item_popularity: np.ndarray  # [N] sums to 1
    user_cluster: np.ndarray  # [U] taste genre
    user_events: np.ndarray  # [U] events per user, sums to n_events

    def expected_item_probability(self, taste: float) -> np.ndarray:
        """Marginal probability of each item per event (the target the draws follow)."""
        n_genres = int(max(self.item_genre.max(), self.user_cluster.max())) + 1
        cluster_events = np.bincount(
            self.user_cluster, weights=self.user_events, minlength=n_genres
        )
        cluster_share = cluster_events / cluster_events.sum()
        genre_mass = np.bincount(self.item_genre, weights=self.item_popularity, minlength=n_genres)
        inside = self.item_popularity / genre_mass[self.item_genre]
        return np.asarray(
            (1 - taste) * self.item_popularity + taste * cluster_share[self.item_genre] * inside
        )


def top_share(weights: np.ndarray, fraction: float) -> float:
    """Share of the total held by the top ``fraction`` of entries (at least one entry)."""
    w = np.sort(np.asarray(weights, np.float64))[::-1]
    top = max(1, int(round(fraction * w.size)))
    return float(w[:top].sum() / w.sum())


def _power_law(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    w = 1.0 / (rng.permutation(n) + 1.0) ** exponent
    return np.asarray(w / w.sum())


def stream_truth(cfg: StreamConfig) -> StreamTruth:
    cfg.check()
    rng = np.random.default_rng(cfg.seed)
    genre_share = rng.dirichlet(np.full(cfg.n_genres, 2.0))
    item_genre = rng.choice(cfg.n_genres, size=cfg.n_items, p=genre_share)
    second = (item_genre + rng.integers(1, max(cfg.n_genres, 2), size=cfg.n_items)) % max(
        cfg.n_genres, 2
    )
    item_second = np.where((rng.random(cfg.n_items) < 0.4) & (cfg.n_genres > 1), second, -1).astype(
        np.int64
    )
    popularity = _power_law(cfg.n_items, cfg.item_exponent, rng)
    # Users pick clusters by where the popularity is, so no cluster is an empty genre.
    mass = np.bincount(item_genre, weights=popularity, minlength=cfg.n_genres)
    user_cluster = rng.choice(cfg.n_genres, size=cfg.n_users, p=mass / mass.sum())
    activity = _power_law(cfg.n_users, cfg.user_exponent, rng)
    cap = max(MIN_EVENTS, cfg.n_items // 4)
    extra = rng.multinomial(cfg.n_events - MIN_EVENTS * cfg.n_users, activity)
    events = MIN_EVENTS + extra
    # Users above the cap (a quarter of the catalogue) hand their surplus to the others.
    surplus = int(np.maximum(events - cap, 0).sum())
    events = np.minimum(events, cap)
    while surplus > 0:
        room = cap - events
        if room.sum() == 0:
            raise ConfigError(
                f"streaming generator: {cfg.n_events} events do not fit {cfg.n_users} users "
                f"with at most {cap} distinct items each; raise n_users or n_items"
            )
        give = np.minimum(rng.multinomial(surplus, room / room.sum()), room)
        events += give
        surplus -= int(give.sum())
    return StreamTruth(item_genre, item_second, popularity, user_cluster, events.astype(np.int64))


class _ItemSampler:
    """Draws items by popularity from the whole catalogue or from one genre (searchsorted)."""

    def __init__(self, truth: StreamTruth, n_genres: int) -> None:
        self.order = np.argsort(truth.item_genre, kind="stable")
        p = truth.item_popularity[self.order]
        self.cum = np.cumsum(p)
        self.cum[-1] = np.inf  # float round-off never falls off the end
        bounds = np.searchsorted(truth.item_genre[self.order], np.arange(n_genres + 1))
        starts = np.concatenate([[0.0], np.cumsum(p)])
        self.lo, self.hi = starts[bounds[:-1]], starts[bounds[1:]]
        self.total = float(np.sum(p))

    def draw(self, genre: np.ndarray, in_genre: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        lo = np.where(in_genre, self.lo[genre], 0.0)
        hi = np.where(in_genre, self.hi[genre], self.total)
        u = lo + rng.random(genre.size) * (hi - lo)
        pos = np.minimum(np.searchsorted(self.cum, u, side="right"), self.order.size - 1)
        return np.asarray(self.order[pos])


def _chunk_events(
    users: np.ndarray,
    truth: StreamTruth,
    cfg: StreamConfig,
    sampler: _ItemSampler,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    counts = truth.user_events[users]
    u = np.repeat(users, counts)
    genre = truth.user_cluster[u]
    in_genre = rng.random(u.size) < cfg.taste
    items = sampler.draw(genre, in_genre, rng)
    for round_ in range(REDRAW_ROUNDS if cfg.distinct else 0):  # re-draw repeated items
        keys = u.astype(np.int64) * cfg.n_items + items
        order = np.argsort(keys, kind="stable")
        dup = np.zeros(u.size, bool)
        dup[order[1:]] = keys[order[1:]] == keys[order[:-1]]
        bad = np.flatnonzero(dup)
        if bad.size == 0:
            break
        if round_ >= REDRAW_ROUNDS // 2:  # a small genre may be exhausted: go catalogue-wide
            in_genre[bad] = False
        items[bad] = sampler.draw(genre[bad], in_genre[bad], rng)
    # Strictly increasing timestamps inside each user's active period.
    span = rng.integers(SPAN_SECONDS // 12, SPAN_SECONDS, size=users.size)
    start = END_TIMESTAMP - span - 3600
    offsets = rng.random(u.size) * np.repeat(span, counts)
    order = np.lexsort((offsets, u))
    u, items, offsets = u[order], items[order], offsets[order]
    first = np.repeat(np.cumsum(counts) - counts, counts)
    rank = np.arange(u.size) - first
    stamps = np.repeat(start, counts) + offsets.astype(np.int64) + rank
    ratings = np.where(truth.item_genre[items] == genre[order], 4.0, 3.0) + rng.integers(
        0, 2, size=u.size
    )
    return u, items, stamps.astype(np.int64), ratings.astype(np.float64)


def write_stream(
    cfg: StreamConfig, out_dir: str | Path, progress: Callable[[str], None] | None = None
) -> Path:
    """Write the log for ``cfg`` under ``out_dir``; returns the interactions folder."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    truth = stream_truth(cfg)
    rng = np.random.default_rng([cfg.seed, 1])
    out = Path(out_dir)
    shards = out / INTERACTIONS_DIR
    shards.mkdir(parents=True, exist_ok=True)
    for old in shards.glob("part-*.parquet"):
        old.unlink()
    sampler = _ItemSampler(truth, cfg.n_genres)
    cum = np.cumsum(truth.user_events)
    pending: list[pa.Table] = []
    pending_rows = 0
    written = 0

    def ids(prefix: str, idx: np.ndarray) -> pa.Array:
        return pc.binary_join_element_wise(prefix, pc.cast(pa.array(idx + 1), pa.string()), "")

    def flush(final: bool) -> None:
        nonlocal pending, pending_rows, written
        table = pa.concat_tables(pending) if pending else None
        while table is not None and (
            table.num_rows >= cfg.shard_events or (final and table.num_rows)
        ):
            take = min(cfg.shard_events, table.num_rows)
            pq.write_table(table.slice(0, take), shards / f"part-{written:05d}.parquet")
            written += 1
            table = table.slice(take)
            if progress:
                progress(f"generator: shard {written} written ({take:,} events)")
        pending = [table] if table is not None and table.num_rows else []
        pending_rows = table.num_rows if table is not None else 0

    start = 0
    while start < cfg.n_users:
        # Users whose events make about one shard.
        stop = int(np.searchsorted(cum, (cum[start - 1] if start else 0) + cfg.shard_events))
        stop = min(max(stop, start + 1), cfg.n_users)
        u, items, stamps, ratings = _chunk_events(np.arange(start, stop), truth, cfg, sampler, rng)
        pending.append(
            pa.table(
                {
                    schema.USER_ID: ids("", u),
                    schema.ITEM_ID: ids("", items),
                    schema.RATING: pa.array(ratings),
                    schema.TIMESTAMP: pa.array(stamps),
                }
            )
        )
        pending_rows += u.size
        if pending_rows >= cfg.shard_events:
            flush(final=False)
        start = stop
    flush(final=True)
    genre_names = [f"Genre {g + 1}" for g in range(cfg.n_genres)]
    genres = [
        genre_names[g] + ("" if s < 0 else schema.GENRE_SEPARATOR + genre_names[s])
        for g, s in zip(truth.item_genre.tolist(), truth.item_second.tolist(), strict=True)
    ]
    item_ids = ids("", np.arange(cfg.n_items))
    titles = pc.binary_join_element_wise("Item ", item_ids, "")
    pq.write_table(
        pa.table({schema.ITEM_ID: item_ids, schema.TITLE: titles, schema.GENRES: genres}),
        out / ITEMS_FILE,
    )
    pq.write_table(pa.table({schema.USER_ID: ids("", np.arange(cfg.n_users))}), out / USERS_FILE)
    manifest = {
        **asdict(cfg),
        "shards": written,
        "target_top1pct_item_share": top_share(truth.expected_item_probability(cfg.taste), 0.01),
        "target_top1pct_user_share": top_share(truth.user_events, 0.01),
    }
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    return shards
