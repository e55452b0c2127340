"""A seeded contextual bandit with known expected rewards, and a loop that drives PolicyClient.

For tests and demos of the closed loop (serve -> log -> learn -> serve): a finite pool of
users with Gaussian contexts, one logistic-linear expected click rate per (user, action), and a
position bias (slot k's click rate is multiplied by ``position_decay ** k``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from recflow.bandits.simulator import BanditEnvironment
from recflow.jsontypes import JSONObject

if TYPE_CHECKING:
    from recflow.bandits.client import PolicyClient


def linear_environment(
    *,
    n_users: int = 200,
    dim: int = 5,
    n_actions: int = 8,
    scale: float = 2.5,
    base: float = -1.5,
    seed: int = 0,
) -> BanditEnvironment:
    """q(u, a) = sigmoid(base + scale * x_u . w_a / sqrt(dim)); actions ``item-<i>``."""
    rng = np.random.default_rng(seed)
    contexts = rng.normal(size=(n_users, dim))
    weights = rng.normal(size=(n_actions, dim))
    logits = base + scale * contexts @ weights.T / np.sqrt(dim)
    return BanditEnvironment(
        contexts=contexts,
        expected_reward=1.0 / (1.0 + np.exp(-logits)),
        action_ids=tuple(f"item-{i}" for i in range(n_actions)),
    )


def drive_client(
    env: BanditEnvironment,
    client: PolicyClient,
    n_requests: int,
    *,
    epsilon: float,
    seed: int = 0,
    position_decay: float = 0.7,
) -> JSONObject:
    """Serve ``n_requests`` random users through ``client``; log a reward for every slot.

    Returns the mean sampled reward and ``mean_expected_reward``, the mean click probability
    of the slots shown: the policy's value without the clicks' coin-flip noise (one coin per
    slot puts about 0.01 of noise on 1,600 slots' mean, as much as two policies may differ).
    """
    rng = np.random.default_rng(seed)
    index = {a: i for i, a in enumerate(env.action_ids)}
    rewards: list[float] = []
    expected: list[float] = []
    for _ in range(n_requests):
        user = int(rng.integers(env.n_users))
        slate = client.choose(env.contexts[user], epsilon)
        for k, action in enumerate(slate.action_ids):
            p = env.expected_reward[user, index[action]] * position_decay**k
            reward = float(rng.random() < p)
            client.record_reward(slate.request_id, k, reward)
            rewards.append(reward)
            expected.append(p)
    return {
        "requests": n_requests,
        "slots": len(rewards),
        "mean_reward": float(np.mean(rewards)),
        "mean_expected_reward": float(np.mean(expected)),
    }
