"""Examples/s of the ranking network's ``fit`` with tf.data's model-based autotuner on (the
input before: ``row_batches(...).prefetch(AUTOTUNE)``) and off (``training_batches``, the
input ``fit_epoch`` uses now).

    python bench/diagnostics/ranking_input.py [--users 600000 --items 50000 --rounds 10]

The network is ``build_ranking_mlp`` with the default TrainConfig (batch 512, 16 steps per
call) over tables of bench-scale's 20M size (random profile features, 18 genres). Users and
items are drawn from bench-scale's generator's events per user and marginal item probability
(``stream_truth`` with seed 7), one positive label in five (1 positive : 4 negatives). Each
round is one ``fit`` over ``--steps`` batches; the two inputs alternate round by round in one
process on one model, so both see the same host. Writes
bench/results/ranking-input.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from recflow.ops.machine import results_header

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def features_of_size(n_users: int, n_items: int, n_genres: int, rng: np.random.Generator) -> Any:
    """Features with random profiles: the network's shapes at the given sizes."""
    from recflow.types import Features

    return Features(
        user_ids=np.arange(n_users).astype(str),
        item_ids=np.arange(n_items).astype(str),
        item_titles=np.arange(n_items).astype(str),
        genres=tuple(f"g{g}" for g in range(n_genres)),
        train_user_idx=np.zeros(1, np.int32),
        train_item_idx=np.zeros(1, np.int32),
        user_genre_pref=rng.dirichlet(np.ones(n_genres), n_users).astype(np.float32),
        user_activity=rng.random(n_users, dtype=np.float32),
        item_popularity=rng.random(n_items, dtype=np.float32),
        item_genres=(rng.random((n_items, n_genres)) < 0.1).astype(np.float32),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20_000_000)
    parser.add_argument("--users", type=int, default=600_000)
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--steps", type=int, default=1600)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--out", default="bench/results/ranking-input")
    args = parser.parse_args(argv)

    import keras
    import tensorflow as tf

    from recflow.config import TrainConfig
    from recflow.data.stream import StreamConfig, stream_truth
    from recflow.models.pointwise import row_batches, training_batches
    from recflow.models.ranking_mlp.network import build_ranking_mlp

    cfg = TrainConfig()
    stream = StreamConfig(n_events=args.events, n_users=args.users, n_items=args.items)
    truth = stream_truth(stream)
    rng = np.random.default_rng(0)
    n = args.steps * cfg.batch_size
    users = rng.choice(args.users, size=n, p=truth.user_events / truth.user_events.sum())
    items = rng.choice(args.items, size=n, p=truth.expected_item_probability(stream.taste))
    rows = (users.astype(np.int32), items.astype(np.int32), (rng.random(n) < 0.2).astype("f4"))
    keras.utils.set_random_seed(cfg.seed)
    model = build_ranking_mlp(features_of_size(args.users, args.items, 18, rng), cfg)

    inputs = {
        "autotuner on (before)": lambda: row_batches(*rows, cfg.batch_size).prefetch(
            tf.data.AUTOTUNE
        ),
        "autotuner off (training_batches, now)": lambda: training_batches(*rows, cfg.batch_size),
    }
    rates: dict[str, list[float]] = {name: [] for name in inputs}
    for make in inputs.values():  # traces the step and builds the optimizer's slots
        model.fit(make(), epochs=1, verbose=0)
    for _ in range(args.rounds):
        for name, make in inputs.items():
            t0 = time.perf_counter()
            model.fit(make(), epochs=1, verbose=0)
            rates[name].append(n / (time.perf_counter() - t0))
    results: list[dict[str, Any]] = []
    for name, values in rates.items():
        row = {
            "input": name,
            "median_examples_per_s": round(statistics.median(values)),
            "min_examples_per_s": round(min(values)),
            "rounds_k_examples_per_s": [round(v / 1000) for v in values],
        }
        print(json.dumps(row), flush=True)
        results.append(row)

    meta = {
        **results_header("tensorflow"),
        "users": args.users,
        "items": args.items,
        "batch": cfg.batch_size,
        "steps_per_execution": cfg.steps_per_execution,
        "steps_per_round": args.steps,
        "rounds": args.rounds,
        "loadavg_end": Path("/proc/loadavg").read_text().split()[:3],
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({**meta, "rows": results}, indent=2) + "\n")
    lines = [
        "# Ranking network: fit's examples/s with tf.data's autotuner on and off",
        "",
        f"{meta['date']}, {meta['machine']}, `{meta['command']}`",
        "",
        f"{args.users:,} users x {args.items:,} items, batch {cfg.batch_size}, "
        f"{cfg.steps_per_execution} steps per call, {args.steps} batches per round, "
        f"{args.rounds} rounds per input in alternation.",
        "",
        "| input | median examples/s | slowest round | rounds (k examples/s) |",
        "| --- | ---: | ---: | --- |",
        *(
            f"| {r['input']} | {r['median_examples_per_s']:,} | {r['min_examples_per_s']:,} | "
            f"{' '.join(str(k) for k in r['rounds_k_examples_per_s'])} |"
            for r in results
        ),
    ]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
