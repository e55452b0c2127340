"""The Bernoulli Thompson-sampling policy ZOZOTOWN ran, rebuilt as an evaluation policy.

Each round the policy draws theta_i ~ Beta(alpha_i, beta_i) for every item and shows the top
``len_list`` items by theta at positions 0, 1, 2. Its position-wise action distribution is
estimated by Monte Carlo. With ``seed=12345`` and ``n_sim=100_000`` the draws are the very
stream of the Open Bandit Pipeline's ``BernoulliTS(is_zozotown_prior=True, random_state=12345)
.compute_batch_action_dist``: numpy's legacy ``RandomState.beta`` fills a broadcast
[chunk, A] array element by element in C order, the same order as its per-round loop.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recflow.errors import DataSourceError

CAMPAIGNS = ("all", "men", "women")


def load_prior(path: Path, campaign: str) -> tuple[np.ndarray, np.ndarray]:
    """(alpha, beta) per item for ``campaign`` from ``prior_bts.yaml``."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise DataSourceError(
            f"BTS prior: expected the file {path}, found nothing; pass the folder holding "
            "prior_bts.yaml (the Open Bandit Dataset sample)"
        )
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(doc, dict) or campaign not in doc:
        found = sorted(doc) if isinstance(doc, dict) else type(doc).__name__
        raise DataSourceError(
            f"BTS prior {path}: expected a campaign key {campaign!r}, found {found}"
        )
    alpha = np.asarray(doc[campaign]["alpha"], dtype=np.float64)
    beta = np.asarray(doc[campaign]["beta"], dtype=np.float64)
    if alpha.shape != beta.shape or alpha.ndim != 1 or (alpha <= 0).any() or (beta <= 0).any():
        raise DataSourceError(
            f"BTS prior {path} [{campaign}]: expected two equal-length lists of positive numbers, "
            f"found alpha{alpha.shape} beta{beta.shape}"
        )
    return alpha, beta


def bts_action_dist(
    alpha: np.ndarray,
    beta: np.ndarray,
    *,
    len_list: int = 3,
    n_sim: int = 100_000,
    seed: int = 12345,
    chunk: int = 10_000,
) -> np.ndarray:
    """Position-wise action distribution [A, len_list]: P(item a shown at position k)."""
    alpha = np.asarray(alpha, dtype=np.float64)
    beta = np.asarray(beta, dtype=np.float64)
    n_actions = alpha.shape[0]
    if not 1 <= len_list <= n_actions:
        raise ValueError(f"len_list: expected 1..{n_actions}, found {len_list}")
    rng = np.random.RandomState(seed)  # legacy generator on purpose: see the module docstring
    counts = np.zeros(n_actions * len_list, dtype=np.int64)
    offsets = np.arange(len_list)
    done = 0
    while done < n_sim:
        size = min(chunk, n_sim - done)
        theta = rng.beta(
            np.broadcast_to(alpha, (size, n_actions)), np.broadcast_to(beta, (size, n_actions))
        )
        top = np.argpartition(-theta, len_list - 1, axis=1)[:, :len_list]
        order = np.argsort(-np.take_along_axis(theta, top, axis=1), axis=1)
        ranked = np.take_along_axis(top, order, axis=1)
        counts += np.bincount((ranked * len_list + offsets).ravel(), minlength=counts.size)
        done += size
    return (counts / n_sim).reshape(n_actions, len_list)
