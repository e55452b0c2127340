"""NumPy helpers the stages share.

``sorted_unique`` exists because NumPy 2.4's ``np.unique`` takes a hash-table path for a plain
call (no ``return_*``), then sorts what it found: on 20M (user, item) keys (bench-scale's
largest size, 15.7M distinct) that measured 23 s, where sorting the keys and dropping repeats
took 0.2 s (``bench/results/unique_cost.md``). The stages call it on every training pair at
least once per run (distinct positives, seen-item tables, test sets), so at scale it cost
minutes.
"""

from __future__ import annotations

import numpy as np


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """``np.unique(values)`` of a 1-D integer array: its distinct values, ascending."""
    values = np.asarray(values)
    if values.ndim != 1 or values.dtype.kind not in "iub":
        return np.unique(values)  # floats (NaN handling), strings, n-d: NumPy's own
    ordered = np.sort(values)
    if ordered.size == 0:
        return ordered
    first = np.empty(ordered.size, dtype=bool)
    first[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    return ordered[first]
