"""RSS of one process that swaps SavedModels under threaded calls (soak-diagnosis.md).

    python bench/diagnostics/inproc_swap.py WORK CYCLES

WORK holds ``export-1`` and ``export-2`` (see inproc_rss.py). Each cycle loads a fresh copy of
one export (alternating, as the soak's hot swaps install new versions), runs 4 threads x 50
calls on it, drops the previous version and collects garbage, as the server's model manager
does; prints ``cycle seconds rss_mb``. Run it with ``LD_PRELOAD`` or ``MALLOC_*`` set to
compare allocators.
"""

import gc
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

from inproc_rss import SIZES, WEIGHTS, rss_mb


def main() -> None:
    work, cycles = Path(sys.argv[1]), int(sys.argv[2])
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf

    scratch = Path(tempfile.mkdtemp(prefix="inproc-swap-"))
    users = np.array([str(i + 1) for i in range(943)])  # the soak generator's user ids

    def load(i: int):  # type: ignore[no-untyped-def]
        copy = scratch / str(i)
        shutil.copytree(work / f"export-{1 + i % 2}", copy)
        return tf.saved_model.load(str(copy))

    def calls(serve, seed: int) -> None:  # type: ignore[no-untyped-def]
        def worker(s: int) -> None:
            rng = np.random.default_rng(s)
            for _ in range(50):
                batch = int(rng.choice(SIZES, p=WEIGHTS))
                serve(user_id=tf.constant(rng.choice(users, batch)))

        threads = [threading.Thread(target=worker, args=(seed * 10 + i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    current = load(0)
    start = time.time()
    for c in range(1, cycles + 1):
        following = load(c)
        calls(following.signatures["serving_default"], c)
        current = following  # drops the previous version
        gc.collect()
        shutil.rmtree(scratch / str(c - 1))
        print(c, round(time.time() - start), round(rss_mb(), 1), flush=True)
    del current
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
