"""SASRec's validation NDCG@10 after every epoch, without stopping (sasrec-early-stopping.md).

    python bench/diagnostics/sasrec_validation_curve.py --data DIR [--epochs 60] [--seed 0]
    python bench/diagnostics/sasrec_validation_curve.py --run-dir RUN [--epochs 12]

``--data``: the default SASRec on MovieLens-100K's leave-one-out training part (the quality
protocol's inner fold, bench/PROTOCOL.md). ``--run-dir``: on a pipeline run's features and split
(e.g. a ``bench/scale.py`` run at 20M events), validation NDCG on the run's fixed sample of
``sasrec_validation_users`` users. Prints the curve, the gradient steps an epoch takes, and
where early stopping would stop for a few patience values. Only the training and validation
events are read: the test events are not.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def stop_point(values: list[float], steps_per_epoch: int, patience: int) -> tuple[int, int]:
    """(epoch training stops after, epoch whose weights are kept) under ``BestEpoch``."""
    from recflow.config import TrainConfig
    from recflow.models.sasrec.early_stopping import BestEpoch

    best = BestEpoch(patience, TrainConfig().sasrec.patience_epochs)
    for epoch, value in enumerate(values, start=1):
        if best.update(epoch, epoch * steps_per_epoch, value, list):
            return epoch, best.epoch
    return len(values), best.epoch


def main() -> None:
    from quality_lib import base_config, load_dataset, loo_fold

    from recflow.models.sasrec.sequences import training_windows, user_sequences
    from recflow.models.sasrec.training import train_sasrec

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--data", help="MovieLens-100K folder (u.data)")
    where.add_argument("--run-dir", help="a pipeline run folder with features/ and split/")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.data:
        fold = loo_fold(load_dataset(Path(args.data)))
        features, split = fold.features, fold.split
    else:
        from recflow.features import load_features, load_split

        features = load_features(Path(args.run_dir) / "features")
        split = load_split(Path(args.run_dir) / "split")
    # No stopping: a patience larger than the run.
    cfg = base_config(
        "sasrec", args.seed, sasrec_epochs=args.epochs, sasrec_patience_steps=10_000_000
    )
    windows = training_windows(user_sequences(features, split.train), cfg.sasrec.max_len)
    steps = -(-windows["inputs"].shape[0] // cfg.sasrec.batch_size)
    del windows
    t0 = time.perf_counter()
    trained = train_sasrec(features, split, cfg, progress=print)
    values = trained.history["val_ndcg@10"]
    best = int(np.argmax(values)) + 1
    out = {
        "seed": args.seed,
        "seconds": round(time.perf_counter() - t0, 1),
        "steps_per_epoch": steps,
        "best_epoch": best,
        "val_ndcg@10": [round(v, 4) for v in values],
        "stops": {
            str(p): dict(zip(("stop", "kept"), stop_point(values, steps, p), strict=True))
            for p in (100, 200, 300, 400, 500, 750)
        },
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
