"""Off-policy value estimators (IPS, SNIPS, DM, DR) with bootstrap confidence intervals.

Every estimator is the mean of a per-round quantity (SNIPS: a ratio of two means), so the
functions here return those per-round arrays and :func:`bootstrap_ci` resamples rounds
without refitting anything: 10,000 resamples of 10,000 rounds take about a second.

Evaluation policies are given as action distributions ``pi`` of shape [n, A, L] (probability
of action a at position l in round i) or [n, A] for a single position. Position-wise
estimators use the logged position, which is the Open Bandit Pipeline's convention:
IPS = mean(r_i * pi(a_i | x_i, l_i) / pscore_i).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypedDict

import numpy as np

from recflow.bandits.feedback import LoggedFeedback
from recflow.errors import DataError

ESTIMATORS: tuple[str, ...] = ("ips", "snips", "dm", "dr")
REWARD_MODELS: tuple[str, ...] = ("logistic", "ridge")
_BOOT_CELLS = 4_000_000  # indices drawn per chunk: bounds bootstrap memory to ~32 MB


class Interval(TypedDict):
    """A value with its bootstrap interval."""

    value: float
    ci_low: float
    ci_high: float


class EstimateRecord(Interval):
    """:meth:`Estimate.to_dict`: the interval, which estimator, at which confidence, on what."""

    estimator: str
    confidence: float
    n_rounds: int


@dataclass(frozen=True)
class Estimate:
    estimator: str
    value: float
    ci_low: float
    ci_high: float
    n_rounds: int
    alpha: float = 0.05

    def covers(self, truth: float) -> bool:
        return self.ci_low <= truth <= self.ci_high

    def to_dict(self) -> EstimateRecord:
        return {
            "estimator": self.estimator,
            "value": self.value,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "confidence": 1.0 - self.alpha,
            "n_rounds": self.n_rounds,
        }


def as_position_dist(pi: np.ndarray, feedback: LoggedFeedback) -> np.ndarray:
    """``pi`` as [n, A, L]; [n, A] means one position. Raises DataError on a shape mismatch."""
    pi = np.asarray(pi, dtype=np.float64)
    if pi.ndim == 2:
        pi = pi[:, :, None]
    n, a, L = feedback.n_rounds, feedback.n_actions, feedback.len_list
    if pi.ndim != 3 or pi.shape[0] != n or pi.shape[1] != a or pi.shape[2] < L:
        raise DataError(
            f"evaluation policy: expected action probabilities of shape [{n}, {a}, {L}] "
            f"(rounds, actions, positions), found {pi.shape}"
        )
    return pi


def importance_weights(feedback: LoggedFeedback, pi: np.ndarray) -> np.ndarray:
    """pi(a_i | x_i, l_i) / pscore_i per round."""
    pi = as_position_dist(pi, feedback)
    rows = np.arange(feedback.n_rounds)
    target = pi[rows, feedback.action, feedback.position]
    if not np.all(feedback.pscore > 0):
        raise DataError(
            "importance weights: expected every propensity > 0, found "
            f"{int(np.sum(~(feedback.pscore > 0)))} rounds with 0 or NaN; validate the log first"
        )
    return target / feedback.pscore


def ips_rounds(feedback: LoggedFeedback, pi: np.ndarray) -> np.ndarray:
    return importance_weights(feedback, pi) * feedback.reward


def dm_rounds(feedback: LoggedFeedback, pi: np.ndarray, q_hat: np.ndarray) -> np.ndarray:
    """sum_a pi(a | x_i, l_i) * q_hat(x_i, a, l_i) per round."""
    pi = as_position_dist(pi, feedback)
    q = as_position_dist(q_hat, feedback)
    rows = np.arange(feedback.n_rounds)
    pos = feedback.position
    return np.einsum("ia,ia->i", pi[rows, :, pos], q[rows, :, pos])


def dr_rounds(feedback: LoggedFeedback, pi: np.ndarray, q_hat: np.ndarray) -> np.ndarray:
    q = as_position_dist(q_hat, feedback)
    rows = np.arange(feedback.n_rounds)
    q_logged = q[rows, feedback.action, feedback.position]
    w = importance_weights(feedback, pi)
    return dm_rounds(feedback, pi, q) + w * (feedback.reward - q_logged)


def bootstrap_ci(
    per_round_values: np.ndarray,
    n_boot: int = 2000,
    seed: int = 0,
    *,
    denominator: np.ndarray | None = None,
    alpha: float = 0.05,
) -> tuple[float, float]:
    """Percentile bootstrap interval of mean(values) (or sum(values) / sum(denominator)).

    Rounds are resampled with replacement; the same seed gives the same interval.
    """
    values = np.asarray(per_round_values, dtype=np.float64)
    n = values.shape[0]
    if n == 0:
        raise DataError("bootstrap: expected at least one round, found none")
    if not 0 < alpha < 1 or n_boot < 1:
        raise ValueError(
            f"bootstrap: expected 0 < alpha < 1 and n_boot >= 1, found {alpha}, {n_boot}"
        )
    den = None if denominator is None else np.asarray(denominator, dtype=np.float64)
    rng = np.random.default_rng(seed)
    stats = np.empty(n_boot)
    step = max(1, _BOOT_CELLS // n)
    for start in range(0, n_boot, step):
        stop = min(n_boot, start + step)
        idx = rng.integers(0, n, size=(stop - start, n))
        num = values[idx].sum(axis=1)
        stats[start:stop] = num / (den[idx].sum(axis=1) if den is not None else n)
    low, high = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def fit_reward_model(
    feedback: LoggedFeedback,
    *,
    kind: str = "logistic",
    n_folds: int = 3,
    seed: int = 12345,
    l2: float = 1.0,
    max_iter: int = 1000,
) -> np.ndarray:
    """Cross-fitted q_hat [n, A, L]: round i is predicted by a model not trained on it.

    ``logistic`` mirrors the Open Bandit Pipeline's RegressionModel (one scikit-learn
    LogisticRegression per position on [context, action_context[action]], KFold shuffled with
    ``seed``); rewards must be 0/1. ``ridge`` fits one ridge regression on the context per
    (action, position) around the global mean: it captures action-context interactions, any
    reward scale, and is closed-form (fast for repeated simulations).
    """
    from sklearn.model_selection import KFold

    if kind not in REWARD_MODELS:
        raise ValueError(f"reward model: expected one of {REWARD_MODELS}, found {kind!r}")
    n = feedback.n_rounds
    out = np.zeros((n, feedback.n_actions, feedback.len_list))
    folds: Sequence[tuple[np.ndarray, np.ndarray]]
    if n_folds <= 1:
        folds = [(np.arange(n), np.arange(n))]
    else:
        folds = list(
            KFold(n_splits=n_folds, shuffle=True, random_state=seed).split(feedback.context)
        )
    fit = _fit_predict_logistic if kind == "logistic" else _fit_predict_ridge
    for train, test in folds:
        out[test] = fit(feedback.subset(train), feedback.context[test], l2=l2, max_iter=max_iter)
    return out


def fit_predict_reward_model(
    train: LoggedFeedback,
    context: np.ndarray,
    *,
    kind: str = "logistic",
    l2: float = 1.0,
    max_iter: int = 1000,
) -> np.ndarray:
    """q_hat [m, A, L] for new contexts from one model fitted on all of ``train``.

    For held-out evaluation: the model never saw the rounds it predicts, so no cross-fitting
    is needed there.
    """
    if kind not in REWARD_MODELS:
        raise ValueError(f"reward model: expected one of {REWARD_MODELS}, found {kind!r}")
    if train.n_rounds == 0:
        raise DataError("reward model: expected at least one training round, found none")
    fit = _fit_predict_logistic if kind == "logistic" else _fit_predict_ridge
    return fit(train, np.asarray(context, dtype=np.float64), l2=l2, max_iter=max_iter)


def _fit_predict_logistic(
    train: LoggedFeedback, context: np.ndarray, *, l2: float, max_iter: int
) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression

    a_ctx = (
        train.action_context
        if train.action_context is not None
        else np.eye(train.n_actions, dtype=np.float64)
    )
    n, n_actions = context.shape[0], train.n_actions
    out = np.empty((n, n_actions, train.len_list))
    # Rows of (context, action) for every action, built once for all positions.
    grid = np.hstack([np.repeat(context, n_actions, axis=0), np.tile(a_ctx, (n, 1))])
    for pos in range(train.len_list):
        at = train.position == pos
        y = train.reward[at]
        if not at.any() or np.unique(y).size < 2:
            # One class only (e.g. no click at this position): the rate is the best guess.
            out[:, :, pos] = y.mean() if at.any() else train.reward.mean()
            continue
        x = np.hstack([train.context[at], a_ctx[train.action[at]]])
        model = LogisticRegression(C=1.0 / l2, max_iter=max_iter, random_state=12345)
        model.fit(x, y)
        out[:, :, pos] = model.predict_proba(grid)[:, 1].reshape(n, n_actions)
    return out


def _fit_predict_ridge(
    train: LoggedFeedback, context: np.ndarray, *, l2: float, max_iter: int
) -> np.ndarray:
    del max_iter
    d = train.dim_context + 1
    mean = float(train.reward.mean())
    x_train = np.hstack([np.ones((train.n_rounds, 1)), train.context])
    x_test = np.hstack([np.ones((context.shape[0], 1)), context])
    groups = train.action * train.len_list + train.position
    n_groups = train.n_actions * train.len_list
    # Per-group Gram matrices and moments in one pass, then a batched solve.
    gram = np.zeros((n_groups, d, d))
    np.add.at(gram, groups, x_train[:, :, None] * x_train[:, None, :])
    moment = np.zeros((n_groups, d))
    np.add.at(moment, groups, x_train * (train.reward - mean)[:, None])
    theta = np.linalg.solve(gram + l2 * np.eye(d), moment[:, :, None])[:, :, 0]
    pred = mean + x_test @ theta.T  # [n, A*L]
    lo, hi = float(np.min(train.reward)), float(np.max(train.reward))
    return np.clip(pred, lo, hi).reshape(context.shape[0], train.n_actions, train.len_list)


def estimate_policy_value(
    feedback: LoggedFeedback,
    pi: np.ndarray,
    *,
    q_hat: np.ndarray | None = None,
    estimators: Sequence[str] = ESTIMATORS,
    n_boot: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
    reward_model: str = "logistic",
) -> dict[str, Estimate]:
    """Each requested estimator's value and bootstrap interval of the policy ``pi``."""
    unknown = sorted(set(estimators) - set(ESTIMATORS))
    if unknown:
        raise ValueError(f"estimators: expected some of {ESTIMATORS}, found unknown {unknown}")
    if np.isnan(feedback.reward).any():
        raise DataError(
            "estimators: expected a reward in every round, found "
            f"{int(np.isnan(feedback.reward).sum())} missing; validate the log first"
        )
    if q_hat is None and {"dm", "dr"} & set(estimators):
        q_hat = fit_reward_model(feedback, kind=reward_model)
    out: dict[str, Estimate] = {}
    for name in estimators:
        den = None
        if name == "ips":
            values = ips_rounds(feedback, pi)
        elif name == "snips":
            den = importance_weights(feedback, pi)
            values = den * feedback.reward
        elif name == "dm":
            values = dm_rounds(feedback, pi, q_hat)  # type: ignore[arg-type]
        else:
            values = dr_rounds(feedback, pi, q_hat)  # type: ignore[arg-type]
        value = float(values.sum() / den.sum()) if den is not None else float(values.mean())
        low, high = bootstrap_ci(values, n_boot, seed, denominator=den, alpha=alpha)
        out[name] = Estimate(name, value, low, high, feedback.n_rounds, alpha)
    return out
