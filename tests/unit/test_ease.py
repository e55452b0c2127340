"""EASE: the closed form, the planted structure, and the export in the serving contract."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recflow.config import SyntheticConfig, train_config
from recflow.data import generate_synthetic
from recflow.errors import ContractError, TrainingError
from recflow.evaluation import evaluate_scorer, popularity_scorer
from recflow.features import build_features, split_leave_last_out
from recflow.models import check_contract, load_recommender, load_scorer
from recflow.models.ease.closed_form import binary_matrix, fit_ease
from recflow.models.zoo import get_kind
from recflow.types import Features, Split

K = 10


@pytest.fixture(scope="module")
def data() -> tuple[Split, Features]:
    ds = generate_synthetic(SyntheticConfig(n_users=300, n_items=150, seed=3))
    split = split_leave_last_out(ds.interactions)
    return split, build_features(split.train, ds.items)


def test_closed_form_matches_per_column_constrained_ridge(data) -> None:
    # EASE column j is the ridge regression of item j on all OTHER items (diag(B) = 0);
    # solving each column directly is an independent check of B = I - P / diag(P).
    _, f = data
    lam = 30.0
    b = fit_ease(f, lam)
    x = binary_matrix(f).toarray()
    assert np.all(np.diag(b) == 0.0)
    for j in (0, 7, 42):
        others = np.delete(np.arange(f.n_items), j)
        a = x[:, others]
        w = np.linalg.solve(a.T @ a + lam * np.eye(others.size), a.T @ x[:, j])
        np.testing.assert_allclose(b[others, j], w, rtol=1e-3, atol=1e-5)


def test_repeated_events_count_once(data) -> None:
    _, f = data
    x = binary_matrix(f)
    assert x.max() == 1.0
    assert x.nnz == np.unique(f.train_user_idx * f.n_items + f.train_item_idx).size


def test_bad_lambda_is_a_training_error(data) -> None:
    with pytest.raises(TrainingError, match="ease_lambda"):
        fit_ease(data[1], 0.0)


@pytest.fixture(scope="module")
def exported(data, tmp_path_factory) -> Path:
    split, f = data
    kind = get_kind("ease")
    root = tmp_path_factory.mktemp("ease")
    kind.fit(f, split, train_config(model="ease", ease_lambda=50.0), lambda _: None, root / "t")
    return kind.export(root / "t", f, root / "m", 20, [str(f.user_ids[0])])


def test_learns_planted_tastes_better_than_popularity(data, exported) -> None:
    split, f = data
    ease = evaluate_scorer(load_scorer(exported), split, f, k=K)
    pop = evaluate_scorer(popularity_scorer(f), split, f, k=K)
    assert ease["ndcg@10"] > 1.15 * pop["ndcg@10"], (ease, pop)


def test_export_scores_are_x_times_b_and_serving_meets_the_contract(data, exported) -> None:
    _, f = data
    b = fit_ease(f, 50.0)
    x = binary_matrix(f).toarray()
    users = f.user_ids[[0, 5, 9]]
    scores, catalogue = load_scorer(exported)(users)
    np.testing.assert_allclose(scores, x[[0, 5, 9]] @ b, rtol=1e-4, atol=1e-4)
    assert list(catalogue) == list(f.item_ids)
    out = load_recommender(exported)(np.array([users[0], "never-seen-user"]))
    seen = set(f.item_ids[f.train_item_idx[f.train_user_idx == 0]])
    assert not seen & set(out["item_ids"][0])
    # Unknown users get the most popular items (the cold-start rule).
    assert out["item_ids"][1][0] == f.item_ids[np.argmax(f.item_popularity)]
    assert check_contract(exported, top_k=20)["k"] == 20


def test_export_without_training_output_fails_clearly(data, tmp_path) -> None:
    with pytest.raises(ContractError, match="ease_B.npy"):
        get_kind("ease").export(tmp_path, data[1], tmp_path / "m", 5, [])
