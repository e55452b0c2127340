"""Split logged feedback by request into a learning part and a held-out estimation part.

A policy evaluated on the rounds it was fitted to is judged on the noise it memorised: its
off-policy estimate is optimistic. Holding out whole requests (every slot of a slate on the
same side) keeps the held-out estimate independent of what the policy and its reward model
learned, so the gate can trust it. Requests, not slots, are drawn: slots of one request share
the user and context, and splitting them would leak the request into both parts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recflow.bandits.feedback import LoggedFeedback
from recflow.errors import ConfigError


@dataclass(frozen=True)
class FeedbackSplit:
    learn: np.ndarray  # int64 round indices, ascending (log order kept)
    holdout: np.ndarray  # int64 round indices, ascending, disjoint from learn
    learn_requests: int
    holdout_requests: int
    holdout_fraction: float
    seed: int

    def summary(self) -> dict[str, int | float]:
        return {
            "holdout_fraction": self.holdout_fraction,
            "seed": self.seed,
            "learn_rounds": int(self.learn.size),
            "holdout_rounds": int(self.holdout.size),
            "learn_requests": self.learn_requests,
            "holdout_requests": self.holdout_requests,
        }


def request_groups(feedback: LoggedFeedback) -> np.ndarray:
    """Request code per round: the loader's ``request`` when recorded, else a reconstruction.

    Without recorded ids, consecutive rounds with the same context are taken as one request:
    both loaders list a request's slots next to each other, and merging two adjacent requests
    of the same user only keeps more together (never splits a slate).
    """
    if feedback.request is not None:
        return np.asarray(feedback.request, dtype=np.int64)
    if feedback.n_rounds == 0:
        return np.zeros(0, dtype=np.int64)
    changed = np.any(feedback.context[1:] != feedback.context[:-1], axis=1)
    return np.concatenate([[0], np.cumsum(changed)]).astype(np.int64)


def split_by_request(
    feedback: LoggedFeedback, holdout_fraction: float, seed: int = 0
) -> FeedbackSplit:
    """Draw ``round(holdout_fraction * requests)`` requests (seeded) into the held-out part.

    Both parts get at least one request when there are two or more. A single request stays in
    the learning part and nothing is held out: learning still runs, and the gate declines for
    lack of held-out rounds instead of the run failing on a tiny log.
    """
    if not 0.0 < holdout_fraction < 1.0:
        raise ConfigError(
            f"holdout split: expected 0 < holdout_fraction < 1, found {holdout_fraction}"
        )
    groups = request_groups(feedback)
    codes, per_round = np.unique(groups, return_inverse=True)
    n_requests = int(codes.size)
    n_holdout = int(round(holdout_fraction * n_requests))
    n_holdout = min(max(n_holdout, 1), n_requests - 1) if n_requests else 0
    rng = np.random.default_rng(seed)
    held = np.zeros(n_requests, dtype=bool)
    held[rng.permutation(n_requests)[:n_holdout]] = True
    in_holdout = held[per_round.reshape(-1)]
    return FeedbackSplit(
        learn=np.flatnonzero(~in_holdout).astype(np.int64),
        holdout=np.flatnonzero(in_holdout).astype(np.int64),
        learn_requests=n_requests - n_holdout,
        holdout_requests=n_holdout,
        holdout_fraction=float(holdout_fraction),
        seed=int(seed),
    )
