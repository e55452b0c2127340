"""What the distinct (user, item) pairs cost: ``np.unique`` against ``recflow.arrays.sorted_unique``.

Keys ``user * n_items + item`` as the stages build them, at bench-scale's three sizes (events,
users, items), users uniform and items power-law (exponent 1.1): not bench-scale's generator,
whose users are skewed too and whose 20M log has 18.6M distinct training pairs (15.7M here).
Each way runs ``--repeats`` times per size (median reported); both must return the same array.
Writes bench/results/unique_cost.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from recflow.arrays import sorted_unique
from recflow.ops.machine import code_label, results_header

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale_results import SIZES  # noqa: E402 (bench/scale_results.py: the sizes of bench-scale)

WAYS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "np.unique": np.unique,
    "sorted_unique": sorted_unique,
}


def keys(events: int, users: int, items: int, seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    user = rng.integers(0, users, events, dtype=np.int64)
    popularity = 1.0 / np.arange(1, items + 1) ** 1.1
    item = rng.choice(items, events, p=popularity / popularity.sum()).astype(np.int64)
    return user * items + item


def measure(values: np.ndarray, repeats: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    results = {}
    for name, fn in WAYS.items():
        seconds = []
        for _ in range(repeats):
            started = time.perf_counter()
            results[name] = fn(values)
            seconds.append(time.perf_counter() - started)
        out[name] = {"median_s": round(float(np.median(seconds)), 3),
                     "runs_s": [round(s, 3) for s in seconds]}  # fmt: skip
    if not np.array_equal(results["np.unique"], results["sorted_unique"]):
        raise SystemExit("bench: sorted_unique and np.unique disagree")
    out["distinct"] = int(results["np.unique"].size)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--sizes", default="1M,5M,20M")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args(argv)
    started = datetime.now(UTC).isoformat(timespec="seconds")
    rows = []
    for size in [s for s in args.sizes.split(",") if s]:
        events, users, items = SIZES[size]
        row = {"size": size, "events": events, "users": users, "items": items,
               **measure(keys(events, users, items), args.repeats)}  # fmt: skip
        print(json.dumps(row), flush=True)
        rows.append(row)
    doc = {
        **results_header("numpy", argv=["bench/unique_cost.py", *(argv or sys.argv[1:])]),
        "date": started,
        "code": code_label(),
        "numpy": np.__version__,
        "rows": rows,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "unique_cost.json").write_text(json.dumps(doc, indent=2) + "\n")
    lines = [
        "# Distinct (user, item) keys: np.unique against sorted_unique",
        "",
        f"{doc['date']} · {doc['machine']} · NumPy {doc['numpy']} · code {doc['code']} · "
        f"`{doc['command']}`",
        "",
        f"Median of {args.repeats} runs each; both ways returned the same array.",
        "",
        "| size | events | distinct keys | np.unique s | sorted_unique s | ratio |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        slow, fast = r["np.unique"]["median_s"], r["sorted_unique"]["median_s"]
        ratio = f"{slow / fast:.0f}x" if fast > 0 else ""
        lines.append(
            f"| {r['size']} | {r['events']:,} | {r['distinct']:,} | {slow} | {fast} | {ratio} |"
        )
    (out / "unique_cost.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
