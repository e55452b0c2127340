"""two_stage on MovieLens-100K trained with the towers' step before and after it moved to the
batch's distinct items (bench/diagnostics/tower_step.py): test NDCG@10 of each, intervals and
the paired difference, on both outer splits of bench/PROTOCOL.md.

    python bench/diagnostics/two_stage_step_quality.py --data ../shared/datasets/movielens-100k

The two steps compute the same loss (tests/unit/test_two_stage.py), so the trainings differ by
floating-point rounding only; this shows what that does to quality. Same seeds, same splits,
same settings (quality_lib.base_config, as the quality benchmark's zoo rows).
Nothing is chosen from the test split here. Writes
bench/results/two_stage/step-quality.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: quality_lib, quality_rows

from quality_lib import NDCG, base_config, load_dataset, zoo_scorer  # noqa: E402
from quality_rows import _score, outer_fold  # noqa: E402
from tower_step import masked_step  # noqa: E402

from recflow.ops.machine import results_header  # noqa: E402

STEPS = {"masked B x B (before)": masked_step, "distinct items (now)": None}


def run(protocol: str, fold: Any, step_name: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(user ids, per-user NDCG@10) of one two_stage training with the named towers step."""
    from recflow.models.two_stage import towers

    current = towers.tower_step
    replacement = STEPS[step_name]
    if replacement is not None:
        towers.tower_step = replacement  # type: ignore[assignment]
    try:
        with tempfile.TemporaryDirectory(prefix="two-stage-step-") as tmp:
            scorer, _ = zoo_scorer("two_stage", fold, base_config("two_stage", seed), Path(tmp))
            ids, per_user = _score(protocol, fold, scorer)
    finally:
        towers.tower_step = current
    return np.asarray(ids).astype(str), np.asarray(per_user[NDCG], np.float64)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/datasets/movielens-100k"))
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--out", default="bench/results/two_stage/step-quality")
    args = parser.parse_args(argv)

    from recflow.evaluation.bootstrap import bootstrap_mean, paired_bootstrap

    seeds = [int(s) for s in args.seeds.split(",")]
    ds = load_dataset(args.data)
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for protocol in ("loo", "ms"):
        fold = outer_fold(protocol, ds)
        per_step: dict[str, np.ndarray] = {}
        ids_seen: np.ndarray | None = None
        for name in STEPS:
            values = []
            for seed in seeds:
                ids, ndcg = run(protocol, fold, name, seed)
                if ids_seen is not None and not np.array_equal(ids, ids_seen):
                    raise RuntimeError(f"{protocol}: user ids differ between runs")
                ids_seen = ids
                values.append(ndcg)
                print(f"{protocol} {name} seed {seed}: {ndcg.mean():.4f}", flush=True)
            per_step[name] = np.mean(values, axis=0)
            ci = bootstrap_mean(per_step[name])
            rows.append(
                {
                    "protocol": protocol,
                    "step": name,
                    "ndcg@10": round(ci.mean, 4),
                    "low": round(ci.low, 4),
                    "high": round(ci.high, 4),
                    "per_seed": [round(float(v.mean()), 4) for v in values],
                    "users": ci.users,
                }
            )
        diff = paired_bootstrap(per_step["distinct items (now)"], per_step["masked B x B (before)"])
        rows.append(
            {
                "protocol": protocol,
                "step": "now - before (paired)",
                "ndcg@10": round(diff.mean, 4),
                "low": round(diff.low, 4),
                "high": round(diff.high, 4),
                "per_seed": [],
                "users": diff.users,
            }
        )
    meta = {
        **results_header("tensorflow"),
        "seeds": seeds,
        "wall_seconds": round(time.perf_counter() - t0, 1),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({**meta, "rows": rows}, indent=2) + "\n")
    lines = [
        "# two_stage on MovieLens-100K: towers step before and after (distinct items)",
        "",
        f"{meta['date']}, {meta['machine']}, `{meta['command']}`, {meta['wall_seconds']} s",
        "",
        f"Test NDCG@10, mean over seeds {seeds} per user, 95 % bootstrap over users (1000).",
        "",
        "| split | towers step | NDCG@10 | interval | per seed | users |",
        "| --- | --- | ---: | --- | --- | ---: |",
        *(
            f"| {r['protocol']} | {r['step']} | {r['ndcg@10']} | [{r['low']}, {r['high']}] | "
            f"{r['per_seed']} | {r['users']} |"
            for r in rows
        ),
    ]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
