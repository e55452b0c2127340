"""Stand-alone check of training throughput against the number of users (issue 14, item 1).

The ranking network's shape (user and item embeddings of 32, MLP 64-32-1, batch 512, binary
cross-entropy) trained for a fixed number of examples with Keras' dense Adam and with
recflow's LazyAdam, at several user counts and a fixed catalogue. Writes
bench/results/sparse_micro.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from recflow.ops.machine import results_header

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _model(n_users: int, n_items: int, optimizer: object, rows: bool = False) -> Any:
    import keras

    from recflow.models.sparse_adam import row_embedding

    emb = row_embedding if rows else keras.layers.Embedding
    u = keras.Input(shape=(), dtype="int32")
    i = keras.Input(shape=(), dtype="int32")
    x = keras.layers.Concatenate()([emb(n_users, 32)(u), emb(n_items, 32)(i)])
    x = keras.layers.Dense(64, activation="relu")(x)
    x = keras.layers.Dense(32, activation="relu")(x)
    model = keras.Model([u, i], keras.layers.Dense(1, activation="sigmoid")(x))
    model.compile(optimizer=optimizer, loss="binary_crossentropy")
    return model


VARIANTS = {  # name -> (lazy Adam, RowEmbedding)
    "keras Adam + keras Embedding (before)": (False, False),
    "LazyAdam + keras Embedding": (True, False),
    "LazyAdam + RowEmbedding (after)": (True, True),
}


def measure(
    n_users: int, n_items: int, examples: int, lazy: bool, batch: int, rows: bool = False
) -> float:
    import keras
    import tensorflow as tf

    from recflow.models.sparse_adam import lazy_adam

    keras.utils.set_random_seed(0)
    opt = lazy_adam(0.002) if lazy else keras.optimizers.Adam(0.002)
    model = _model(n_users, n_items, opt, rows)
    rng = np.random.default_rng(0)
    users = rng.integers(0, n_users, examples, dtype=np.int32)
    items = rng.integers(0, n_items, examples, dtype=np.int32)
    labels = (rng.random(examples) < 0.2).astype(np.float32)
    data = tf.data.Dataset.from_tensor_slices(((users, items), labels)).batch(batch).prefetch(2)
    model.fit(data.take(20), epochs=1, verbose=0)  # trace and warm up
    t0 = time.perf_counter()
    model.fit(data, epochs=1, verbose=0)
    return examples / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", default="3000,30000,100000,600000")
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--examples", type=int, default=300_000)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args(argv)
    rows = []
    for n_users in [int(x) for x in args.users.split(",")]:
        for name, (lazy, gather_rows) in VARIANTS.items():
            load = Path("/proc/loadavg").read_text().split()[:3]
            rate = measure(n_users, args.items, args.examples, lazy, args.batch, gather_rows)
            row = {
                "users": n_users,
                "items": args.items,
                "optimizer": name,
                "examples_per_s": round(rate),
                "loadavg": " ".join(load),
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        **results_header("tensorflow"),
        "examples": args.examples,
        "batch": args.batch,
    }
    (out / "sparse_micro.json").write_text(json.dumps({**meta, "rows": rows}, indent=2) + "\n")
    lines = [
        "# Training throughput against users: Keras' Adam and Embedding vs LazyAdam + RowEmbedding",
        "",
        f"{meta['date']}, {meta['machine']}, `{meta['command']}`",
        "",
        "| users | items | variant | examples/s | loadavg |",
        "| ---: | ---: | --- | ---: | --- |",
        *(
            f"| {r['users']} | {r['items']} | {r['optimizer']} | {r['examples_per_s']} "
            f"| {r['loadavg']} |"
            for r in rows
        ),
    ]
    (out / "sparse_micro.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
