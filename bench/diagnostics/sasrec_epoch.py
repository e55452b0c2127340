"""One SASRec epoch's training time, estimated from the mean of N steps (sasrec-length-batches.md).

    python bench/diagnostics/sasrec_epoch.py RUN_FOLDER STEPS [full] [nodrop]

RUN_FOLDER is a training run's folder holding ``features/`` and ``split/`` (e.g. one that
``bench/scale.py`` left under its ``--work``). Batches come from :func:`epoch_batches` (windows
of similar length, each batch cut to its longest window) or, with ``full``, from a plain
shuffle at the full width, as before; ``nodrop`` sets dropout to 0 to show what it costs.
Prints ms per step, CPU/wall and the estimated epoch (steps x batches per epoch).
"""

import sys
import time
from pathlib import Path

import numpy as np


def main() -> None:
    run, n_steps, flags = Path(sys.argv[1]), int(sys.argv[2]), set(sys.argv[3:])
    import keras

    from recflow.config import train_config
    from recflow.features.profiles import load_features
    from recflow.features.split import load_split
    from recflow.models.sasrec import training as t
    from recflow.models.sasrec.network import SasrecParams, build_network
    from recflow.models.sparse_adam import lazy_adam
    from recflow.progress import Progress

    cfg = train_config(None, **({"sasrec_dropout": 0.0} if "nodrop" in flags else {}))
    features = load_features(run / "features")
    p = SasrecParams.from_config(cfg, features.n_items, q_head=False)
    _, windows = t.training_data(features, load_split(run / "split"), cfg, p.max_len)
    lengths = t.window_lengths(windows)
    keras.utils.set_random_seed(0)
    model = build_network(p)
    optimizer = lazy_adam(cfg.sasrec.learning_rate, beta_2=0.98)
    step = t.make_step(model, None, optimizer, cfg, t.softmax_negatives(cfg, p.n_items))
    rng = np.random.default_rng(0)
    if "full" in flags:
        order, size = rng.permutation(lengths.size), cfg.sasrec.batch_size
        batches = [order[i : i + size] for i in range(0, order.size, size)]
        lengths = np.full_like(lengths, p.max_len)
    else:
        batches = t.epoch_batches(lengths, rng, cfg.sasrec.batch_size)
    meter = Progress("steps", 10**9, lambda line: None)
    t.run_epoch(step, windows, batches[:10], lengths, cfg, meter, None, 0)  # trace, warm up
    wall, cpu = time.perf_counter(), time.process_time()
    t.run_epoch(step, windows, batches[10 : 10 + n_steps], lengths, cfg, meter, None, 0)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(
        f"{sorted(flags)}: {1000 * wall / n_steps:.2f} ms/step, CPU/wall {cpu / wall:.2f}, "
        f"{len(batches)} batches/epoch, epoch ~{wall / n_steps * len(batches):.1f} s"
    )


if __name__ == "__main__":
    main()
