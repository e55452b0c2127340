"""The blend: user-side EASE's closed form, the weighted sum, the export and the planted tastes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recflow.config import SyntheticConfig, train_config
from recflow.data import generate_synthetic
from recflow.errors import ConfigError, ContractError, TrainingError
from recflow.evaluation import evaluate_scorer, popularity_scorer
from recflow.features import build_features, split_leave_last_out
from recflow.models import check_contract, load_recommender, load_scorer
from recflow.models.blend.export import score_numpy
from recflow.models.blend.kind import BLEND_FILE
from recflow.models.blend.training import VAE_PREFIX
from recflow.models.ease.closed_form import binary_matrix, user_side_scores
from recflow.models.multvae.export import standardise_rows
from recflow.models.zoo import get_kind
from recflow.types import Features, Split

CFG = train_config(
    model="blend",
    # all three parts (the default leaves item EASE out): these tests check the mechanics
    blend_item_weight=0.1,
    blend_user_weight=0.1,
    blend_vae_weight=0.8,
    blend_item_lambda=30.0,
    blend_user_lambda=30.0,
    multvae_epochs=30,
    multvae_batch_size=100,
    multvae_hidden=64,
    multvae_latent=16,
    multvae_learning_rate=0.003,
    multvae_anneal_epochs=15,
    multvae_members=2,
    seed=2,
)
WEIGHTS = (CFG.blend.item_weight, CFG.blend.user_weight, CFG.blend.vae_weight)


@pytest.fixture(scope="module")
def data() -> tuple[Split, Features]:
    ds = generate_synthetic(SyntheticConfig(n_users=300, n_items=150, seed=3))
    split = split_leave_last_out(ds.interactions)
    return split, build_features(split.train, ds.items)


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory) -> tuple[Path, Path]:
    split, f = data
    root = tmp_path_factory.mktemp("blend")
    kind = get_kind("blend")
    kind.fit(f, split, CFG, lambda _: None, root / "t")
    return root / "t", kind.export(root / "t", f, root / "m", 20, [str(f.user_ids[0])])


def test_user_side_ease_rebuilds_each_user_from_the_others(data) -> None:
    # Row u of C is the ridge regression of user u's row on all OTHER users' rows; solving
    # one directly checks the closed form and the transposition of the scores.
    _, f = data
    lam = 30.0
    x = binary_matrix(f).toarray()
    scores = user_side_scores(f, lam)
    assert scores.shape == (f.n_users, f.n_items)
    for u in (0, 11, 123):
        others = np.delete(np.arange(f.n_users), u)
        a = x[others].T  # [N, U-1]: items as samples, other users as regressors
        c = np.linalg.solve(a.T @ a + lam * np.eye(others.size), a.T @ x[u])
        np.testing.assert_allclose(scores[u], a @ c, rtol=1e-3, atol=1e-4)


def test_planted_tastes_beat_popularity_and_each_part_counts(data, trained) -> None:
    split, f = data
    _, saved = trained
    blend = evaluate_scorer(load_scorer(saved), split, f, k=10)
    pop = evaluate_scorer(popularity_scorer(f), split, f, k=10)
    assert blend["ndcg@10"] > 1.15 * pop["ndcg@10"], (blend, pop)


def test_export_is_the_weighted_sum_of_standardised_parts(data, trained) -> None:
    _, f = data
    train_dir, saved = trained
    with np.load(train_dir / BLEND_FILE) as npz:
        arrays = {k: npz[k] for k in npz.files if k != "blend_weights"}
    rows = np.array([2, 7, 40])
    x = binary_matrix(f).toarray()[rows].astype(np.float32)
    expected = score_numpy(arrays, WEIGHTS, rows, x)
    served, catalogue = load_scorer(saved)(f.user_ids[rows])
    np.testing.assert_allclose(served, expected, atol=2e-4)
    assert list(catalogue) == list(f.item_ids)
    # The sum really is of the three parts: item EASE alone differs from the blend.
    item_only = standardise_rows(x @ arrays["ease_b"])
    assert not np.allclose(served, item_only, atol=1e-2)
    assert any(k.startswith(VAE_PREFIX) for k in arrays)
    out = load_recommender(saved)(np.array([f.user_ids[2], "never-seen-user"]))
    seen = set(f.item_ids[f.train_item_idx[f.train_user_idx == 2]])
    assert not seen & set(out["item_ids"][0])
    assert out["item_ids"][1][0] == f.item_ids[np.argmax(f.item_popularity)]
    assert check_contract(saved, top_k=20)["k"] == 20


def test_a_zero_weight_part_is_neither_trained_nor_served(data, tmp_path) -> None:
    split, f = data
    cfg = train_config(CFG, blend_vae_weight=0.0, blend_user_weight=0.0)
    kind = get_kind("blend")
    kind.fit(f, split, cfg, lambda _: None, tmp_path / "t")
    with np.load(tmp_path / "t" / BLEND_FILE) as npz:
        assert set(npz.files) == {"ease_b", "blend_weights"}
        b = npz["ease_b"]
    saved = kind.export(tmp_path / "t", f, tmp_path / "m", 10, [])
    served, _ = load_scorer(saved)(f.user_ids[[3]])
    x = binary_matrix(f).toarray()[[3]]
    expected = CFG.blend.item_weight * standardise_rows(x @ b)
    np.testing.assert_allclose(served, expected, atol=2e-4)


def test_bad_weights_and_missing_artifacts_fail_clearly(data, tmp_path) -> None:
    split, f = data
    kind = get_kind("blend")
    # refused where the config is built, whichever entry point builds it
    with pytest.raises(ConfigError, match="blend weights: expected at least one"):
        train_config(CFG, blend_item_weight=0, blend_user_weight=0, blend_vae_weight=0)
    with pytest.raises(ConfigError, match="blend_user_lambda: expected > 0, found 0"):
        train_config(CFG, blend_user_lambda=0)
    with pytest.raises(ContractError, match=BLEND_FILE):
        kind.export(tmp_path / "empty", f, tmp_path / "m", 5, [])


def test_a_part_too_large_is_dropped_and_said(data, tmp_path, monkeypatch) -> None:
    """Above the user-side limit the blend drops that part, keeps the rest and says so in
    the fit summary (the train stage puts it in MLflow and the model card)."""
    import recflow.models.ease.closed_form as ease

    split, f = data
    monkeypatch.setattr(ease, "MAX_USER_SIDE_USERS", f.n_users - 1)
    cfg = train_config(CFG, blend_vae_weight=0.0)
    lines: list[str] = []
    summary = get_kind("blend").fit(f, split, cfg, lines.append, tmp_path / "t")
    assert len(summary["notes"]) == 1 and "blend_user_weight -> 0" in summary["notes"][0]
    assert "use model=ranking_mlp or sasrec" in summary["notes"][0]
    assert summary["notes"][0] in lines
    with np.load(tmp_path / "t" / BLEND_FILE) as npz:
        assert "user_scores" not in npz.files
        assert npz["blend_weights"].tolist() == [CFG.blend.item_weight, 0.0, 0.0]
    monkeypatch.setattr(ease, "MAX_ITEM_SIDE_ITEMS", f.n_items - 1)
    with pytest.raises(TrainingError, match="every part with a weight is too large"):
        get_kind("blend").fit(f, split, cfg, lambda _: None, tmp_path / "u")


def test_item_ease_refusal_names_what_to_use(data, monkeypatch) -> None:
    import recflow.models.ease.closed_form as ease

    _, f = data
    monkeypatch.setattr(ease, "MAX_ITEM_SIDE_ITEMS", f.n_items - 1)
    with pytest.raises(TrainingError, match="items x items.*use model=ranking_mlp or sasrec"):
        ease.fit_ease(f, 10.0)
