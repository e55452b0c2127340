"""Estimators recover a synthetic bandit's known value; bootstrap and BTS behave as promised."""

from __future__ import annotations

import numpy as np
import pytest

from recflow.bandits.bts import bts_action_dist
from recflow.bandits.estimators import (
    bootstrap_ci,
    estimate_policy_value,
    fit_reward_model,
    importance_weights,
)
from recflow.bandits.feedback import LoggedFeedback
from recflow.bandits.gate import PolicyGateConfig, decide_policy
from recflow.errors import ConfigError, DataError

N_CTX, D, A = 200, 3, 5


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def world() -> dict[str, np.ndarray]:
    """A pool of contexts, logistic expected rewards (so the logistic reward model is right),
    a known logging policy and two evaluation policies (one better, one worse)."""
    rng = np.random.default_rng(11)
    x = rng.normal(size=(N_CTX, D))
    beta = np.array([0.6, -0.4, 0.3])
    bias = np.array([-1.5, -1.0, -0.6, -1.2, -0.8])
    q = 1 / (1 + np.exp(-(x @ beta[:, None] + bias)))
    logging = softmax(0.5 * rng.normal(size=(N_CTX, A)))
    good = softmax(8 * q)
    bad = softmax(-8 * q)
    return {"x": x, "q": q, "logging": logging, "good": good, "bad": bad}


def sample(world: dict[str, np.ndarray], n: int, seed: int) -> tuple[LoggedFeedback, np.ndarray]:
    rng = np.random.default_rng(seed)
    users = rng.integers(0, N_CTX, n)
    probs = world["logging"][users]
    action = (rng.random(n)[:, None] > np.cumsum(probs, axis=1)).sum(axis=1)
    action = np.minimum(action, A - 1)
    reward = (rng.random(n) < world["q"][users, action]).astype(float)
    fb = LoggedFeedback(
        context=world["x"][users],
        action=action,
        position=np.zeros(n, dtype=np.int64),
        reward=reward,
        pscore=probs[np.arange(n), action],
        action_ids=tuple(f"a{i}" for i in range(A)),
    )
    return fb, users


def truth(world: dict[str, np.ndarray], policy: str) -> float:
    return float(np.mean(np.sum(world[policy] * world["q"], axis=1)))


def test_every_estimator_covers_the_known_value(world: dict[str, np.ndarray]) -> None:
    fb, users = sample(world, 6000, seed=1)
    value = truth(world, "good")
    est = estimate_policy_value(fb, world["good"][users], n_boot=1000, seed=0)
    assert set(est) == {"ips", "snips", "dm", "dr"}
    for name, e in est.items():
        assert e.ci_low < e.value < e.ci_high, name
        assert abs(e.value - value) < 0.03, name
    # DM's interval resamples rounds but not the reward model's error (OBP's convention), so
    # only the importance-weighted estimators promise coverage.
    for name in ("ips", "snips", "dr"):
        assert est[name].covers(value), (name, est[name], value)


def test_wrong_propensities_are_detected_as_bias(world: dict[str, np.ndarray]) -> None:
    """The coverage test above can fail: a logger that records twice the real propensity
    halves IPS, and the interval no longer holds the truth."""
    fb, users = sample(world, 6000, seed=1)
    wrong = LoggedFeedback(
        fb.context, fb.action, fb.position, fb.reward, np.minimum(1, 2 * fb.pscore), fb.action_ids
    )
    value = truth(world, "good")
    est = estimate_policy_value(wrong, world["good"][users], estimators=["ips"], n_boot=500)
    assert not est["ips"].covers(value)


def test_logging_policy_is_recovered_exactly_by_ips_weights(world: dict[str, np.ndarray]) -> None:
    fb, users = sample(world, 500, seed=2)
    w = importance_weights(fb, world["logging"][users])
    np.testing.assert_allclose(w, 1.0)


