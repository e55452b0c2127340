"""Slates drawn from a policy's action probabilities, and each slot's exact propensity.

A served policy returns one distribution ``p`` over the catalogue; a slate of L slots is drawn
position by position without replacement (Plackett-Luce on ``p``): slot k picks action a with
probability p_a / (mass of the actions not shown yet). Position-wise estimators need the
*marginal* probability of (action, position), e.g. for slot 1 it is
sum_b p_b * p_a / (1 - p_b). :func:`slate_marginals` computes it exactly by walking every
prefix of the slate (A^(L-1) prefixes, each vectorised over rows), which is cheap for the
slate sizes served here (L <= 3). When the actions not shown yet have zero mass (a greedy
policy with epsilon 0), the next slot is uniform over them; sampling and marginals agree.
"""

from __future__ import annotations

import numpy as np

_TINY = 1e-12


def next_slot_probs(probs: np.ndarray, shown: np.ndarray) -> np.ndarray:
    """P(next slot = a | actions ``shown`` [n, A] bool already placed), rows of ``probs`` [n, A]."""
    p = np.where(shown, 0.0, np.asarray(probs, dtype=np.float64))
    mass = p.sum(axis=1, keepdims=True)
    free = (~shown).astype(np.float64)
    uniform = free / np.maximum(free.sum(axis=1, keepdims=True), 1.0)
    return np.where(mass > _TINY, p / np.where(mass > _TINY, mass, 1.0), uniform)


def slate_marginals(probs: np.ndarray, len_list: int) -> np.ndarray:
    """[n, A, L]: probability that action a is shown at position l, slates drawn as above."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"slate_marginals: expected probabilities [n, A], found {p.shape}")
    n, n_actions = p.shape
    if not 1 <= len_list <= n_actions:
        raise ValueError(
            f"slate_marginals: expected 1 <= len_list <= {n_actions}, found {len_list}"
        )
    out = np.zeros((n, n_actions, len_list))

    def walk(shown: np.ndarray, weight: np.ndarray, level: int) -> None:
        step = next_slot_probs(p, shown)
        out[:, :, level] += weight[:, None] * step
        if level + 1 == len_list:
            return
        for a in range(n_actions):
            w = weight * step[:, a]
            if not np.any(w > 0.0):
                continue  # `a` is already shown (or never chosen) in every row
            nxt = shown.copy()
            nxt[:, a] = True
            walk(nxt, w, level + 1)

    walk(np.zeros((n, n_actions), dtype=bool), np.ones(n), 0)
    return out


def sample_slate(probs: np.ndarray, len_list: int, rng: np.random.Generator) -> list[int]:
    """Indices into ``probs`` [A] shown at positions 0..len_list-1 (no repeats)."""
    p = np.asarray(probs, dtype=np.float64)[None, :]
    if not 1 <= len_list <= p.shape[1]:
        raise ValueError(f"sample_slate: expected 1 <= len_list <= {p.shape[1]}, found {len_list}")
    shown = np.zeros_like(p, dtype=bool)
    chosen: list[int] = []
    for _ in range(len_list):
        step = next_slot_probs(p, shown)[0]
        a = int(rng.choice(step.shape[0], p=step / step.sum()))
        chosen.append(a)
        shown[0, a] = True
    return chosen


def marginals_by_context(
    probs_fn: object, context: np.ndarray, len_list: int
) -> tuple[np.ndarray, np.ndarray]:
    """Unique contexts' slate marginals and each row's index into them (logs repeat contexts).

    ``probs_fn(unique_contexts) -> [u, A]``; returns (marginals [u, A, L], inverse [n]).
    """
    unique, inverse = np.unique(np.asarray(context), axis=0, return_inverse=True)
    probs = probs_fn(unique)  # type: ignore[operator]
    return slate_marginals(np.asarray(probs), len_list), np.asarray(inverse).reshape(-1)
