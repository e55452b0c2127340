"""NeuMF: learns the synthetic generator's planted tastes; its export scores like the network."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recflow.config import SyntheticConfig, TrainConfig
from recflow.data import generate_synthetic
from recflow.evaluation import evaluate_scorer, popularity_scorer
from recflow.features import build_features, split_leave_last_out
from recflow.models import check_contract, load_recommender, load_scorer
from recflow.models.neumf.export import score_numpy
from recflow.models.neumf.kind import WEIGHTS_FILE
from recflow.models.neumf.network import build_neumf
from recflow.models.zoo import get_kind
from recflow.types import Features, Split

CFG = TrainConfig(
    model="neumf", epochs=6, embedding_dim=16, batch_size=256, learning_rate=0.005, seed=1
)


@pytest.fixture(scope="module")
def data() -> tuple[Split, Features]:
    ds = generate_synthetic(SyntheticConfig())
    split = split_leave_last_out(ds.interactions)
    return split, build_features(split.train, ds.items)


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory) -> tuple[Path, Path, dict]:
    split, f = data
    root = tmp_path_factory.mktemp("neumf")
    kind = get_kind("neumf")
    summary = kind.fit(f, split, CFG, lambda _: None, root / "t")
    out = kind.export(root / "t", f, root / "m", 20, [str(f.user_ids[1])])
    return root / "t", out, summary


def test_loss_falls_and_planted_tastes_beat_popularity(data, trained) -> None:
    split, f = data
    _, saved, summary = trained
    loss = summary["history"]["loss"]
    assert loss[-1] < 0.8 * loss[0]
    neumf = evaluate_scorer(load_scorer(saved), split, f, k=10)
    pop = evaluate_scorer(popularity_scorer(f), split, f, k=10)
    assert neumf["ndcg@10"] > 1.15 * pop["ndcg@10"], (neumf, pop)


def test_numpy_reference_matches_the_keras_network(data) -> None:
    import keras

    _, f = data
    model = build_neumf(f.n_users, f.n_items, CFG)
    weights = {n: model.get_layer(n).embeddings.numpy() for n in ("gmf_user", "gmf_item")}
    weights |= {n: model.get_layer(n).embeddings.numpy() for n in ("mlp_user", "mlp_item")}
    for name in ("mlp_0", "mlp_1", "mlp_2", "out"):
        weights[f"{name}_kernel"], weights[f"{name}_bias"] = model.get_layer(name).get_weights()
    users = np.array([0, 3])
    pairs_u = np.repeat(users, f.n_items).astype(np.int32)
    pairs_i = np.tile(np.arange(f.n_items), users.size).astype(np.int32)
    direct = keras.ops.convert_to_numpy(model([pairs_u, pairs_i])).reshape(users.size, -1)
    np.testing.assert_allclose(score_numpy(weights, users), direct, rtol=1e-4, atol=1e-6)


def test_export_matches_the_weights_and_meets_the_contract(data, trained) -> None:
    _, f = data
    train_dir, saved, _ = trained
    with np.load(train_dir / WEIGHTS_FILE) as npz:
        weights = {k: npz[k] for k in npz.files}
    scores, _ = load_scorer(saved)(f.user_ids[[2, 7]])
    np.testing.assert_allclose(scores, score_numpy(weights, np.array([2, 7])), atol=1e-4)
    out = load_recommender(saved)(np.array([f.user_ids[2]]))
    seen = set(f.item_ids[f.train_item_idx[f.train_user_idx == 2]])
    assert not seen & set(out["item_ids"][0])
    assert np.all(np.diff(out["scores"][0]) <= 0)
    assert check_contract(saved, top_k=20)["k"] == 20