def test_bootstrap_is_seeded_narrows_with_n_and_handles_ratios() -> None:
    rng = np.random.default_rng(0)
    small, large = rng.normal(size=200), rng.normal(size=20000)
    assert bootstrap_ci(small, 500, 3) == bootstrap_ci(small, 500, 3)
    lo_s, hi_s = bootstrap_ci(small, 500, 3)
    lo_l, hi_l = bootstrap_ci(large, 500, 3)
    assert hi_l - lo_l < (hi_s - lo_s) / 5
    num, den = rng.random(1000), rng.random(1000) + 0.5
    lo, hi = bootstrap_ci(num, 500, 1, denominator=den)
    assert lo < num.sum() / den.sum() < hi
    with pytest.raises(DataError):
        bootstrap_ci(np.array([]), 10, 0)


def test_missing_rewards_and_zero_propensities_refused(world: dict[str, np.ndarray]) -> None:
    fb, users = sample(world, 100, seed=3)
    reward = fb.reward.copy()
    reward[4] = np.nan
    broken = LoggedFeedback(fb.context, fb.action, fb.position, reward, fb.pscore, fb.action_ids)
    with pytest.raises(DataError, match="missing"):
        estimate_policy_value(broken, world["good"][users], n_boot=10)
    pscore = fb.pscore.copy()
    pscore[0] = 0.0
    broken = LoggedFeedback(fb.context, fb.action, fb.position, fb.reward, pscore, fb.action_ids)
    with pytest.raises(DataError, match="propensity"):
        estimate_policy_value(broken, world["good"][users], estimators=["ips"], n_boot=10)


def test_reward_models_are_cross_fitted_and_shaped(world: dict[str, np.ndarray]) -> None:
    fb, _ = sample(world, 1500, seed=4)
    for kind in ("logistic", "ridge"):
        q = fit_reward_model(fb, kind=kind, n_folds=3, seed=1)
        assert q.shape == (fb.n_rounds, A, 1)
        assert np.all((q >= 0) & (q <= 1))
    with pytest.raises(ValueError):
        fit_reward_model(fb, kind="forest")


def test_bts_distribution_matches_a_per_round_loop() -> None:
    """The vectorised draws are the legacy per-round stream (what OBP's loop produces)."""
    alpha = np.array([5.0, 2.0, 9.0, 1.0, 3.0])
    beta = np.array([50.0, 40.0, 30.0, 20.0, 60.0])
    rs = np.random.RandomState(12345)
    counts = np.zeros((5, 3))
    for _ in range(300):
        theta = rs.beta(alpha, beta)
        for k, a in enumerate(theta.argsort()[::-1][:3]):
            counts[a, k] += 1
    dist = bts_action_dist(alpha, beta, len_list=3, n_sim=300, seed=12345, chunk=70)
    np.testing.assert_array_equal(dist, counts / 300)
    np.testing.assert_allclose(dist.sum(axis=0), 1.0)


def test_gate_declines_a_policy_worse_than_logging(world: dict[str, np.ndarray]) -> None:
    fb, users = sample(world, 6000, seed=5)
    logging_value = fb.on_policy_value()
    worse = estimate_policy_value(fb, world["bad"][users], n_boot=500)
    better = estimate_policy_value(fb, world["good"][users], n_boot=500)
    assert truth(world, "bad") < truth(world, "logging") < truth(world, "good")
    declined = decide_policy(worse, logging_value, PolicyGateConfig(min_rounds=100))
    assert not declined.passed
    assert "does not exceed" in declined.reasons[0]
    promoted = decide_policy(better, logging_value, PolicyGateConfig(min_rounds=100))
    assert promoted.passed, promoted.reasons
    # A margin larger than the candidate's lift declines it too.
    lift = better["dr"].ci_low / logging_value - 1
    strict = decide_policy(
        better, logging_value, PolicyGateConfig(margin=lift + 0.01, min_rounds=100)
    )
    assert not strict.passed
    assert (
        decide_policy(
            better, logging_value, PolicyGateConfig(estimator="ips", min_rounds=100)
        ).estimator
        == "ips"
    )
    with pytest.raises(ConfigError):
        decide_policy(better, logging_value, PolicyGateConfig(estimator="magic"))
