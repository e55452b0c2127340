"""Mult-VAE: learns the synthetic generator's planted tastes; its export scores like the network."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recflow.config import SyntheticConfig, train_config
from recflow.data import generate_synthetic
from recflow.errors import ConfigError, ContractError
from recflow.evaluation import evaluate_scorer, popularity_scorer
from recflow.features import build_features, split_leave_last_out
from recflow.models import check_contract, load_recommender, load_scorer
from recflow.models.multvae.export import member_logits, score_numpy, standardise_rows
from recflow.models.multvae.kind import WEIGHTS_FILE
from recflow.models.multvae.network import build_multvae
from recflow.models.multvae.training import beta_schedule, user_rows
from recflow.models.zoo import get_kind
from recflow.types import Features, Split

# Small network and few epochs: the synthetic catalogue has 250 items and 400 users.
CFG = train_config(
    model="multvae",
    multvae_epochs=40,
    multvae_batch_size=100,
    multvae_hidden=64,
    multvae_latent=16,
    multvae_learning_rate=0.003,
    multvae_anneal_epochs=20,
    multvae_members=2,
    seed=1,
)


@pytest.fixture(scope="module")
def data() -> tuple[Split, Features]:
    ds = generate_synthetic(SyntheticConfig())
    split = split_leave_last_out(ds.interactions)
    return split, build_features(split.train, ds.items)


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory) -> tuple[Path, Path, dict]:
    split, f = data
    root = tmp_path_factory.mktemp("multvae")
    kind = get_kind("multvae")
    summary = kind.fit(f, split, CFG, lambda _: None, root / "t")
    out = kind.export(root / "t", f, root / "m", 20, [str(f.user_ids[1])])
    return root / "t", out, summary


def test_loss_falls_and_planted_tastes_beat_popularity(data, trained) -> None:
    split, f = data
    _, saved, summary = trained
    loss = summary["history"]["loss"]
    assert len(loss) == CFG.multvae.epochs
    assert loss[-1] < 0.95 * loss[0]
    # The KL weight the network read rose from ~0 and sits at the cap after annealing.
    beta = summary["history"]["beta"]
    assert beta[0] < 0.1 * CFG.multvae.beta_max
    assert beta[-1] == pytest.approx(CFG.multvae.beta_max)
    vae = evaluate_scorer(load_scorer(saved), split, f, k=10)
    pop = evaluate_scorer(popularity_scorer(f), split, f, k=10)
    assert vae["ndcg@10"] > 1.15 * pop["ndcg@10"], (vae, pop)


def test_kl_weight_rises_linearly_to_the_cap_then_stays() -> None:
    cfg = train_config(multvae_beta_max=0.2, multvae_anneal_epochs=10)
    assert beta_schedule(0, 0, 4, cfg) == 0.0
    assert beta_schedule(5, 0, 4, cfg) == pytest.approx(0.1)
    assert beta_schedule(9, 3, 4, cfg) == pytest.approx(0.2 * 39 / 40)
    assert beta_schedule(30, 2, 4, cfg) == pytest.approx(0.2)
    no_anneal = train_config(multvae_beta_max=0.3, multvae_anneal_epochs=0)
    assert beta_schedule(0, 0, 4, no_anneal) == pytest.approx(0.3)


def test_numpy_reference_matches_the_keras_network_at_inference(data) -> None:
    import keras

    _, f = data
    model, _ = build_multvae(f.n_items, CFG)
    x = user_rows(f)[[0, 3, 8]]
    weights = {}
    for name in ("enc_hidden", "enc_out", "dec_hidden", "dec_out"):
        weights[f"{name}_kernel"], weights[f"{name}_bias"] = model.get_layer(name).get_weights()
    # training=False: no input dropout and z = mu, the deterministic path serving uses.
    direct = keras.ops.convert_to_numpy(model(x, training=False))
    assert direct.shape == (3, CFG.multvae.members, f.n_items)
    np.testing.assert_allclose(member_logits(weights, x), direct, rtol=1e-4, atol=1e-5)
    # Served: the members' standardised logits averaged.
    expected = standardise_rows(direct).mean(axis=1)
    np.testing.assert_allclose(score_numpy(weights, x), expected, rtol=1e-4, atol=1e-5)


def test_members_start_apart_and_standardised_rows_are_unit_scale(data) -> None:
    _, f = data
    model, _ = build_multvae(f.n_items, CFG)
    kernel = model.get_layer("enc_hidden").get_weights()[0]
    assert kernel.shape == (CFG.multvae.members, f.n_items, CFG.multvae.hidden)
    assert not np.allclose(kernel[0], kernel[1])  # each member its own initialisation
    rows = standardise_rows(np.array([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]]))
    np.testing.assert_allclose(rows[0], [-1.2247449, 0.0, 1.2247449], rtol=1e-5)
    np.testing.assert_allclose(rows[1], [0.0, 0.0, 0.0])  # a constant row stays finite


def test_export_matches_the_weights_and_meets_the_contract(data, trained) -> None:
    _, f = data
    train_dir, saved, _ = trained
    with np.load(train_dir / WEIGHTS_FILE) as npz:
        weights = {k: npz[k] for k in npz.files}
    scores, catalogue = load_scorer(saved)(f.user_ids[[2, 7]])
    np.testing.assert_allclose(scores, score_numpy(weights, user_rows(f)[[2, 7]]), atol=1e-4)
    assert list(catalogue) == list(f.item_ids)
    out = load_recommender(saved)(np.array([f.user_ids[2], "never-seen-user"]))
    seen = set(f.item_ids[f.train_item_idx[f.train_user_idx == 2]])
    assert not seen & set(out["item_ids"][0])
    assert np.all(np.diff(out["scores"][0]) <= 0)
    # Unknown users get the most popular items (the cold-start rule of every score export).
    assert out["item_ids"][1][0] == f.item_ids[np.argmax(f.item_popularity)]
    assert check_contract(saved, top_k=20)["k"] == 20


def test_bad_settings_and_missing_weights_fail_clearly(data, tmp_path) -> None:
    split, f = data
    kind = get_kind("multvae")
    with pytest.raises(ConfigError, match="multvae_dropout: expected < 1, found 1.0"):
        train_config(model="multvae", multvae_dropout=1.0)
    with pytest.raises(ConfigError, match="multvae_members: expected >= 1, found 0"):
        train_config(multvae_members=0)
    with pytest.raises(ContractError, match=WEIGHTS_FILE):
        kind.export(tmp_path, f, tmp_path / "m", 5, [])


def test_snapshots_hold_the_weights_after_those_epochs(data) -> None:
    from recflow.models.multvae.training import train_multvae

    _, f = data
    cfg = train_config(model="multvae", multvae_epochs=3, multvae_members=2, seed=3)
    snaps: dict[int, dict[str, np.ndarray]] = {1: {}, 3: {}}
    final, history = train_multvae(f, cfg, lambda line: None, snapshots=snaps)
    assert len(history["loss"]) == 3
    for name, v in final.items():
        np.testing.assert_array_equal(snaps[3][name], v)  # after the last epoch = the result
    assert not np.array_equal(snaps[1]["dec_out_kernel"], final["dec_out_kernel"])
