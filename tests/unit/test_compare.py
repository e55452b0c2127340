"""Per-user arrays with ids and protocol hash; paired tests; Holm; leave-one-out variants."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recflow.errors import DataError
from recflow.evaluation.compare import (
    UserScores,
    check_same_users,
    holm,
    load_user_scores,
    one_sample_test,
    paired_test,
    seed_summary,
)

SHA = "a" * 64


def scores(model: str, values: np.ndarray, ids: list[str] | None = None) -> UserScores:
    ids = ids or [f"u{i}" for i in range(values.shape[1])]
    seeds = tuple(range(1, values.shape[0] + 1))
    return UserScores(model, "ms", SHA, np.array(ids), seeds, {"ndcg@10": values})


def test_save_load_roundtrip_and_hash_refused(tmp_path: Path) -> None:
    s = scores("ease", np.array([[0.1, 0.5, 0.0], [0.2, 0.5, 0.0]]))
    s.save(tmp_path / "e.npz")
    back = load_user_scores(tmp_path / "e.npz", SHA)
    assert back.user_ids.tolist() == ["u0", "u1", "u2"]
    assert back.seeds == (1, 2)
    np.testing.assert_array_equal(back.values["ndcg@10"], s.values["ndcg@10"])
    with pytest.raises(DataError, match="another protocol|expected per-user arrays of protocol"):
        load_user_scores(tmp_path / "e.npz", "b" * 64)


def test_paired_comparison_refuses_other_users_or_order() -> None:
    a = scores("a", np.array([[0.1, 0.2, 0.3]]))
    b = scores("b", np.array([[0.1, 0.2, 0.3]]), ids=["u0", "u2", "u1"])
    with pytest.raises(DataError, match="same users in the same order"):
        check_same_users(a, b)
    c = UserScores("c", "ms", "c" * 64, a.user_ids, (1,), {"ndcg@10": np.zeros((1, 3))})
    with pytest.raises(DataError, match="one protocol hash"):
        paired_test(a, c, "ndcg@10", samples=10)


def test_shape_checked() -> None:
    with pytest.raises(DataError, match="expected values of shape"):
        UserScores("a", "ms", SHA, np.array(["u0", "u1"]), (1, 2), {"m": np.zeros((1, 2))})


def test_seed_summary_means_and_sd() -> None:
    s = scores("a", np.array([[0.0, 1.0], [1.0, 1.0]]))  # seed means 0.5 and 1.0
    out = seed_summary(s, "ndcg@10", samples=200)
    assert out["mean"] == pytest.approx(0.75)
    assert out["sd"] == pytest.approx(np.std([0.5, 1.0], ddof=1))
    assert out["low"] <= 0.75 <= out["high"]


def test_paired_test_against_scipy_and_detects_a_real_gain() -> None:
    from scipy import stats

    rng = np.random.default_rng(0)
    base = rng.random((3, 400))
    a = scores("a", base + 0.05)
    b = scores("b", base + rng.normal(0, 0.01, base.shape))
    out = paired_test(a, b, "ndcg@10", samples=300)
    ref = stats.ttest_rel(a.seed_mean("ndcg@10"), b.seed_mean("ndcg@10"))
    assert out["p"] == pytest.approx(ref.pvalue)
    assert out["diff"] > 0 and out["low"] > 0
    same = paired_test(a, a, "ndcg@10", samples=50)
    assert same["p"] == 1.0 and same["diff"] == 0.0


def test_one_sample_test() -> None:
    a = scores("a", np.full((1, 50), 0.5) + np.linspace(-0.01, 0.01, 50))
    assert one_sample_test(a, "ndcg@10", 0.5, "X")["p"] > 0.5
    assert one_sample_test(a, "ndcg@10", 0.4, "X")["p"] < 1e-10


def test_holm_matches_the_step_down_rule() -> None:
    # sorted p: 0.01 (x4 = 0.04), 0.02 (x3 = 0.06), 0.03 (x2 = 0.06), 0.5 (x1 = 0.5)
    assert holm([0.03, 0.01, 0.5, 0.02]) == pytest.approx([0.06, 0.04, 0.5, 0.06])
    assert holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])


def _loo_data():
    from recflow.features import build_features, split_leave_last_out

    rows = []
    for u in range(4):
        for t, i in enumerate([0, 1, 2, 3 + u % 2]):
            rows.append((f"u{u}", f"i{(i + u) % 6}", 1.0, t))
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    frame = frame.astype({"user_id": "string", "item_id": "string"})
    items = pd.DataFrame(
        {"item_id": [f"i{j}" for j in range(6)], "title": [f"t{j}" for j in range(6)], "genres": ""}
    ).astype("string")
    split = split_leave_last_out(frame)
    return split, build_features(split.train, items)


def test_peers_variant_masks_history_only_when_asked() -> None:
    from recflow.evaluation.loo import peers_test, validation_items, with_validation_item
    from recflow.models.multvae.training import user_rows

    split, f = _loo_data()
    users, items = validation_items(split, f)
    x = with_validation_item(user_rows(f), split, f)
    assert (x[users, items] == 1).all() and x.sum() == user_rows(f).sum() + users.size
    # The validation item scores highest, the test item second.
    from recflow.evaluation.ranking import held_out_pairs

    t_users, t_items = held_out_pairs(split.test, f, "test")
    table = np.zeros((f.n_users, f.n_items), np.float32)
    table[t_users, t_items] = 5.0
    table[users, items] = 10.0
    ids, masked = peers_test(table, split, f, 1, mask_history=True)
    ids2, unmasked = peers_test(table, split, f, 1, mask_history=False)
    assert ids.tolist() == ids2.tolist() == f.user_ids.tolist()
    assert masked["hr@1"].tolist() == [1.0] * f.n_users  # validation item masked
    assert unmasked["hr@1"].tolist() == [0.0] * f.n_users  # it holds rank 1 (RecBole sequential)
    assert unmasked["mrr@10" if "mrr@10" in unmasked else "mrr@1"].sum() == 0
