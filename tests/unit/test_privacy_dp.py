"""DP-SGD for the ranking network and its RDP accountant (recflow.models.ranking_mlp.dp).

The accountant is checked against values derived here independently of its binomial sum
(the plain Gaussian's exact RDP, the order-2 closed form, numerical integration of the
Renyi divergence) and against published values from dp_accounting's own tests. The step is
checked against per-example gradients computed one example at a time.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from recflow.config import PipelineConfig, from_params, train_config
from recflow.errors import ConfigError
from recflow.models.ranking_mlp.dp import (
    DEFAULT_ORDERS,
    DPSettings,
    DPStep,
    _log_a_integer,
    dp_sgd_epsilon,
    epsilon_from_rdp,
    poisson_batches,
    rdp_sampled_gaussian,
)

# ----------------------------------------------------------------------------- accountant


@pytest.mark.parametrize("sigma", [0.7, 1.1, 4.0])
def test_without_subsampling_rdp_is_the_gaussians_alpha_over_two_sigma_squared(sigma) -> None:
    orders = [2, 3, 10, 64]
    rdp = rdp_sampled_gaussian(1.0, sigma, steps=7, orders=orders)
    np.testing.assert_allclose(rdp, [7 * a / (2 * sigma**2) for a in orders], rtol=1e-12)


@pytest.mark.parametrize(("q", "sigma"), [(0.01, 1.0), (0.2, 0.8), (0.5, 3.0)])
def test_order_two_matches_its_closed_form(q, sigma) -> None:
    # A_2 = (1-q)^2 + 2q(1-q) + q^2 e^{1/s^2} = 1 + q^2 (e^{1/s^2} - 1)
    expected = math.log1p(q * q * math.expm1(1 / sigma**2))
    assert rdp_sampled_gaussian(q, sigma, 1, [2])[0] == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize(
    ("q", "sigma", "alpha"), [(0.01, 1.0, 8), (0.1, 2.0, 20), (0.3, 1.5, 5), (0.05, 0.9, 3)]
)
def test_binomial_sum_equals_numerical_integration(q, sigma, alpha) -> None:
    # A_alpha = E_{z ~ N(0, s^2)} [((1 - q) + q exp((2z - 1) / (2 s^2)))^alpha], by quadrature.
    z = np.linspace(-40 * sigma, 40 * sigma, 400_001)
    mu0 = np.exp(-(z**2) / (2 * sigma**2)) / (sigma * math.sqrt(2 * math.pi))
    ratio = (1 - q) + q * np.exp((2 * z - 1) / (2 * sigma**2))
    integral = float(np.trapezoid(mu0 * ratio**alpha, z))
    assert _log_a_integer(q, sigma, alpha) == pytest.approx(math.log(integral), rel=1e-6)


def test_published_rdp_values_of_dp_accounting() -> None:
    # google/differential-privacy, dp_accounting rdp_privacy_accountant_test.py,
    # test_compute_rdp_poisson_sampled_gaussian: q=0.01, sigma=2.5, 50 steps (integer orders).
    rdp = rdp_sampled_gaussian(0.01, 2.5, 50, [5, 50, 100])
    np.testing.assert_allclose(rdp, [2.18075656e-03, 2.38460375e-02, 1.67416308e02], rtol=1e-4)


def test_conversion_matches_published_pure_dp_value_and_beats_the_classic_one() -> None:
    # Same file, test_compute_epsilon_delta_pure_dp: constant RDP 1.1 on orders 2..32.
    orders = list(range(2, 33))
    eps, order = epsilon_from_rdp(orders, [1.1] * len(orders), 1e-5)
    assert eps == pytest.approx(1.32783806176, abs=1e-9)
    assert order == 32
    rdp = rdp_sampled_gaussian(0.02, 1.1, 1000, DEFAULT_ORDERS)
    classic = min(r + math.log(1e5) / (a - 1) for a, r in zip(DEFAULT_ORDERS, rdp, strict=True))
    improved = epsilon_from_rdp(DEFAULT_ORDERS, rdp, 1e-5)[0]
    assert 0 < improved < classic


def test_epsilon_grows_with_steps_and_sampling_and_shrinks_with_noise() -> None:
    base = dict(q=0.01, noise_multiplier=1.1, steps=1000, delta=1e-5)
    eps = dp_sgd_epsilon(**base)  # type: ignore[arg-type]
    assert 0 < eps < math.inf
    assert dp_sgd_epsilon(**{**base, "steps": 4000}) > eps  # type: ignore[arg-type]
    assert dp_sgd_epsilon(**{**base, "q": 0.05}) > eps  # type: ignore[arg-type]
    assert dp_sgd_epsilon(**{**base, "noise_multiplier": 2.0}) < eps  # type: ignore[arg-type]
    assert dp_sgd_epsilon(**{**base, "delta": 1e-8}) > eps  # type: ignore[arg-type]


def test_accountant_edge_cases() -> None:
    assert dp_sgd_epsilon(0.0, 1.0, 100, 1e-5) == 0.0
    assert dp_sgd_epsilon(0.1, 1.0, 0, 1e-5) == 0.0
    assert dp_sgd_epsilon(0.1, 0.0, 10, 1e-5) == math.inf
    with pytest.raises(ConfigError, match="integer orders"):
        rdp_sampled_gaussian(0.1, 1.0, 1, [1.5])
    with pytest.raises(ConfigError, match="sampling probability"):
        rdp_sampled_gaussian(1.5, 1.0, 1)
    with pytest.raises(ConfigError, match="delta"):
        dp_sgd_epsilon(0.1, 1.0, 10, 0.0)


def test_poisson_batches_sample_each_row_with_probability_q() -> None:
    rng = np.random.default_rng(0)
    sizes = np.array([b.size for b in poisson_batches(2000, 0.05, 400, rng)])
    # mean of 400 Binomial(2000, 0.05) sizes: 100 +- 3 * sqrt(95 / 400)
    assert abs(sizes.mean() - 100) < 1.5
    assert abs(sizes.std() - math.sqrt(95)) < 1.5  # Binomial spread, not fixed-size batches
    batches = list(poisson_batches(50, 0.1, 20_000, rng))
    assert all(np.unique(b).size == b.size for b in batches)
    hits = np.bincount(np.concatenate(batches), minlength=50) / 20_000
    # every row at rate q: 5 standard deviations of a rate over 20,000 draws is 0.0106
    assert np.all(np.abs(hits - 0.1) < 0.0106)


# ----------------------------------------------------------------------------- DP-SGD step


@pytest.fixture(scope="module")
def features():
    from recflow.config import SyntheticConfig
    from recflow.data import generate_synthetic
    from recflow.features import build_features, split_leave_last_out

    ds = generate_synthetic(SyntheticConfig(n_users=40, n_items=30, n_genres=4, seed=3))
    split = split_leave_last_out(ds.interactions)
    return build_features(split.train, ds.items)


def _sgd_model(features):
    import keras

    from recflow.models.ranking_mlp.network import build_ranking_mlp

    keras.utils.set_random_seed(1)
    model = build_ranking_mlp(features, train_config(embedding_dim=8))
    # Plain SGD at rate 1: the weight change is minus the privatised gradient itself.
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=1.0), loss="binary_crossentropy")
    return model


def _batch(features, size: int, seed: int):
    rng = np.random.default_rng(seed)
    users = rng.integers(0, features.n_users, size).astype(np.int32)
    users[:3] = users[0]  # repeated rows of one user must stay separate examples
    items = rng.integers(0, features.n_items, size).astype(np.int32)
    labels = rng.integers(0, 2, size).astype(np.float32)
    return users, items, labels


def _run(model, settings, users, items, labels, expected_batch: float, seed=(1, 2)):
    import tensorflow as tf

    before = [np.array(v) for v in model.trainable_variables]
    DPStep(model, settings, expected_batch)(
        tf.constant(users), tf.constant(items), tf.constant(labels), tf.constant(seed, tf.int32)
    )
    after = [np.array(v) for v in model.trainable_variables]
    for v, w in zip(model.trainable_variables, before, strict=True):
        v.assign(w)
    return [b - a for a, b in zip(after, before, strict=True)]  # = privatised gradient


def test_step_clips_each_example_then_averages(features) -> None:
    import keras
    import tensorflow as tf

    model = _sgd_model(features)
    users, items, labels = _batch(features, 24, seed=0)
    variables = model.trainable_variables
    per_example = []
    for b in range(users.size):  # one tape per example: the reference
        with tf.GradientTape() as tape:
            p = model([users[b : b + 1], items[b : b + 1]], training=True)
            loss = keras.losses.binary_crossentropy(labels[b : b + 1, None], p)[0]
        per_example.append(
            [tf.convert_to_tensor(g).numpy() for g in tape.gradient(loss, variables)]
        )
    norms = np.array([math.sqrt(sum(float(np.sum(g * g)) for g in gs)) for gs in per_example])
    clip = float(np.median(norms))  # half the examples are clipped, half are not
    expected_batch = 20.0
    reference = [
        sum(gs[k] * min(1.0, clip / n) for gs, n in zip(per_example, norms, strict=True))
        / expected_batch
        for k in range(len(variables))
    ]
    unclipped = [sum(gs[k] for gs in per_example) / expected_batch for k in range(len(variables))]

    got = _run(model, DPSettings(clip, 0.0, 1e-5), users, items, labels, expected_batch)
    for g, r in zip(got, reference, strict=True):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-7)
    assert not all(
        np.allclose(g, u, rtol=1e-3, atol=1e-7) for g, u in zip(got, unclipped, strict=True)
    ), "the clip must change the gradient when half the examples exceed it"


def test_step_adds_gaussian_noise_of_std_sigma_c_over_batch_everywhere(features) -> None:
    model = _sgd_model(features)
    users, items, labels = _batch(features, 16, seed=1)
    clip, sigma, expected_batch = 0.5, 2.0, 8.0
    clean = _run(model, DPSettings(clip, 0.0, 1e-5), users, items, labels, expected_batch)
    noisy = _run(model, DPSettings(clip, sigma, 1e-5), users, items, labels, expected_batch)
    noise = np.concatenate([(n - c).ravel() for n, c in zip(noisy, clean, strict=True)])
    target = sigma * clip / expected_batch
    assert noise.size > 3000
    assert abs(noise.std() / target - 1) < 0.05
    assert abs(noise.mean()) < 4 * target / math.sqrt(noise.size)
    # every embedding row moves, also rows of users and items not in the batch
    unused = np.setdiff1d(np.arange(features.n_users), users)
    assert unused.size > 0 and np.all(np.abs(noisy[0][unused]) > 0)


def test_an_empty_poisson_batch_still_takes_a_noise_step(features) -> None:
    empty = np.zeros(0, np.int32)
    model = _sgd_model(features)
    moved = _run(model, DPSettings(1.0, 1.0, 1e-5), empty, empty, empty.astype(np.float32), 4.0)
    assert all(np.all(m != 0) for m in moved)


# ----------------------------------------------------------------------------- wiring


def test_dp_training_reports_the_accountants_epsilon_per_epoch(features) -> None:
    from recflow.models.pointwise import unique_positives
    from recflow.models.ranking_mlp.training import train_ranking_mlp

    cfg = train_config(epochs=2, batch_size=64, embedding_dim=8, dp_enabled=True)
    lines: list[str] = []
    trained = train_ranking_mlp(features, cfg, progress=lines.append)
    rows = unique_positives(features)[0].size * (1 + cfg.negatives_per_positive)
    q, steps = cfg.batch_size / rows, round(rows / cfg.batch_size)
    expected = [dp_sgd_epsilon(q, 1.1, e * steps, 1 / rows) for e in (1, 2)]
    assert trained.history["dp_epsilon"] == pytest.approx(expected, rel=1e-9)
    assert expected[0] < expected[1] < math.inf
    assert all(np.isfinite(trained.history["loss"]))
    assert any("DP-SGD: clip 1.0, noise multiplier 1.1" in line for line in lines)
    assert (
        "dp_epsilon"
        not in train_ranking_mlp(
            features, train_config(cfg, dp_enabled=False, epochs=1), progress=lines.append
        ).history
    )


def test_dp_params_reach_the_config_and_other_models_are_refused() -> None:
    cfg = from_params(
        {"dp_enabled": True, "dp_l2_clip": 0.5, "dp_noise_multiplier": 2, "dp_delta": 1e-6}
    )
    assert (cfg.train.dp.enabled, cfg.train.dp.l2_clip) == (True, 0.5)
    assert (cfg.train.dp.noise_multiplier, cfg.train.dp.delta) == (2.0, 1e-6)
    assert PipelineConfig().train.dp.enabled is False
    with pytest.raises(ConfigError, match="ranking_mlp"):
        from_params({"dp_enabled": True, "model": "ease"})
    with pytest.raises(ConfigError, match="dp_noise_multiplier"):
        from_params({"dp_enabled": True, "dp_noise_multiplier": 0})
    with pytest.raises(ConfigError, match="dp_l2_clip"):
        DPSettings(0.0, 1.0, 1e-5)


def test_train_stage_logs_the_final_epsilon_to_the_tracking_run(tmp_path) -> None:
    from recflow.config import SyntheticConfig
    from recflow.data import generate_synthetic
    from recflow.features import build_features, save_features, save_split, split_leave_last_out
    from recflow.pipeline import train as stage
    from recflow.pipeline.context import RunContext, tracking_run
    from recflow.registry.memory import InMemoryRegistry

    ds = generate_synthetic(SyntheticConfig(n_users=40, n_items=30, n_genres=4, seed=3))
    split = split_leave_last_out(ds.interactions)
    cfg = from_params(
        {"work_dir": str(tmp_path), "epochs": 1, "batch_size": 64, "dp_enabled": True}
    )
    ctx = RunContext.create(cfg, "recsys_training", "dp-run")
    save_split(split, ctx.split_dir)
    save_features(build_features(split.train, ds.items), ctx.features_dir)
    registry = InMemoryRegistry(tmp_path / "registry")
    stage.run(cfg, ctx, registry)
    history = ctx.read_json("train.json")["history"]
    metrics = registry.get_run(tracking_run(cfg, ctx, registry)).metrics
    assert len(history["dp_epsilon"]) == 1 and 0 < history["dp_epsilon"][0] < math.inf
    assert metrics["train.dp_epsilon"] == pytest.approx(history["dp_epsilon"][0])
