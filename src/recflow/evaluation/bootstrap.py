"""Bootstrap confidence intervals over users: one metric, or a paired difference of two models.

Users are the resampling unit (a user's metric values stay together), so the paired interval
on candidate - champion uses the same resampled users for both models and the per-user
correlation between the models cancels out of its width.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from recflow.errors import ConfigError, DataError
from recflow.jsontypes import JSONObject

# Resamples drawn per chunk: bounds the [chunk, n_users] index matrix.
_CHUNK_CELLS = 4_000_000


@dataclass(frozen=True)
class Interval:
    """Mean of the per-user values and its percentile bootstrap interval."""

    mean: float
    low: float
    high: float
    confidence: float
    samples: int
    users: int

    def to_dict(self) -> JSONObject:
        return asdict(self)


def _check(samples: int, confidence: float) -> None:
    if samples < 1:
        raise ConfigError(f"bootstrap samples: expected >= 1, found {samples}")
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"bootstrap confidence: expected in (0, 1), found {confidence}")


def _resampled_means(values: np.ndarray, samples: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = values.shape[0]
    chunk = max(1, _CHUNK_CELLS // n)
    means = np.empty(samples, dtype=np.float64)
    for start in range(0, samples, chunk):
        size = min(chunk, samples - start)
        means[start : start + size] = values[rng.integers(0, n, size=(size, n))].mean(axis=1)
    return means


def bootstrap_mean(
    values: np.ndarray, *, samples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> Interval:
    """Percentile bootstrap interval of the mean of per-user ``values`` [U]."""
    _check(samples, confidence)
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.size == 0:
        raise DataError("bootstrap: expected per-user values, found none; evaluate some users")
    if np.isnan(v).any():
        raise DataError("bootstrap: expected finite per-user values, found NaN")
    means = _resampled_means(v, samples, seed)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return Interval(float(v.mean()), float(low), float(high), confidence, samples, int(v.size))


def paired_bootstrap(
    candidate: np.ndarray,
    baseline: np.ndarray,
    *,
    samples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Interval on mean(candidate - baseline) over the same users (row i = the same user)."""
    a = np.asarray(candidate, dtype=np.float64).reshape(-1)
    b = np.asarray(baseline, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise DataError(
            f"paired bootstrap: expected per-user values for the same users, found {a.size} "
            f"candidate and {b.size} baseline values; score both models on the same split"
        )
    return bootstrap_mean(a - b, samples=samples, confidence=confidence, seed=seed)
