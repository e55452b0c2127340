"""Policies learn from logged feedback; the simulator's truth is exact."""

from __future__ import annotations

import numpy as np
import pytest

from recflow.bandits.estimators import fit_reward_model
from recflow.bandits.policies import LinearTS, LinUCB, NeuralPolicy, explore, greedy
from recflow.bandits.simulator import BanditEnvironment, environment_from_ratings
from recflow.errors import TrainingError


@pytest.fixture(scope="module")
def env() -> BanditEnvironment:
    """Synthetic low-rank ratings: 120 users x 30 items, rank 3, 60% observed."""
    rng = np.random.default_rng(5)
    u, i = rng.normal(size=(120, 3)), rng.normal(size=(30, 3))
    full = np.clip(np.rint(3 + u @ i.T), 1, 5)
    mask = rng.random(full.shape) < 0.6
    users, items = np.nonzero(mask)
    return environment_from_ratings(
        users, items + 1000, full[mask], n_actions=20, rank=3, l2=1.0, iterations=20
    )


def test_environment_truth_is_exact(env: BanditEnvironment) -> None:
    assert env.contexts.shape == (120, 3) and env.n_actions == 20
    assert np.all((env.expected_reward >= 0) & (env.expected_reward <= 1))
    best = greedy(env.expected_reward)
    assert env.policy_value(best) == pytest.approx(env.optimal_value())
    uniform = np.full(env.expected_reward.shape, 1 / env.n_actions)
    assert env.policy_value(uniform) == pytest.approx(env.expected_reward.mean())
    logging = env.softmax_policy(0.1, 0.2)
    assert np.allclose(logging.sum(axis=1), 1) and logging.min() >= 0.2 / env.n_actions
    log = env.sample_log(logging, 3000, seed=1)
    # Propensities are the logging policy's probabilities of the logged actions.
    np.testing.assert_allclose(log.pscore, logging[0, log.action])
    assert set(np.unique(log.reward)) <= {0.0, 1.0}


def test_explore_and_greedy() -> None:
    scores = np.array([[1.0, 3.0, 3.0], [0.0, -1.0, 2.0]])
    np.testing.assert_allclose(greedy(scores), [[0, 0.5, 0.5], [0, 0, 1]])
    probs = explore(greedy(scores), np.array([0.3, 0.0]))
    np.testing.assert_allclose(probs.sum(axis=1), 1)
    assert probs[0, 0] == pytest.approx(0.1)
    with pytest.raises(ValueError):
        explore(greedy(scores), 1.5)


def test_linear_policies_beat_logging(env: BanditEnvironment) -> None:
    logging = env.softmax_policy(0.1, 0.3)
    log = env.sample_log(logging, 20000, seed=2)
    base = env.policy_value(logging)
    ucb = LinUCB.fit(log, alpha=0.5)
    ts = LinearTS.fit(log, n_samples=300, seed=3)
    for policy in (ucb, ts):
        probs = policy.action_probs(env.contexts, 0.1)
        np.testing.assert_allclose(probs.sum(axis=1), 1)
        assert probs.min() >= 0.1 / env.n_actions - 1e-12
        value = env.policy_value(policy.action_probs(env.contexts))
        assert value > base + 0.05, (policy.name, value, base)
        assert value > 0.85 * env.optimal_value(), policy.name


def test_neural_policy_learns_from_dr_and_ipw(env: BanditEnvironment) -> None:
    logging = env.softmax_policy(0.1, 0.3)
    log = env.sample_log(logging, 20000, seed=4)
    base = env.policy_value(logging)
    q = fit_reward_model(log, kind="ridge", n_folds=2)
    dr = NeuralPolicy.fit(log, q_hat=q, objective="dr", epochs=8, seed=1)
    ipw = NeuralPolicy.fit(log, objective="ipw", epochs=8, seed=1)
    for policy in (dr, ipw):
        probs = policy.action_probs(env.contexts, 0.2)
        np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-6)
        assert env.policy_value(policy.action_probs(env.contexts)) > base + 0.05
    assert dr.history[-1] > dr.history[0]
    with pytest.raises(TrainingError, match="q_hat"):
        NeuralPolicy.fit(log, objective="dr", epochs=1)
