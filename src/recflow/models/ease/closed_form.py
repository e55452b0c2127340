"""EASE (Steck, WWW 2019): a closed-form item-item model, and its user-side twin.

    P = (X^T X + lambda I)^-1,   B = I - P / diag(P)  (so diag(B) = 0),   scores_u = x_u B

X is the binary user x item matrix of distinct training pairs. The export keeps X as CSR rows
(row splits + item indices, the same table that masks seen items) and B as a dense [N, N]
variable: serving builds x_u for the batch with one scatter and multiplies by B.

Export (:mod:`recflow.models.ease.export`) puts the scores in the serving contract of
:mod:`recflow.models.score_module`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from recflow.errors import TrainingError
from recflow.types import Features

if TYPE_CHECKING:
    from scipy import sparse

MAX_USER_SIDE_USERS = 50_000
# Item EASE holds the [N, N] Gram matrix, its inverse and B (float64: 24 N^2 bytes at the
# peak, ~10 GB at 20,000 items) and exports B as an [N, N] float32 table.
MAX_ITEM_SIDE_ITEMS = 20_000
INSTEAD = "use model=ranking_mlp or sasrec, whose cost grows with events, not items squared"


def binary_matrix(features: Features) -> sparse.csr_matrix:
    """Sparse CSR [U, N] float64 0/1 matrix of distinct training pairs."""
    from scipy import sparse

    x = sparse.csr_matrix(
        (
            np.ones(features.train_user_idx.size),
            (features.train_user_idx, features.train_item_idx),
        ),
        shape=(features.n_users, features.n_items),
    )
    x.sum_duplicates()
    x.data[:] = 1.0  # repeated events of a pair count once
    return x


def _closed_form(gram: np.ndarray, l2: float) -> np.ndarray:
    """B = I - P / diag(P) with P = (gram + l2 I)^-1: the EASE weights, zero diagonal."""
    gram[np.diag_indices_from(gram)] += l2
    # The Gram matrix plus lambda I is symmetric positive definite, so inv is well conditioned.
    p = np.linalg.inv(gram)
    b = -p / np.diag(p)[None, :]
    b[np.diag_indices_from(b)] = 0.0
    return b


def _check_fit(features: Features, l2: float, name: str) -> None:
    if l2 <= 0:
        raise TrainingError(f"{name}: expected > 0, found {l2}; try 100-1000")
    if features.train_user_idx.size == 0:
        raise TrainingError("EASE: expected training interactions, found none")


def check_item_side(n_items: int) -> None:
    if n_items > MAX_ITEM_SIDE_ITEMS:
        raise TrainingError(
            f"item EASE: expected at most {MAX_ITEM_SIDE_ITEMS} items (it inverts an items x "
            f"items matrix, ~{24 * n_items**2 / 2**30:.0f} GiB at {n_items} items, and exports "
            f"an items x items table), found {n_items}; {INSTEAD}"
        )


def fit_ease(features: Features, l2: float) -> np.ndarray:
    """The item-item weights B [N, N] float32 with a zero diagonal."""
    _check_fit(features, l2, "ease_lambda")
    check_item_side(features.n_items)
    x = binary_matrix(features)
    return _closed_form(np.asarray((x.T @ x).toarray(), dtype=np.float64), l2).astype(np.float32)


def check_user_side(n_users: int) -> None:
    if n_users > MAX_USER_SIDE_USERS:
        raise TrainingError(
            f"user-side EASE: expected at most {MAX_USER_SIDE_USERS} users (it inverts a "
            f"users x users matrix and exports a users x items table), found {n_users}; set "
            f"blend_user_weight=0 (the blend drops it by itself and records that), or {INSTEAD}"
        )


def user_side_scores(features: Features, l2: float) -> np.ndarray:
    """Scores [U, N] float32 of EASE on the transposed matrix: each user's row rebuilt from the
    other users' rows (user-user weights C [U, U], zero diagonal; scores = C^T X).

    The item model asks "what goes with what this user saw"; this one asks "what did users
    like this one see". Its [U, U] inverse limits it to user bases of tens of thousands.
    """
    _check_fit(features, l2, "blend_user_lambda")
    check_user_side(features.n_users)
    x = binary_matrix(features)
    c = _closed_form(np.asarray((x @ x.T).toarray(), dtype=np.float64), l2)
    return np.asarray(x.T @ c, dtype=np.float32).T
