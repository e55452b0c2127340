"""RSS of one process calling a soak export from 4 threads (bench/results/soak-diagnosis.md).

    python bench/diagnostics/inproc_rss.py SRC WORK ROUNDS

SRC: the ``src`` folder whose code trains and exports (e.g. a worktree's); WORK: a folder for
the two soak exports (made by ``bench/soak.py``'s ``export_models`` unless already there).
Each round: 4 threads x 50 calls of ``serving_default``, batch sizes 1-64 (powers of two, as
the batcher pads), random users; prints ``round seconds rss_mb``.
"""

import argparse
import os
import sys
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1]
SIZES = [1, 2, 4, 8, 16, 32, 64]
WEIGHTS = [0.4, 0.25, 0.15, 0.1, 0.05, 0.03, 0.02]


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def main() -> None:
    src, work, rounds = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    sys.path[:0] = [src, str(BENCH)]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import soak
    import tensorflow as tf

    args = argparse.Namespace(users=943, items=1682, events_per_user=106, epochs=1)
    dirs, info = soak.export_models(work, args)
    serve = tf.saved_model.load(str(dirs[0])).signatures["serving_default"]
    users = np.array(info["user_ids"])

    def worker(seed: int) -> None:
        rng = np.random.default_rng(seed)
        for _ in range(50):
            batch = int(rng.choice(SIZES, p=WEIGHTS))
            serve(user_id=tf.constant(rng.choice(users, batch)))

    start = time.time()
    for k in range(rounds):
        threads = [threading.Thread(target=worker, args=(k * 10 + i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        print(k, round(time.time() - start), round(rss_mb(), 1), flush=True)


if __name__ == "__main__":
    main()
