"""A contextual bandit with known truth, built from a rating matrix (MovieLens-100K).

As TF-Agents' MovieLens environment does, a low-rank completion of the rating matrix gives
every (user, item) an expected reward: here a rank-``rank`` ALS fit of the centred observed
ratings of the ``n_actions`` most-rated items, predicted ratings clipped to [1, 5] and mapped
to [0, 1] by (r - 1) / 4. A round draws a user uniformly (context = that user's ALS factors),
the logging policy picks an item, and the reward is Bernoulli(expected reward). Because
expected rewards are known, any policy's true value is exact:
V(pi) = mean over users of sum_a pi(a | user) * q(user, a).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recflow.bandits.feedback import LoggedFeedback
from recflow.errors import DataSourceError


@dataclass(frozen=True)
class BanditEnvironment:
    contexts: np.ndarray  # [U, D] one row per user
    expected_reward: np.ndarray  # [U, A] in [0, 1]
    action_ids: tuple[str, ...]

    @property
    def n_users(self) -> int:
        return int(self.contexts.shape[0])

    @property
    def n_actions(self) -> int:
        return len(self.action_ids)

    def policy_value(self, probs: np.ndarray) -> float:
        """True value of a policy given as its action probabilities [U, A] for every user."""
        probs = np.asarray(probs, dtype=np.float64)
        if probs.shape != self.expected_reward.shape:
            raise ValueError(
                f"policy_value: expected probabilities of shape {self.expected_reward.shape}, "
                f"found {probs.shape}"
            )
        return float(np.mean(np.sum(probs * self.expected_reward, axis=1)))

    def optimal_value(self) -> float:
        return float(np.mean(self.expected_reward.max(axis=1)))

    def softmax_policy(self, temperature: float = 0.05, epsilon: float = 0.1) -> np.ndarray:
        """A known, context-free logging policy [U, A]: softmax of each item's mean reward.

        It favours what is popular with everyone, not what each user likes, so a contextual
        policy has room to improve; the epsilon share keeps every propensity >= epsilon / A.
        """
        logits = self.expected_reward.mean(axis=0) / temperature
        p = np.exp(logits - logits.max())
        p /= p.sum()
        row = (1 - epsilon) * p + epsilon / self.n_actions
        return np.broadcast_to(row, self.expected_reward.shape).copy()

    def sample_log(self, logging_probs: np.ndarray, n_rounds: int, seed: int) -> LoggedFeedback:
        """``n_rounds`` rounds logged by ``logging_probs`` [U, A], with Bernoulli rewards."""
        rng = np.random.default_rng(seed)
        users = rng.integers(0, self.n_users, size=n_rounds)
        cdf = np.cumsum(logging_probs[users], axis=1)
        u = rng.random(n_rounds)[:, None] * cdf[:, -1:]
        action = np.minimum((cdf < u).sum(axis=1), self.n_actions - 1).astype(np.int64)
        q = self.expected_reward[users, action]
        reward = (rng.random(n_rounds) < q).astype(np.float64)
        return LoggedFeedback(
            context=self.contexts[users],
            action=action,
            position=np.zeros(n_rounds, dtype=np.int64),
            reward=reward,
            pscore=logging_probs[users, action],
            action_ids=self.action_ids,
            len_list=1,
        )


def als_completion(
    users: np.ndarray,
    items: np.ndarray,
    ratings: np.ndarray,
    shape: tuple[int, int],
    *,
    rank: int = 20,
    l2: float = 5.0,
    iterations: int = 15,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, float]:
    """(user factors [U, k], item factors [I, k], global mean) fit on the observed cells only."""
    n_users, n_items = shape
    mean = float(np.mean(ratings))
    dense = np.zeros(shape)
    mask = np.zeros(shape)
    dense[users, items] = ratings - mean
    mask[users, items] = 1.0
    rng = np.random.default_rng(seed)
    p = rng.normal(scale=0.1, size=(n_users, rank))
    q = rng.normal(scale=0.1, size=(n_items, rank))
    eye = l2 * np.eye(rank)

    def solve(fixed: np.ndarray, m: np.ndarray, r: np.ndarray) -> np.ndarray:
        # One ridge solve per row, batched: Gram_u = sum over observed j of q_j q_j^T.
        gram = np.einsum("uj,jk,jl->ukl", m, fixed, fixed) + eye
        rhs = (r * m) @ fixed
        return np.linalg.solve(gram, rhs[:, :, None])[:, :, 0]

    for _ in range(iterations):
        p = solve(q, mask, dense)
        q = solve(p, mask.T, dense.T)
    return p, q, mean


def environment_from_ratings(
    users: np.ndarray,
    items: np.ndarray,
    ratings: np.ndarray,
    *,
    n_actions: int = 100,
    rank: int = 20,
    l2: float = 5.0,
    iterations: int = 15,
    seed: int = 0,
    rating_range: tuple[float, float] = (1.0, 5.0),
) -> BanditEnvironment:
    """Environment over the ``n_actions`` most-rated items; ids as given (strings)."""
    users = np.asarray(users)
    items = np.asarray(items)
    ratings = np.asarray(ratings, dtype=np.float64)
    item_ids, item_idx, counts = np.unique(items, return_inverse=True, return_counts=True)
    if n_actions > item_ids.size:
        raise DataSourceError(
            f"simulator: expected at least {n_actions} distinct items, found {item_ids.size}"
        )
    # Most-rated first; ties by id so the catalogue is reproducible.
    top = np.lexsort((item_ids.astype(str), -counts))[:n_actions]
    remap = np.full(item_ids.size, -1)
    remap[top] = np.arange(n_actions)
    keep = remap[item_idx] >= 0
    user_ids, user_idx = np.unique(users[keep], return_inverse=True)
    p, q, mean = als_completion(
        user_idx,
        remap[item_idx[keep]],
        ratings[keep],
        (user_ids.size, n_actions),
        rank=rank,
        l2=l2,
        iterations=iterations,
        seed=seed,
    )
    lo, hi = rating_range
    predicted = np.clip(mean + p @ q.T, lo, hi)
    return BanditEnvironment(
        contexts=p,
        expected_reward=(predicted - lo) / (hi - lo),
        action_ids=tuple(str(i) for i in item_ids[top]),
    )


def movielens_environment(folder: Path, **kwargs: object) -> BanditEnvironment:
    """Environment from MovieLens-100K's ``u.data`` (user \\t item \\t rating \\t time)."""
    path = Path(folder) / "u.data"
    if not path.is_file():
        raise DataSourceError(
            f"simulator: expected MovieLens-100K's u.data at {path}, found nothing; pass the "
            "folder that holds u.data"
        )
    raw = np.loadtxt(path, dtype=np.int64, delimiter="\t")
    if raw.ndim != 2 or raw.shape[1] < 3:
        raise DataSourceError(
            f"simulator: expected 4 tab-separated columns in {path}, found {raw.shape}"
        )
    return environment_from_ratings(raw[:, 0], raw[:, 1], raw[:, 2], **kwargs)  # type: ignore[arg-type]
