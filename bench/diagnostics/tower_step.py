"""Time of one two_stage towers step: the in-batch softmax over the batch's distinct items
(``recflow.models.two_stage.towers.tower_step``) against the B x B logits with each
positive's copies masked (the step it replaced, kept here as the reference), one batch per
compiled call (the loop before) and ``--per-call`` batches per call (the loop now,
``steps_per_execution``).

    python bench/diagnostics/tower_step.py [--users 600000 --items 50000 --batch 1024]

Tables of bench-scale's 20M size; pairs drawn from bench-scale's generator's events per user
and marginal item probability (``stream_truth`` with seed 7; not its per-user taste clusters
nor its distinct-pair re-draws), and, as the worst case for the
distinct-item step, items drawn uniformly (nearly every item of a batch distinct). Each
variant runs ``--rounds`` times in alternation; the median ms per step is reported. Writes
bench/results/tower-step.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from recflow.ops.machine import results_header

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def masked_step(tables: Any, optimizer: Any, log_q: np.ndarray, temperature: float) -> Callable:
    """The step before: B x B logits, a positive's other copies masked to -1e9 (compiled
    with ``compile_steps``, the convention of ``tower_step``: [S, B] in, summed loss out)."""
    import tensorflow as tf

    from recflow.models.two_stage.towers import compile_steps

    log_q_t = tf.constant(log_q)
    variables = tables.variables

    def step(users: tf.Tensor, items: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            u = tf.math.l2_normalize(tables.users(users), axis=1)
            i = tf.math.l2_normalize(tables.items(items), axis=1)
            logits = tf.matmul(u, i, transpose_b=True) / temperature
            logits += tf.transpose(tables.item_bias(items))
            logits -= tf.gather(log_q_t, items)[None, :]
            same = tf.equal(items[:, None], items[None, :])
            off_diag = tf.logical_not(tf.eye(tf.shape(items)[0], dtype=tf.bool))
            logits = tf.where(tf.logical_and(same, off_diag), -1e9, logits)
            labels = tf.range(tf.shape(items)[0])
            loss = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
            )
        optimizer.apply(tape.gradient(loss, variables), variables)
        return loss

    return compile_steps(step, optimizer, variables)


def time_steps(
    step: Callable, users: np.ndarray, items: np.ndarray, warmup: int, per_call: int
) -> float:
    """ms per step as the training loop runs it: ``per_call`` batches per compiled call, one
    loss read back per call."""
    for k in range(warmup):
        float(step(users[k : k + 1], items[k : k + 1]))
    t0 = time.perf_counter()
    for k in range(warmup, users.shape[0], per_call):
        float(step(users[k : k + per_call], items[k : k + per_call]))
    return 1000 * (time.perf_counter() - t0) / (users.shape[0] - warmup)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20_000_000)
    parser.add_argument("--users", type=int, default=600_000)
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--per-call", type=int, default=16, help="steps_per_execution's default")
    parser.add_argument("--out", default="bench/results/tower-step")
    args = parser.parse_args(argv)

    from recflow.data.stream import StreamConfig, stream_truth
    from recflow.models.sparse_adam import lazy_adam
    from recflow.models.two_stage.towers import TowerTables, tower_step

    stream = StreamConfig(n_events=args.events, n_users=args.users, n_items=args.items)
    truth = stream_truth(stream)
    rng = np.random.default_rng(0)
    shape = (args.steps, args.batch)
    users = rng.choice(
        args.users, size=shape, p=truth.user_events / truth.user_events.sum()
    ).astype(np.int32)
    draws = {
        "generator popularity": rng.choice(
            args.items, size=shape, p=truth.expected_item_probability(stream.taste)
        ),
        "uniform": rng.integers(0, args.items, size=shape),
    }
    rows = []
    for draw, items in draws.items():
        items = items.astype(np.int32)
        distinct = float(np.mean([np.unique(b).size for b in items]))
        # logQ as training computes it: each item's share of the pairs.
        counts = np.bincount(items.ravel(), minlength=args.items).astype(np.float64)
        log_q = np.log(np.maximum(counts, 1.0) / items.size).astype(np.float32)
        variants = {
            "masked B x B, 1 batch per call": (masked_step, 1),
            "distinct items, 1 batch per call": (tower_step, 1),
            f"distinct items, {args.per_call} batches per call": (tower_step, args.per_call),
        }
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.rounds):
            for name, (make, per_call) in variants.items():
                tables = TowerTables.create(args.users, args.items, 32, np.random.default_rng(1))
                step = make(tables, lazy_adam(0.01, epsilon=1e-8), log_q, 0.2)
                times[name].append(time_steps(step, users, items, 20, per_call))
        for name, values in times.items():
            row = {
                "items drawn": draw,
                "distinct items per batch": round(distinct, 1),
                "step": name,
                "ms_per_step": round(statistics.median(values), 2),
                "rounds_ms": [round(v, 2) for v in values],
                "pairs_per_s": round(args.batch / statistics.median(values) * 1000),
            }
            print(json.dumps(row), flush=True)
            rows.append(row)

    meta = {
        **results_header("tensorflow"),
        "users": args.users,
        "items": args.items,
        "batch": args.batch,
        "steps": args.steps,
        "per_call": args.per_call,
        "loadavg_end": Path("/proc/loadavg").read_text().split()[:3],
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({**meta, "rows": rows}, indent=2) + "\n")
    lines = [
        "# two_stage towers: one training step, distinct-item softmax vs masked B x B, one or "
        f"{args.per_call} batches per compiled call",
        "",
        f"{meta['date']}, {meta['machine']}, `{meta['command']}`",
        "",
        f"{args.users:,} users x {args.items:,} items, batch {args.batch}, {args.steps} steps "
        f"(20 warm-up) x {args.rounds} rounds, median. Same loss (tests/unit/test_two_stage.py).",
        "",
        "| items drawn | distinct items / batch | step | ms / step | rounds | pairs/s |",
        "| --- | ---: | --- | ---: | --- | ---: |",
        *(
            f"| {r['items drawn']} | {r['distinct items per batch']} | {r['step']} | "
            f"{r['ms_per_step']} | {r['rounds_ms']} | {r['pairs_per_s']:,} |"
            for r in rows
        ),
    ]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
