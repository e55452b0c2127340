"""Per-user score arrays that keep their user ids and protocol, and the tests that compare them.

A :class:`UserScores` holds one model's per-user metric values for several seeds ([S, U] per
metric), the user ids of the columns and the sha256 of the protocol they were produced under.
Comparisons check that both sides cover the same users in the same order and come from the
same protocol, then work on the per-user seed means:

- :func:`seed_summary`: mean and standard deviation over seeds of the metric, and the user
  bootstrap interval of the mean of the per-user seed means;
- :func:`paired_test`: two-sided paired t-test over users, plus the paired bootstrap interval;
- :func:`one_sample_test`: two-sided one-sample t-test against a fixed (published) figure;
- :func:`holm`: Holm's step-down adjustment of a family of p-values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recflow.errors import DataError
from recflow.evaluation.bootstrap import bootstrap_mean, paired_bootstrap
from recflow.jsontypes import JSONObject


@dataclass(frozen=True)
class UserScores:
    """One model's per-user values: ``values[metric]`` is [S, U] for ``seeds`` x ``user_ids``."""

    model: str
    protocol: str
    protocol_sha256: str
    user_ids: np.ndarray  # [U] str
    seeds: tuple[int, ...]
    values: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, v in self.values.items():
            if v.shape != (len(self.seeds), self.user_ids.size):
                raise DataError(
                    f"{self.model}/{self.protocol} {name}: expected values of shape "
                    f"({len(self.seeds)} seeds, {self.user_ids.size} users), found {v.shape}"
                )

    def seed_mean(self, metric: str) -> np.ndarray:
        """[U] the per-user mean over seeds of ``metric``."""
        if metric not in self.values:
            raise DataError(
                f"{self.model}/{self.protocol}: expected metric {metric!r}, found "
                f"{sorted(self.values)}"
            )
        return np.asarray(self.values[metric].mean(axis=0), np.float64)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, Any] = {f"metric__{k}": v for k, v in self.values.items()}
        np.savez_compressed(
            path,
            model=np.array(self.model),
            protocol=np.array(self.protocol),
            protocol_sha256=np.array(self.protocol_sha256),
            user_ids=self.user_ids.astype(str),
            seeds=np.asarray(self.seeds, np.int64),
            **arrays,
        )


def load_user_scores(path: Path, protocol_sha256: str) -> UserScores:
    """Read arrays saved by :meth:`UserScores.save`; refuse those of another protocol hash."""
    with np.load(path, allow_pickle=False) as npz:
        found = str(npz["protocol_sha256"])
        if found != protocol_sha256:
            raise DataError(
                f"{path}: expected per-user arrays of protocol {protocol_sha256[:12]}, found "
                f"{found[:12]}; re-run the evaluation under the current bench/PROTOCOL.md"
            )
        return UserScores(
            model=str(npz["model"]),
            protocol=str(npz["protocol"]),
            protocol_sha256=found,
            user_ids=npz["user_ids"].astype(str),
            seeds=tuple(int(s) for s in npz["seeds"]),
            values={k[8:]: npz[k] for k in npz.files if k.startswith("metric__")},
        )


def check_same_users(a: UserScores, b: UserScores) -> None:
    """Both sides: same protocol hash and the same user ids in the same order."""
    if a.protocol_sha256 != b.protocol_sha256:
        raise DataError(
            f"compare {a.model} with {b.model}: expected one protocol hash, found "
            f"{a.protocol_sha256[:12]} and {b.protocol_sha256[:12]}"
        )
    if a.user_ids.shape != b.user_ids.shape or not np.array_equal(a.user_ids, b.user_ids):
        raise DataError(
            f"compare {a.model} with {b.model} ({a.protocol} / {b.protocol}): expected the same "
            f"users in the same order, found {a.user_ids.size} and {b.user_ids.size} users "
            f"({int(np.sum(~np.isin(a.user_ids, b.user_ids)))} of the first missing from the "
            "second); score both on the same split"
        )


def seed_summary(scores: UserScores, metric: str, *, samples: int, seed: int = 0) -> JSONObject:
    """Mean and sd over seeds of the metric; bootstrap interval over users of the seed mean."""
    per_seed = scores.values[metric].mean(axis=1)
    ci = bootstrap_mean(scores.seed_mean(metric), samples=samples, seed=seed)
    return {
        "mean": float(per_seed.mean()),
        "sd": float(per_seed.std(ddof=1)) if per_seed.size > 1 else None,
        "per_seed": [round(float(v), 5) for v in per_seed],
        "low": ci.low,
        "high": ci.high,
        "seeds": list(scores.seeds),
        "users": int(scores.user_ids.size),
    }


def _t_pvalue(diff: np.ndarray) -> tuple[float, float]:
    """(t statistic, two-sided p) of mean(diff) = 0; p = 1 for identical values."""
    from scipy import stats

    if diff.size < 2 or not np.any(diff != diff[0]):
        mean = float(diff.mean()) if diff.size else 0.0
        return (0.0, 1.0) if mean == 0.0 else (float(np.copysign(np.inf, mean)), 0.0)
    res = stats.ttest_1samp(diff, 0.0)
    return float(res.statistic), float(res.pvalue)


def paired_test(
    a: UserScores, b: UserScores, metric: str, *, samples: int, seed: int = 0
) -> JSONObject:
    """a - b on per-user seed means: paired t-test over users and paired bootstrap interval."""
    check_same_users(a, b)
    x, y = a.seed_mean(metric), b.seed_mean(metric)
    t, p = _t_pvalue(x - y)
    ci = paired_bootstrap(x, y, samples=samples, seed=seed)
    return {
        "a": a.model,
        "b": b.model,
        "test": "paired t-test over users (two-sided), per-user seed means",
        "diff": ci.mean,
        "low": ci.low,
        "high": ci.high,
        "t": t,
        "p": p,
        "users": int(x.size),
    }


def one_sample_test(a: UserScores, metric: str, figure: float, name: str) -> JSONObject:
    """a's per-user seed means against a fixed figure: two-sided one-sample t-test."""
    x = a.seed_mean(metric)
    t, p = _t_pvalue(x - figure)
    return {
        "a": a.model,
        "b": f"{name} (published {figure})",
        "test": "one-sample t-test over users (two-sided) against the published figure",
        "diff": float(x.mean() - figure),
        "low": None,
        "high": None,
        "t": t,
        "p": p,
        "users": int(x.size),
    }


def holm(pvalues: list[float]) -> list[float]:
    """Holm-adjusted p-values (same order as given): step-down, monotone, capped at 1."""
    p = np.asarray(pvalues, np.float64)
    m = p.size
    order = np.argsort(p, kind="stable")
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return [float(v) for v in adjusted]
